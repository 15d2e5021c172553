"""charlie (another care team) never sees alice's patients: 404 on details, empty lists."""

from __future__ import annotations

import pytest

from patients.models import AuditEvent, Role
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_world(patient, draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    event = factories.CellEventFactory(upload=upload)
    line = factories.TreatmentLineFactory(patient=patient)
    cevent = factories.ClinicalEventFactory(patient=patient)
    from patients.summary import recompute_summary

    recompute_summary(draw)
    return {"patient": patient, "draw": draw, "upload": upload, "event": event, "line": line, "cevent": cevent}


DETAILS = [
    "/api/patients/{patient}/", "/api/patients/{patient}/fhir/", "/api/draws/{draw}/", "/api/draws/{draw}/events/",
    "/api/draws/{draw}/fhir/", "/api/draws/{draw}/uploads/", "/api/uploads/{upload}/", "/api/events/{event}/",
    "/api/treatment-lines/{line}/", "/api/clinical-events/{cevent}/", "/api/summaries/{draw}/",
]
LISTS = ["/api/patients/", "/api/draws/", "/api/uploads/", "/api/events/", "/api/treatment-lines/",
         "/api/clinical-events/", "/api/summaries/"]


def _ids(world):
    return {k: v.pk for k, v in world.items()}


@pytest.mark.parametrize("template", DETAILS)
def test_it_hides_other_teams_records_as_404(as_charlie, as_alice, alices_world, template):
    path = template.format(**_ids(alices_world))
    assert as_alice.get(path).status_code == 200
    assert as_charlie.get(path).status_code == 404


@pytest.mark.parametrize("path", LISTS)
def test_lists_are_empty_for_other_teams(as_charlie, as_alice, alices_world, path):
    assert as_alice.get(path).json()["count"] >= 1
    assert as_charlie.get(path).json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_charlie_cannot_write_into_alices_records(as_charlie, alices_world):
    ids = _ids(alices_world)
    assert as_charlie.patch(f"/api/patients/{ids['patient']}/", {"stage": "I"}, format="json").status_code == 404
    r = as_charlie.post("/api/draws/", {"patient": ids["patient"], "drawn_at": "2025-03-01T09:00:00Z",
                                        "volume_ml": 7.5, "timepoint": "C2D1"}, format="json")
    assert r.status_code == 400 and "patient" in r.json()
    r = as_charlie.post(f"/api/events/{ids['event']}/review/", {"call": "ctc", "reason": "x"}, format="json")
    assert r.status_code == 404


def test_trial_coordinator_sees_enrolled_patients_of_other_teams(client_for, patient):
    trial = factories.TrialFactory()
    patient.trial = trial
    patient.save()
    dora = factories.UserFactory(username="dora")
    trial.coordinators.add(dora)
    r = client_for(dora).get("/api/patients/")
    assert [p["study_id"] for p in r.json()["results"]] == [patient.study_id]


def test_admin_sees_everything(client_for, patient, other_team):
    factories.PatientFactory(care_team=other_team)
    root = factories.UserFactory(username="root")
    factories.MembershipFactory(user=root, team=other_team, role=Role.ADMIN)
    assert client_for(root).get("/api/patients/").json()["count"] == 2


def test_reads_are_audited_once_per_request(as_alice, alices_world):
    before = AuditEvent.objects.count()
    as_alice.get(f"/api/patients/{alices_world['patient'].pk}/")
    as_alice.get(f"/api/draws/?patient={alices_world['patient'].pk}")
    rows = list(AuditEvent.objects.order_by("pk")[before:])
    assert len(rows) == 2
    assert all(r.action == "view" and r.patient_id == alices_world["patient"].pk for r in rows)
    assert rows[0].user.username == "alice"


#: Endpoints that need a role right; bob (a reviewer) lacks it: (method, path, body).
ROLE_GATED = [
    ("get", "/api/draws/{draw}/fhir/", None),  # export
    ("get", "/api/patients/{patient}/fhir/", None),  # export
    ("post", "/api/draws/{draw}/uploads/", {"channels": "DAPI,CK,CD45"}),  # upload
    ("post", "/api/uploads/{upload}/withdraw/", {"reason": "wrong channels"}),  # upload
    ("patch", "/api/draws/{draw}/", {"timepoint": "C9D1"}),  # edit records
    ("patch", "/api/patients/{patient}/", {"stage": "I"}),  # edit records
    ("post", "/api/draws/{draw}/rerun/", {"version": "x"}),  # manage models
    ("get", "/api/trainings/{draw}/", None),  # manage models (reads too)
]


@pytest.mark.parametrize(("method", "template", "body"), ROLE_GATED)
def test_a_role_refusal_is_the_same_for_every_id_and_confirms_no_record(
        as_bob, alices_world, other_team, method, template, body):
    """docs/api.md: the role is checked before any record is looked up, so a 403 says nothing about
    the id: a record bob sees, one of another team, and one that does not exist get the same answer."""
    theirs_draw = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=other_team))
    theirs = {"patient": theirs_draw.patient_id, "draw": theirs_draw.pk,
              "upload": factories.ImagingUploadFactory(draw=theirs_draw).pk}
    missing = {"patient": 987654, "draw": 987654, "upload": 987654}
    answers = []
    for ids in (_ids(alices_world), theirs, missing):
        r = getattr(as_bob, method)(template.format(**ids), body, format="json")
        answers.append((r.status_code, r.json()))
    assert answers[0][0] == 403 and answers[0] == answers[1] == answers[2], answers


@pytest.mark.parametrize("template", ["/api/draws/{draw}/fhir/", "/api/patients/{patient}/fhir/",
                                      "/api/draws/{draw}/", "/api/events/{event}/"])
def test_a_record_out_of_sight_answers_exactly_as_one_that_does_not_exist(as_charlie, alices_world, template):
    """charlie may export (an oncologist), but not alice's records: 404, the body of a missing id."""
    hidden = as_charlie.get(template.format(**_ids(alices_world)))
    missing = as_charlie.get(template.format(**dict.fromkeys(alices_world, 987654)))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
