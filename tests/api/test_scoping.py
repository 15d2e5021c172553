"""charlie (another care team) never sees alice's patients: 404 on details, empty lists."""

from __future__ import annotations

import pytest

from patients.models import AuditEvent, Role
from tests import factories
from tests.api.synthetic import CHANNELS, event_tiff

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
    ("post", "/api/draws/{draw}/uploads/", {"channels": CHANNELS}),  # upload
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


# --- rights are per care team (patients.roles.can_on) ---------------------------------------------


@pytest.fixture
def team_a_world(other_team):
    from patients.summary import recompute_summary

    patient = factories.PatientFactory(care_team=other_team, study_id="TEAM-A-001")
    draw = factories.BloodDrawFactory(patient=patient)
    upload = factories.ImagingUploadFactory(draw=draw)
    event = factories.CellEventFactory(upload=upload)
    recompute_summary(draw)
    return {"patient": patient, "draw": draw, "upload": upload, "event": event}


def _tiff():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("a.tif", event_tiff("ctc", 1), content_type="image/tiff")


def test_an_oncologist_elsewhere_may_export_edit_and_upload_only_for_her_oncology_team(
        client_for, olga, alices_world, team_a_world):
    api = client_for(olga)
    a, b = _ids(team_a_world), _ids(alices_world)
    assert api.get(f"/api/patients/{a['patient']}/fhir/").status_code == 200
    assert api.get(f"/api/draws/{a['draw']}/fhir/").status_code == 200
    assert api.patch(f"/api/patients/{a['patient']}/", {"stage": "III"}, format="json").status_code == 200
    assert api.patch(f"/api/draws/{a['draw']}/", {"timepoint": "C2D1"}, format="json").status_code == 200
    r = api.post(f"/api/draws/{a['draw']}/uploads/", {"file": _tiff(), "channels": CHANNELS},
                 format="multipart")
    assert r.status_code == 202, r.content

    refused = [
        ("get", f"/api/patients/{b['patient']}/fhir/", None),
        ("get", f"/api/draws/{b['draw']}/fhir/", None),
        ("patch", f"/api/patients/{b['patient']}/", {"stage": "I"}),
        ("patch", f"/api/draws/{b['draw']}/", {"timepoint": "C9D1"}),
        ("patch", f"/api/treatment-lines/{b['line']}/", {"regimen": "x"}),
        ("patch", f"/api/clinical-events/{b['cevent']}/", {"note": "x"}),
        ("post", f"/api/uploads/{b['upload']}/withdraw/", {"reason": "wrong channels"}),
    ]
    for method, path, body in refused:
        r = getattr(api, method)(path, body, format="json")
        assert r.status_code == 403, (method, path, r.status_code)
        assert "care team" in r.json()["detail"], r.json()
    r = api.post(f"/api/draws/{b['draw']}/uploads/", {"file": _tiff(), "channels": CHANNELS},
                 format="multipart")
    assert r.status_code == 403
    alices_world["patient"].refresh_from_db()
    assert alices_world["patient"].stage != "I"
    assert not alices_world["draw"].uploads.exclude(pk=b["upload"]).exists()


def test_new_records_for_the_reviewing_teams_patient_are_refused(client_for, olga, alices_world, team_a_world):
    from patients.models import BloodDraw, TreatmentLine

    api = client_for(olga)
    drawn = {"drawn_at": "2025-03-01T09:00:00Z", "volume_ml": 7.5, "timepoint": "C2D1"}
    before = BloodDraw.objects.count()
    r = api.post("/api/draws/", {**drawn, "patient": alices_world["patient"].pk}, format="json")
    assert r.status_code == 403 and BloodDraw.objects.count() == before
    r = api.post("/api/treatment-lines/", {"patient": alices_world["patient"].pk, "line_number": 7,
                                           "regimen": "FOLFOX", "start_date": "2025-02-01"}, format="json")
    assert r.status_code == 403 and not TreatmentLine.objects.filter(line_number=7).exists()
    # Moving her own team's record onto the other team's patient is refused the same way.
    line = factories.TreatmentLineFactory(patient=team_a_world["patient"])
    r = api.patch(f"/api/treatment-lines/{line.pk}/", {"patient": alices_world["patient"].pk}, format="json")
    assert r.status_code == 403
    assert api.post("/api/draws/", {**drawn, "patient": team_a_world["patient"].pk}, format="json").status_code == 201


def test_she_may_still_review_the_reviewing_teams_cells(client_for, olga, alices_world):
    api = client_for(olga)
    event = alices_world["event"]
    r = api.post(f"/api/events/{event.pk}/review/", {"call": event.call}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["reviewed_call"] == event.call
    r = api.post(f"/api/draws/{alices_world['draw'].pk}/confirm-remaining/", {}, format="json")
    assert r.status_code == 200


def test_a_member_here_cannot_review_here_because_she_reviews_elsewhere(client_for, team, alices_world,
                                                                          team_a_world):
    user = factories.UserFactory()
    factories.MembershipFactory(team=team, user=user, role=Role.MEMBER)
    factories.MembershipFactory(team=team_a_world["patient"].care_team, user=user, role=Role.REVIEWER)
    api = client_for(user)
    event = alices_world["event"]
    assert api.post(f"/api/events/{event.pk}/review/", {"call": event.call}, format="json").status_code == 403
    r = api.post(f"/api/draws/{alices_world['draw'].pk}/confirm-remaining/", {}, format="json")
    assert r.status_code == 403
    ev_a = team_a_world["event"]
    assert api.post(f"/api/events/{ev_a.pk}/review/", {"call": ev_a.call}, format="json").status_code == 200


def test_multi_patient_exports_keep_the_patients_she_may_export(client_for, olga, alice, alices_world,
                                                                team_a_world):
    from api import deid

    api = client_for(olga)
    r = api.get("/api/export/deidentified/")
    assert r.status_code == 200
    assert [p["pseudo_id"] for p in r.json()["patients"]] == [deid.pseudonym("TEAM-A-001")]
    r = api.get("/api/export/deidentified/?format=csv")
    assert r.status_code == 200 and alices_world["patient"].study_id not in r.content.decode()
    assert deid.pseudonym(alices_world["patient"].study_id) not in r.content.decode()
    assert api.get("/api/cohort/").json()["patients"] == 1
    r = api.get("/api/cohort/survival/?format=csv")
    assert r.status_code == 200 and alices_world["patient"].study_id not in r.content.decode()
    # alice, oncologist of B, gets B's patient and not A's: the same rule from the other side.
    body = client_for(alice).get("/api/export/deidentified/").json()
    assert [p["pseudo_id"] for p in body["patients"]] == [deid.pseudonym(alices_world["patient"].study_id)]


def test_a_refusal_on_a_visible_patient_still_comes_after_the_scoping_404(client_for, olga, other_team):
    """An out-of-sight record answers 404 for her as for anyone with the right somewhere."""
    api = client_for(olga)
    elsewhere = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=factories.CareTeamFactory()))
    for path in (f"/api/draws/{elsewhere.pk}/fhir/", f"/api/patients/{elsewhere.patient_id}/fhir/"):
        assert api.get(path).status_code == 404
    assert api.patch(f"/api/draws/{elsewhere.pk}/", {"timepoint": "x"}, format="json").status_code == 404
