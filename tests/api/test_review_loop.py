"""The review loop through the API (issue 13): confirm the remaining calls, correct a category,
re-run a draw with another version (administrators), start and follow a lab-model training.

Each endpoint calls the same function as the dashboard (``patients.review.confirm_remaining``,
``review_event``, ``patients.rerun.rerun_draw``, ``patients.training_tasks.start_training``), so
these tests check the API's side: who may, what is out of scope (404), what is audited.
"""

from __future__ import annotations

import pytest

from patients.models import AuditEvent, CellEvent, CellReview, ClassifierVersion, LabTraining, Role
from tests import factories
from tests.dashboard.builders import add_cells

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(team):
    return factories.MembershipFactory(team=team, user__username="root", role=Role.ADMIN).user


@pytest.fixture
def analysed(draw):
    """alice's draw with 2 CTC and 3 non-CTC calls, none reviewed (version "test-model")."""
    add_cells(draw, 2, 3, seed=5, with_images=False)
    return draw


def test_confirm_remaining_finalises_only_the_listed_cells_then_the_rest_and_audits_each_action(
        analysed, as_bob, as_charlie, client_for):
    draw = analysed
    ids = list(CellEvent.objects.filter(draw=draw).order_by("pk").values_list("pk", flat=True))
    url = f"/api/draws/{draw.pk}/confirm-remaining/"
    assert as_charlie.post(url, {"cells": ids}, format="json").status_code == 404  # another team's draw
    member = factories.UserFactory()
    factories.MembershipFactory(team=draw.patient.care_team, user=member, role=Role.MEMBER)
    assert client_for(member).post(url, {}, format="json").status_code == 403  # uploads only, no review
    assert CellEvent.objects.filter(draw=draw).exclude(reviewed_call="").count() == 0

    r = as_bob.post(url, {"cells": ids[:3]}, format="json")  # what bob's client showed
    assert r.status_code == 200, r.content
    assert r.json()["confirmed"] == ids[:3] and r.json()["summary"]["status"] == "preliminary"
    assert set(CellEvent.objects.filter(draw=draw, reviewed_call="").values_list("pk", flat=True)) == set(ids[3:])

    r = as_bob.post(url, {}, format="json")  # no list: every cell still unreviewed
    assert r.status_code == 200 and r.json()["confirmed"] == ids[3:]
    summary = r.json()["summary"]
    assert summary["status"] == "final" and summary["reviewed_events"] == 5 and summary["ctc_count"] == 2
    audits = list(AuditEvent.objects.filter(detail__bulk_confirm=True).order_by("at", "pk"))
    assert [a.detail["cells"] for a in audits] == [ids[:3], ids[3:]]
    assert all(a.user.username == "bob" and a.object_id == str(draw.pk) for a in audits)
    assert CellReview.objects.filter(event__draw=draw).count() == 5


def test_the_event_review_takes_a_category_correction(analysed, as_bob):
    cell = CellEvent.objects.filter(draw=analysed, call="ctc").order_by("pk").first()
    url = f"/api/events/{cell.pk}/review/"
    bad = as_bob.post(url, {"call": "non_ctc", "reason": "CD45 positive", "category": "monster"}, format="json")
    assert bad.status_code == 400 and "category" in bad.json()
    r = as_bob.post(url, {"call": "non_ctc", "reason": "CD45 positive: leukocyte", "category": "leukocyte"},
                    format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["reviewed_category"] == "leukocyte" and body["final_category"] == "leukocyte"
    assert body["category"] == "ctc"  # the model's stays for the record
    cell.refresh_from_db()
    assert cell.reviewed_call == "non_ctc" and cell.reviewed_category == "leukocyte"
    assert CellReview.objects.get(event=cell).category == "leukocyte"
    listed = as_bob.get(f"/api/draws/{analysed.pk}/events/").json()["results"]
    assert {e["id"]: e["final_category"] for e in listed}[cell.pk] == "leukocyte"


def test_rerun_is_for_administrators_in_scope_with_a_known_other_version(analysed, admin, as_alice, as_bob,
                                                                          as_charlie, client_for):
    draw = analysed
    other = ClassifierVersion.objects.create(version="lab-rerun-api", metadata={"candidate": True})
    url = f"/api/draws/{draw.pk}/rerun/"
    for who in (as_alice, as_bob, as_charlie):  # oncologist, reviewer, another team's oncologist
        assert who.post(url, {"version": other.version}, format="json").status_code == 403
    assert as_charlie.get(url).status_code == 404  # another team's draw: not even its results
    assert as_alice.get(url).json() == []
    as_admin = client_for(admin)
    assert as_admin.post("/api/draws/2000000000/rerun/", {"version": other.version}, format="json").status_code == 404
    unknown = as_admin.post(url, {"version": "no-such-version"}, format="json")
    assert unknown.status_code == 400 and "version" in unknown.json()
    ClassifierVersion.objects.get_or_create(version="test-model")
    same = as_admin.post(url, {"version": "test-model"}, format="json")
    assert same.status_code == 400 and "already comes from test-model" in str(same.json())
    assert not AuditEvent.objects.filter(detail__action="rerun").exists()  # refused: nothing audited

    r = as_admin.post(url, {"version": other.version}, format="json")
    assert r.status_code == 202, r.content
    upload_ids = list(draw.uploads.values_list("pk", flat=True))
    assert r.json() == {"draw": draw.pk, "version": "lab-rerun-api", "uploads": upload_ids,
                        "counted_version": ["test-model"]}
    audit = AuditEvent.objects.get(detail__action="rerun")
    assert audit.user == admin and audit.object_type == "BloodDraw" and audit.object_id == str(draw.pk)
    assert audit.patient_id == draw.patient_id and audit.detail["lane"] == "bulk"
    assert audit.detail["uploads"] == upload_ids and audit.detail["counted_version"] == ["test-model"]


def test_lab_training_starts_from_the_api_for_administrators_only_and_reports_its_progress(
        team, admin, as_alice, as_bob, client_for):
    for who in (as_alice, as_bob):
        assert who.post("/api/trainings/", {"team": team.pk}, format="json").status_code == 403
        assert who.get("/api/trainings/").status_code == 403
    as_admin = client_for(admin)
    assert as_admin.post("/api/trainings/", {"team": 2**62}, format="json").status_code == 400
    assert as_admin.post("/api/trainings/", {"team": 2**64}, format="json").status_code == 400
    r = as_admin.post("/api/trainings/", {"team": team.pk}, format="json")
    assert r.status_code == 202, r.content
    job = LabTraining.objects.get()
    assert r.json()["id"] == job.pk and r.headers["Location"].endswith(f"/api/trainings/{job.pk}/")
    assert job.team == team and job.requested_by == admin and job.status == "queued"
    assert AuditEvent.objects.filter(object_type="LabTraining", object_id=str(job.pk), user=admin).exists()
    status = as_admin.get(f"/api/trainings/{job.pk}/").json()
    assert status["status"] == "queued" and status["progress"] == 0 and status["candidate"] is None
    assert [j["id"] for j in as_admin.get("/api/trainings/").json()["results"]] == [job.pk]
