"""Cell events of a draw, and reviews through the API (confirm / override with a reason)."""

from __future__ import annotations

import pytest

from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    evs = [factories.CellEventFactory(upload=upload, index=i, call=c, ctc_probability=p,
                                      category="ctc" if c == "ctc" else "leukocyte",
                                      category_probabilities={"ctc": p, "leukocyte": 1 - p})
           for i, (c, p) in enumerate([("ctc", 0.95), ("non_ctc", 0.1), ("non_ctc", 0.45)])]
    recompute_summary(draw)
    return evs


def test_draw_events_list_every_event_with_its_source(as_alice, draw, events):
    body = as_alice.get(f"/api/draws/{draw.pk}/events/?page_size=1000").json()
    assert body["count"] == 3
    first = body["results"][0]
    for key in ["id", "source", "index", "x", "y", "call", "ctc_probability", "category", "category_probabilities",
                "reviewed_call"]:
        assert key in first
    assert [e["source"] for e in body["results"]] == ["event000.tif", "event001.tif", "event002.tif"]
    assert first["call"] == "ctc" and first["reviewed_call"] == ""
    assert "thumbnail" not in first and first["thumbnail_url"].endswith(f"/api/events/{first['id']}/thumbnail/")


def test_draw_events_filters_and_large_pages(as_alice, draw, events, django_assert_max_num_queries):
    assert as_alice.get(f"/api/draws/{draw.pk}/events/?call=ctc").json()["count"] == 1
    assert as_alice.get(f"/api/draws/{draw.pk}/events/?source=event001.tif").json()["count"] == 1
    body = as_alice.get(f"/api/draws/{draw.pk}/events/?page_size=5000").json()
    assert len(body["results"]) == 3  # capped at 1000, all fit
    with django_assert_max_num_queries(10):
        as_alice.get(f"/api/draws/{draw.pk}/events/")


def test_event_detail_has_the_explanation(as_alice, events):
    body = as_alice.get(f"/api/events/{events[0].pk}/").json()
    assert "explanation" in body and body["final_call"] == "ctc"


