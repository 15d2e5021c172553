"""Review at the speed of a CellSearch reviewer (issue 13): the server side of the grid, and the
defects a reviewer met (point 6), each with the behaviour that fixes it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from patients.models import AuditEvent, CellEvent, ImagingUpload, SummaryStatus, UploadStatus
from patients.review import confirm_remaining, review_event, review_rank
from tests import factories
from tests.api.synthetic import CHANNELS, event_tiff
from tests.dashboard.builders import add_cells, draw_on

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _cells_at(draw, probs: list[float], threshold: float = 0.2) -> list[CellEvent]:
    """An analysed upload of ``draw`` with one cell per probability, called at ``threshold`` as the pipeline does."""
    upload = factories.ImagingUploadFactory(draw=draw, channels=CHANNELS, result_channels=CHANNELS,
                                            status="done", progress=100, model_version="test-model")
    cells = [factories.CellEventFactory(
        upload=upload, draw=draw, index=i, ctc_probability=p, call="ctc" if p >= threshold else "non_ctc",
        margin=abs(p - threshold), review_rank=review_rank(p, threshold)) for i, p in enumerate(probs)]
    from patients.summary import recompute_summary

    recompute_summary(draw)
    return cells


# --- point 6: "most uncertain first" ------------------------------------------------------------


def test_most_uncertain_first_puts_counted_cells_near_the_threshold_before_sure_negatives(bob, draw):
    cells = _cells_at(draw, [0.01, 0.35, 0.45, 0.50, 0.99, 0.02])
    by_p = {c.ctc_probability: c.pk for c in cells}
    as_bob = _client(bob)
    order = [c.ctc_probability for c in as_bob.get(f"/draws/{draw.pk}/review/").context["cells"]]
    # On |p - t| with t = 0.2, P 0.01 (0.19 away) came before 0.45 and 0.50 (0.25, 0.30 away).
    assert order.index(0.01) > order.index(0.50) and order.index(0.02) > order.index(0.45)
    assert order[:3] == [0.35, 0.45, 0.50]
    queue = [c.pk for c in as_bob.get("/review/").context["cells"]]
    assert queue.index(by_p[0.50]) < queue.index(by_p[0.01])
    gallery = [c.pk for c in as_bob.get(f"/draws/{draw.pk}/?sort=uncertainty").context["cells"]]
    assert gallery.index(by_p[0.50]) < gallery.index(by_p[0.01])


# --- point 6: a reviewer corrects a cell's category -------------------------------------------------


def test_a_reviewer_corrects_the_category_and_it_is_kept_as_the_training_label(bob, draw):
    (cell,) = _cells_at(draw, [0.9])
    cell.category = "apoptotic_ctc"
    cell.save(update_fields=["category"])
    r = _client(bob).post(f"/events/{cell.pk}/review/", {"call": "non_ctc", "reason_code": "cd45_positive",
                                                         "category": "leukocyte"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["cell"]["category"] == "leukocyte" and body["cell"]["category_label"] == "Leukocyte"
    cell.refresh_from_db()
    assert (cell.reviewed_call, cell.reviewed_category, cell.final_category) == ("non_ctc", "leukocyte", "leukocyte")
    assert cell.category == "apoptotic_ctc"  # the model's own category is kept beside it
    assert cell.review_reason == "CD45 positive: leukocyte"
    assert cell.history.first().reviewed_category == "leukocyte"
    with pytest.raises(Exception, match="Unknown category"):
        review_event(cell, bob, "ctc", "x", change=True, category="tumour")


# --- point 6: duplicates refused unless confirmed, on every path -----------------------------------


def test_the_same_files_again_are_refused_unless_the_user_confirms_dashboard_and_api(alice, draw):
    as_alice = _client(alice)

    def files(*names_seeds):
        return [SimpleUploadedFile(n, event_tiff("ctc", s), content_type="image/tiff") for n, s in names_seeds]

    url = f"/draws/{draw.pk}/uploads/"
    assert as_alice.post(url, {"channels": CHANNELS, "kind": "events", "files": files(("a.tif", 1), ("b.tif", 2))},
                         HTTP_ACCEPT="application/json").status_code == 201
    r = as_alice.post(url, {"channels": CHANNELS, "kind": "events", "files": files(("a2.tif", 1), ("c.tif", 3))})
    assert r.status_code == 409 and r.json()["duplicate"] is True
    assert "'a2.tif' (= 'a.tif'" in r.json()["error"] and "counts their cells twice" in r.json()["error"]
    assert ImagingUpload.objects.filter(draw=draw).count() == 1  # nothing stored
    r = as_alice.post(url, {"channels": CHANNELS, "kind": "events", "confirm_duplicates": "1",
                            "files": files(("a2.tif", 1), ("c.tif", 3))})
    assert r.status_code == 201
    # The API: the same refusal, and ``allow_duplicates`` to go ahead.
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(alice)
    r = api.post(f"/api/draws/{draw.pk}/uploads/", {"file": files(("again.tif", 2)), "channels": CHANNELS},
                 format="multipart")
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    assert ImagingUpload.objects.filter(draw=draw).count() == 2
    r = api.post(f"/api/draws/{draw.pk}/uploads/", {"file": files(("again.tif", 2)), "channels": CHANNELS,
                                                    "allow_duplicates": "true"}, format="multipart")
    assert r.status_code == 202
    # A withdrawn upload's files no longer count as already there.
    ImagingUpload.objects.filter(draw=draw).update(status="withdrawn")
    assert as_alice.post(url, {"channels": CHANNELS, "kind": "events", "files": files(("a.tif", 1))}).status_code == 201


# --- point 6: queue filters and the per-draw queue --------------------------------------------------


def test_queue_filters_by_patient_draw_and_clinic_date_and_lists_draws_by_clinic_date(bob, team):
    today = dt.date(2026, 6, 1)
    p1 = factories.PatientFactory(care_team=team, study_id="PT-A")
    p2 = factories.PatientFactory(care_team=team, study_id="PT-B")
    d_old = draw_on(p1, today - dt.timedelta(days=30), "baseline")
    d_new = draw_on(p2, today, "C2D1")
    d_mid = draw_on(p2, today - dt.timedelta(days=10), "baseline")
    for i, d in enumerate([d_old, d_new, d_mid]):
        add_cells(d, 1, 3, seed=i, with_images=False)
    as_bob = _client(bob)
    body = as_bob.get("/review/")
    queue = [s.draw_id for s in body.context["draw_queue"]]
    assert queue == [d_old.pk, d_mid.pk, d_new.pk]  # oldest clinic date first
    assert f'href="/draws/{d_old.pk}/review/"' in body.content.decode()
    only_b = as_bob.get("/review/", {"patient": "PT-B"}).context
    assert {c.draw_id for c in only_b["cells"]} == {d_new.pk, d_mid.pk} and only_b["pending_total"] == 8
    dated = as_bob.get("/review/", {"from": str(today - dt.timedelta(days=15)),
                                    "to": str(today - dt.timedelta(days=5))})
    assert {c.draw_id for c in dated.context["cells"]} == {d_mid.pk}
    assert {c.draw_id for c in as_bob.get("/review/", {"draw": d_old.pk}).context["cells"]} == {d_old.pk}


# --- point 1: "confirm the remaining calls", one audited action ---------------------------------


def test_confirm_remaining_covers_exactly_the_cells_shown_is_audited_and_finalises(bob, charlie, draw):
    cells = _cells_at(draw, [0.3, 0.1, 0.9, 0.05])
    as_bob = _client(bob)
    page = as_bob.get(f"/draws/{draw.pk}/review/")
    shown = page.context["remaining"]
    assert sorted(shown) == sorted(c.pk for c in cells)
    r = as_bob.post(f"/events/{cells[0].pk}/review/", {"call": "non_ctc", "reason_code": "ck_weak"},
                    HTTP_ACCEPT="application/json")
    assert r.json()["summary"]["reviewed"] == 1
    # A cell that arrives after the page was drawn is not confirmed unseen.
    (late,) = _cells_at(draw, [0.5])
    assert as_charlie_404(charlie, draw)
    r = as_bob.post(f"/draws/{draw.pk}/review/confirm/", {"cells": ",".join(map(str, shown))},
                    HTTP_ACCEPT="application/json")
    assert r.status_code == 200
    assert sorted(r.json()["confirmed"]) == sorted(c.pk for c in cells[1:])
    late.refresh_from_db()
    assert late.reviewed_call == ""
    audit = AuditEvent.objects.get(object_type="BloodDraw", object_id=str(draw.pk), action="review")
    assert audit.detail["bulk_confirm"] and sorted(audit.detail["cells"]) == sorted(c.pk for c in cells[1:])
    assert audit.user == bob
    assert all(c.reviewed_by == bob and c.reviewed_call == c.call for c in CellEvent.objects.filter(
        pk__in=[c.pk for c in cells[1:]]))
    assert confirm_remaining(draw, bob) == [late.pk]
    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.FINAL


def as_charlie_404(charlie, draw) -> bool:
    """Another team's oncologist: every review URL of the draw is a 404 (scoped, not 403)."""
    c = _client(charlie)
    cell = CellEvent.objects.filter(draw=draw).first()
    return (c.get(f"/draws/{draw.pk}/review/").status_code == 404
            and c.post(f"/draws/{draw.pk}/review/confirm/", {"cells": str(cell.pk)}).status_code == 404
            and c.post(f"/events/{cell.pk}/review/", {"call": "ctc"}).status_code == 404)


# --- point 6: the override's message where the reviewer is ----------------------------------------


def test_an_override_without_a_reason_is_refused_next_to_the_cell(bob, draw):
    cells = _cells_at(draw, [0.3, 0.1])
    as_bob = _client(bob)
    r = as_bob.post(f"/events/{cells[1].pk}/review/", {"call": "ctc"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and "Give a reason" in r.json()["error"]
    nxt = f"/draws/{draw.pk}/review/"
    r = as_bob.post(f"/events/{cells[1].pk}/review/", {"call": "ctc", "next": nxt})
    assert r.status_code == 302 and r["Location"] == f"{nxt}#cell-{cells[1].pk}"
    body = as_bob.get(nxt).content.decode()
    tile = body[body.index(f'id="cell-{cells[1].pk}"'):]
    tile = tile[:tile.index("</li>")]
    assert 'data-testid="tile-error"' in tile and "Give a reason" in tile


# --- point 6: the draw form, the channel default, the review button, plotly, labels --------------


def test_a_refused_draw_form_keeps_what_was_typed(alice, patient):
    as_alice = _client(alice)
    r = as_alice.post(f"/patients/{patient.pk}/draws/new/", {"timepoint": "C4D1", "volume_ml": "7.5",
                                                             "drawn_at": "not a date"}, follow=True)
    form = r.context["draw_form"]
    assert form.is_bound and form["timepoint"].value() == "C4D1" and "drawn_at" in form.errors
    assert 'value="C4D1"' in r.content.decode()
    # The next visit shows a blank form again.
    assert not as_alice.get(f"/patients/{patient.pk}/").context["draw_form"].is_bound


def test_new_draws_default_to_the_four_channels_of_the_hint_and_demo(alice, draw):
    r = _client(alice).get(f"/draws/{draw.pk}/")
    assert r.context["upload_form"]["channels"].value() == "DAPI,CK,AF,CD45"
    from patients.demo import CHANNELS as DEMO

    assert (DEMO if isinstance(DEMO, str) else ",".join(DEMO)) == "DAPI,CK,AF,CD45"


def test_the_channel_default_follows_the_patients_lab_and_never_a_withdrawn_upload(alice, patient, draw):
    """The partner lab's instrument has no AF: a new draw of its patient proposes the three channels its
    earlier draws were uploaded with; a withdrawn upload (often the wrong order) is not proposed again."""
    factories.ImagingUploadFactory(draw=draw, channels=["DAPI", "CK", "CD45"])
    new_draw = factories.BloodDrawFactory(patient=patient, timepoint="C2D1")
    as_alice = _client(alice)
    assert as_alice.get(f"/draws/{new_draw.pk}/").context["upload_form"]["channels"].value() == "DAPI,CK,CD45"
    factories.ImagingUploadFactory(draw=new_draw, channels=["CD45", "CK", "DAPI"], status=UploadStatus.WITHDRAWN)
    assert as_alice.get(f"/draws/{new_draw.pk}/").context["upload_form"]["channels"].value() == "DAPI,CK,CD45"
    other = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=patient.care_team))
    assert as_alice.get(f"/draws/{other.pk}/").context["upload_form"]["channels"].value() == "DAPI,CK,AF,CD45"