def test_a_reviewer_confirms_a_call(as_bob, draw, events):
    r = as_bob.post(f"/api/events/{events[0].pk}/review/", {"call": "ctc"}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["reviewed_call"] == "ctc" and r.json()["reviewed_by"] == "bob"


def test_an_override_needs_a_reason(as_bob, draw, events):
    r = as_bob.post(f"/api/events/{events[0].pk}/review/", {"call": "non_ctc"}, format="json")
    assert r.status_code == 400
    assert r.json() == {"reason": ["Give a reason when you override the model's call."]}
    r = as_bob.post(f"/api/events/{events[0].pk}/review/", {"call": "maybe"}, format="json")
    assert r.status_code == 400 and "call" in r.json()


def test_reviews_make_the_summary_final_then_amended(as_bob, as_alice, draw, events):
    for e in events:
        assert as_bob.post(f"/api/events/{e.pk}/review/", {"call": e.call}, format="json").status_code == 200
    assert as_alice.get(f"/api/draws/{draw.pk}/").json()["summary"]["status"] == "final"
    r = as_bob.post(f"/api/events/{events[2].pk}/review/", {"call": "ctc", "reason": "CK+ on second look",
                                                                "change": True}, format="json")
    assert r.json()["review_reason"] == "CK+ on second look"
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert (body["ctc_count"], body["status"]) == (2, "amended")
    reviewed = as_alice.get(f"/api/events/?draw={draw.pk}&reviewed=true").json()
    assert reviewed["count"] == 3


def test_a_second_review_of_a_reviewed_cell_is_a_409_and_changes_nothing(as_bob, client_for, team, draw, events):
    from patients.models import AuditEvent, CellEvent, Role

    assert as_bob.post(f"/api/events/{events[1].pk}/review/", {"call": "non_ctc"}, format="json").status_code == 200
    olga = factories.UserFactory(username="olga")
    factories.MembershipFactory(user=olga, team=team, role=Role.ONCOLOGIST)
    as_olga = client_for(olga)
    # A stale page: olga overrides without knowing bob reviewed the cell already.
    r = as_olga.post(f"/api/events/{events[1].pk}/review/", {"call": "ctc", "reason": "CK+"}, format="json")
    assert r.status_code == 409, r.json()
    assert "Already reviewed by bob" in r.json()["detail"] and r.json()["reviewed_by"] == "bob"
    e = CellEvent.objects.get(pk=events[1].pk)
    assert (e.reviewed_call, e.reviewed_by.username, e.review_reason) == ("non_ctc", "bob", "")
    assert e.history.count() == 2  # create + bob's review
    # An explicit change needs a reason ...
    r = as_olga.post(f"/api/events/{events[1].pk}/review/", {"call": "ctc", "change": True}, format="json")
    assert r.status_code == 400 and "reason" in r.json()
    # ... and is audited with the old and the new review.
    r = as_olga.post(f"/api/events/{events[1].pk}/review/", {"call": "ctc", "change": True, "reason": "CK+ faint"},
                     format="json")
    assert r.status_code == 200 and r.json()["reviewed_by"] == "olga"
    audit = AuditEvent.objects.get(action="review", object_id=str(events[1].pk), detail__change=True)
    assert audit.user == olga and audit.detail["old"]["by"] == "bob" and audit.detail["old"]["call"] == "non_ctc"
    assert audit.detail["new"]["call"] == "ctc" and audit.detail["reason"] == "CK+ faint"
    assert as_olga.get(f"/api/draws/{draw.pk}/").json()["ctc_count"] == 2


def test_a_member_without_review_rights_gets_403(client_for, team, draw, events):
    from patients.models import Role

    m = factories.UserFactory(username="nurse")
    factories.MembershipFactory(user=m, team=team, role=Role.MEMBER)
    r = client_for(m).post(f"/api/events/{events[0].pk}/review/", {"call": "ctc"}, format="json")
    assert r.status_code == 403


def test_summaries_endpoint(as_alice, draw, events):
    body = as_alice.get(f"/api/summaries/?patient={draw.patient_id}").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert row["draw"] == draw.pk and row["ctc_count"] == 1 and row["unfavorable"] is False
    assert as_alice.get(f"/api/summaries/{draw.pk}/").json()["events_analysed"] == 3


def test_model_registry_promote_needs_manage_models(as_alice, client_for, team):
    from patients.models import ClassifierVersion, Role

    v1 = ClassifierVersion.objects.create(version="v1", is_active=True)
    v2 = ClassifierVersion.objects.create(version="v2")
    assert {m["version"] for m in as_alice.get("/api/models/").json()["results"]} == {"v1", "v2"}
    assert as_alice.post(f"/api/models/{v2.pk}/promote/").status_code == 403
    admin = factories.UserFactory(username="admin1")
    factories.MembershipFactory(user=admin, team=team, role=Role.ADMIN)
    r = client_for(admin).post(f"/api/models/{v2.pk}/promote/")
    assert r.status_code == 200 and r.json()["is_active"] is True
    v1.refresh_from_db()
    assert v1.is_active is False
    r = client_for(admin).post(f"/api/models/{v2.pk}/retire/")
    assert r.json()["retired"] is True and r.json()["is_active"] is False
    # Issue 12.1: the API's promotion and retirement are audited as the Models page's are
    # (one owner: patients.registry); the refused promotion above left no row.
    from patients.models import AuditEvent

    rows = AuditEvent.objects.filter(object_type="ClassifierVersion", object_id=str(v2.pk)).order_by("pk")
    assert [(e.user.username, e.action, e.detail["action"]) for e in rows] == [
        ("admin1", "update", "promote"), ("admin1", "update", "retire")]


def test_event_thumbnail_and_heatmap_are_pngs(as_alice, as_charlie, draw):
    import numpy as np

    from patients.imaging import decode_strip, encode_grey, encode_strip

    upload = factories.ImagingUploadFactory(draw=draw, result_channels=["DAPI", "CK", "CD45"])
    strip = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    event = factories.CellEventFactory(upload=upload, thumbnail=encode_strip(strip),
                                       heatmap=encode_grey(np.zeros((8, 8), np.uint8)))
    r = as_alice.get(f"/api/events/{event.pk}/thumbnail/")
    assert r.status_code == 200 and r["Content-Type"] == "image/png" and r["X-Channels"] == "DAPI,CK,CD45"
    assert (decode_strip(r.content, 3) == strip).all()
    assert as_alice.get(f"/api/events/{event.pk}/heatmap/").content.startswith(b"\x89PNG")
    assert as_charlie.get(f"/api/events/{event.pk}/thumbnail/").status_code == 404
    bare = factories.CellEventFactory(upload=upload)
    assert as_alice.get(f"/api/events/{bare.pk}/heatmap/").status_code == 404


def test_promoting_a_version_whose_weights_cannot_be_used_is_refused_and_changes_nothing(client_for, team,
                                                                                          tmp_path):
    """A registered path that is gone, a file that is not a weights bundle, or one made for other
    preprocessing: 400 naming why, the active version stays (every upload after it would fail)."""
    from patients.models import AuditEvent, ClassifierVersion, Role

    v1 = ClassifierVersion.objects.create(version="v1", is_active=True)
    text = tmp_path / "lab.pt"
    text.write_text("not weights\n")
    admin = factories.UserFactory(username="admin2")
    factories.MembershipFactory(user=admin, team=team, role=Role.ADMIN)
    # a real bundle whose metadata says it was made for other preprocessing (64 px crops, the code makes 48)
    import json
    import shutil

    from classifier.bundle_file import metadata_path
    from classifier.weights import DEFAULT_WEIGHTS

    other = tmp_path / "other.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, other)
    meta = json.loads(metadata_path(DEFAULT_WEIGHTS).read_text())
    meta["preprocessing"]["crop_px"] = 64
    metadata_path(other).write_text(json.dumps(meta))
    cases = ((str(text), "not a weights bundle"), (str(tmp_path / "gone.pt"), "not found"),
             (str(other), "preprocessing contract mismatch (crop_px: weights 64 vs code 48)"))
    for k, (path, why) in enumerate(cases):
        bad = ClassifierVersion.objects.create(version=f"bad-{k}", weights_path=path)
        r = client_for(admin).post(f"/api/models/{bad.pk}/promote/")
        assert r.status_code == 400 and why in r.json()["weights_path"][0], r.content
        bad.refresh_from_db()
        v1.refresh_from_db()
        assert not bad.is_active and v1.is_active
        assert not AuditEvent.objects.filter(object_type="ClassifierVersion", object_id=str(bad.pk)).exists()