def test_review_button_leaves_a_final_draw_and_review_pages_skip_plotly(bob, draw):
    cells = _cells_at(draw, [0.3, 0.1])
    as_bob = _client(bob)
    body = as_bob.get(f"/draws/{draw.pk}/").content.decode()
    assert 'data-testid="review-draw"' in body and f"/draws/{draw.pk}/review/" in body
    for url in ["/review/", f"/draws/{draw.pk}/review/"]:
        page = as_bob.get(url).content.decode()
        assert "assets/plotly-" not in page and "dashboard/app.js" in page and "dashboard/review.js" in page
    for c in cells:
        review_event(c, bob, c.call)
    body = as_bob.get(f"/draws/{draw.pk}/").content.decode()
    assert 'data-testid="review-draw"' not in body
    assert "assets/plotly-" not in body  # no embeddings stored: no figure, no plotly.js


def test_attribute_and_branch_names_read_in_plain_language_with_the_technical_name_on_hover(alice, draw):
    (cell,) = _cells_at(draw, [0.9])
    cell.explanation = {"branch_contributions": {"spatial": 0.6, "texture": 0.4},
                        "top_attributes": [{"name": "DAPI_glcm1_entropy", "value": 1.2, "effect": 0.3,
                                            "direction": "toward_ctc"}]}
    cell.save(update_fields=["explanation"])
    body = _client(alice).get(f"/draws/{draw.pk}/").content.decode()
    assert "Nucleus stain (DAPI): texture irregularity (fine)" in body
    assert 'title="DAPI_glcm1_entropy = 1.20' in body
    assert "Image appearance 60%" in body and "Measured features 40%" in body
    assert "The network's spatial branch" in body


def test_review_rank_is_the_logit_distance_from_the_threshold():
    assert review_rank(0.2, 0.2) == pytest.approx(0.0)
    assert review_rank(0.01, 0.2) > review_rank(0.5, 0.2) > review_rank(0.35, 0.2)
    assert review_rank(0.0, 0.5) < 20 and review_rank(1.0, 0.5) < 20  # clamped, finite


def test_the_migration_ranks_stored_events_from_their_call_and_margin(draw):
    """0009 fills ``review_rank`` for events stored before it: t = p - margin (CTC) or p + margin."""
    import importlib

    from django.apps import apps
    from django.db import connection

    cells = _cells_at(draw, [0.01, 0.35, 0.9])
    CellEvent.objects.filter(draw=draw).update(review_rank=None)
    fill_rank = importlib.import_module("patients.migrations.0009_review_category_rank").fill_rank
    with connection.schema_editor() as editor:
        fill_rank(apps, editor)
    for c in cells:
        c.refresh_from_db()
        assert c.review_rank == pytest.approx(review_rank(c.ctc_probability, 0.2), abs=1e-6)
