"""Creating and reading patients, treatment lines, clinical events and draws: clear 400s, filters, no N+1."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patients.models import BloodDraw, Patient, Role
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_creates_a_patient_in_the_users_only_team(as_alice, team):
    r = as_alice.post("/api/patients/", {"study_id": "BR-001", "cancer_type": "breast_metastatic"}, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["care_team"] == team.pk and body["cancer_type"] == "breast_metastatic"
    assert Patient.objects.get(study_id="BR-001").care_team == team


def test_care_team_is_required_when_the_user_has_several(as_alice, alice, other_team):
    factories.MembershipFactory(user=alice, team=other_team, role=Role.ONCOLOGIST)
    r = as_alice.post("/api/patients/", {"study_id": "BR-002", "cancer_type": "breast_metastatic"}, format="json")
    assert r.status_code == 400
    assert "several care teams" in r.json()["care_team"][0]
    r = as_alice.post("/api/patients/", {"study_id": "BR-002", "cancer_type": "breast_metastatic",
                                         "care_team": other_team.pk}, format="json")
    assert r.status_code == 201


def test_it_rejects_a_team_the_user_is_not_in(as_alice, other_team):
    r = as_alice.post("/api/patients/", {"study_id": "BR-003", "cancer_type": "breast_metastatic",
                                         "care_team": other_team.pk}, format="json")
    assert r.status_code == 400
    assert "among yours" in r.json()["care_team"][0]  # issue 16: the same words as a missing id


def test_patient_validation_errors_are_clear(as_alice, patient):
    r = as_alice.post("/api/patients/", {"study_id": patient.study_id, "cancer_type": "lung"}, format="json")
    assert r.status_code == 400
    body = r.json()
    assert "cannot be used" in body["study_id"][0]  # issue 16: one message, visible or not
    assert "lung" in body["cancer_type"][0]
    future = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    r = as_alice.post("/api/patients/", {"study_id": "X1", "cancer_type": "breast_metastatic",
                                         "diagnosis_date": future}, format="json")
    assert r.json()["diagnosis_date"] == ["The diagnosis date is in the future."]


def test_trial_and_arm_by_code(as_alice):
    arm = factories.TrialArmFactory(code="A")
    r = as_alice.post("/api/patients/", {"study_id": "T-1", "cancer_type": "prostate_crpc",
                                         "trial": arm.trial.code, "arm": "B"}, format="json")
    assert r.status_code == 400 and "has no arm 'B'" in r.json()["arm"][0]
    r = as_alice.post("/api/patients/", {"study_id": "T-1", "cancer_type": "prostate_crpc",
                                         "trial": arm.trial.code, "arm": "A", "enrolled_on": "2025-01-02"},
                      format="json")
    assert r.status_code == 201, r.json()
    assert (r.json()["trial"], r.json()["arm"]) == (arm.trial.code, "A")


def test_a_reviewer_may_not_create_records(as_bob, patient):
    r = as_bob.post("/api/patients/", {"study_id": "R-1", "cancer_type": "breast_metastatic"}, format="json")
    assert r.status_code == 403
    r = as_bob.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2025-03-01T09:00:00Z", "volume_ml": 7.5,
                                    "timepoint": "C2D1"}, format="json")
    assert r.status_code == 403


def test_it_creates_a_draw_and_reads_it_back(as_alice, alice, patient):
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2025-03-01T09:30:00+01:00",
                                      "volume_ml": 7.5, "timepoint": "C2D1"}, format="json")
    assert r.status_code == 201, r.json()
    draw = BloodDraw.objects.get(pk=r.json()["id"])
    assert draw.created_by == alice and draw.volume_ml == Decimal("7.50")
    assert draw.drawn_at == dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert body["summary"] is None and body["ctc_count"] is None  # not analysed is not "0 CTCs"
    assert body["volume_ml"] == 7.5 and body["study_id"] == patient.study_id
    for link, tail in [("uploads_url", "uploads/"), ("events_url", "events/"), ("fhir_url", "fhir/")]:
        assert body[link].endswith(f"/api/draws/{draw.pk}/{tail}")


def test_draw_validation_errors_are_clear(as_alice, patient):
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": future, "volume_ml": 0,
                                      "timepoint": ""}, format="json")
    assert r.status_code == 400
    body = r.json()
    assert len(body["drawn_at"]) == 1 and "is in the future" in body["drawn_at"][0]
    assert "volume_ml" in body and "timepoint" in body
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": "yesterday", "volume_ml": 7.5,
                                      "timepoint": "x"}, format="json")
    assert "Datetime has wrong format" in r.json()["drawn_at"][0]


def test_draw_shows_its_summary_at_two_levels(as_alice, draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    factories.CellEventFactory(upload=upload, call="ctc", ctc_probability=0.9)
    factories.CellEventFactory(upload=upload)
    from patients.summary import recompute_summary

    recompute_summary(draw)
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert body["summary"]["ctc_count"] == 1 and body["summary"]["events_analysed"] == 2
    assert body["summary"]["ctc_per_7_5ml"] == 1.0 and body["summary"]["status"] == "preliminary"
    assert (body["ctc_count"], body["ctc_per_7_5ml"], body["events_analysed"], body["status"]) == (
        1, 1.0, 2, "preliminary")


def test_correcting_the_volume_recounts_per_7_5ml(as_alice, draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    factories.CellEventFactory(upload=upload, call="ctc", ctc_probability=0.9)
    from patients.summary import recompute_summary

    recompute_summary(draw)
    assert as_alice.get(f"/api/draws/{draw.pk}/").json()["ctc_per_7_5ml"] == 1.0
    r = as_alice.patch(f"/api/draws/{draw.pk}/", {"volume_ml": 3.75}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["ctc_per_7_5ml"] == 2.0 and r.json()["summary"]["ctc_per_7_5ml"] == 2.0


def test_draw_filters_by_patient_trial_arm_and_dates(as_alice, team):
    arm = factories.TrialArmFactory(code="A")
    p1 = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm)
    p2 = factories.PatientFactory(care_team=team)
    d = [factories.BloodDrawFactory(patient=p, drawn_at=dt.datetime(2025, m, 1, tzinfo=dt.UTC))
         for p, m in [(p1, 1), (p1, 3), (p2, 2)]]

    def ids(query):
        return [x["id"] for x in as_alice.get(f"/api/draws/?{query}").json()["results"]]

    assert ids(f"patient={p1.pk}") == [d[0].pk, d[1].pk]
    assert ids(f"trial={arm.trial.code}") == [d[0].pk, d[1].pk]
    assert ids(f"trial={arm.trial.code}&arm=A") == [d[0].pk, d[1].pk]
    assert ids("drawn_after=2025-01-15T00:00:00Z&drawn_before=2025-03-01T00:00:00Z") == [d[2].pk]
    assert ids("ordering=-drawn_at") == [d[1].pk, d[2].pk, d[0].pk]
    assert as_alice.get("/api/patients/?cancer_type=breast_metastatic").json()["count"] == 2
    assert as_alice.get(f"/api/patients/?trial={arm.trial.code}").json()["count"] == 1


def test_lists_do_not_query_per_row(as_alice, team, django_assert_max_num_queries):
    for _ in range(6):
        p = factories.PatientFactory(care_team=team)
        draw = factories.BloodDrawFactory(patient=p)
        upload = factories.ImagingUploadFactory(draw=draw)
        factories.CellEventFactory(upload=upload)
        factories.TreatmentLineFactory(patient=p, line_number=1)
        from patients.summary import recompute_summary

        recompute_summary(draw)
    # auth + count + page + audit (+ savepoints) whatever the number of rows
    for path in ["/api/patients/", "/api/draws/", "/api/summaries/", "/api/uploads/", "/api/events/",
                 "/api/treatment-lines/"]:
        with django_assert_max_num_queries(8):
            r = as_alice.get(path)
        assert r.json()["count"] == 6, path


def test_pagination_shape_and_page_size(as_alice, team):
    for _ in range(3):
        factories.PatientFactory(care_team=team)
    body = as_alice.get("/api/patients/?page_size=2").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3 and len(body["results"]) == 2 and "page=2" in body["next"]


def test_treatment_lines_and_clinical_events(as_alice, patient):
    r = as_alice.post("/api/treatment-lines/", {"patient": patient.pk, "line_number": 1, "regimen": "Docetaxel",
                                                "start_date": "2025-02-01", "end_date": "2025-01-01"},
                      format="json")
    assert r.status_code == 400 and r.json()["end_date"] == ["The end date is before the start date."]
    r = as_alice.post("/api/treatment-lines/", {"patient": patient.pk, "line_number": 1, "regimen": "Docetaxel",
                                                "start_date": "2025-02-01"}, format="json")
    assert r.status_code == 201, r.json()
    r = as_alice.post("/api/treatment-lines/", {"patient": patient.pk, "line_number": 1, "regimen": "Other",
                                                "start_date": "2025-05-01"}, format="json")
    assert r.json()["line_number"] == ["Line 1 already exists for this patient."]
    r = as_alice.post("/api/clinical-events/", {"patient": patient.pk, "date": "2025-04-01", "kind": "surgery",
                                                "recist": "PR"}, format="json")
    assert r.status_code == 400 and "imaging response" in r.json()["recist"][0]
    r = as_alice.post("/api/clinical-events/", {"patient": patient.pk, "date": "2025-04-01", "kind": "imaging",
                                                "recist": "PR"}, format="json")
    assert r.status_code == 201
    assert as_alice.get(f"/api/clinical-events/?patient={patient.pk}").json()["count"] == 1
    assert as_alice.get(f"/api/treatment-lines/?patient={patient.pk}").json()["count"] == 1


def test_future_draws_and_clinical_events_are_refused(as_alice, patient):
    from django.utils import timezone

    now = timezone.now()
    ahead = (now + dt.timedelta(hours=2)).isoformat()
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": ahead, "volume_ml": 7.5,
                                      "timepoint": "C9D1"}, format="json")
    assert r.status_code == 400 and "is in the future" in r.json()["drawn_at"][0]
    # A few minutes of clock skew between the ward's device and the server is fine.
    soon = (now + dt.timedelta(minutes=30)).isoformat()
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": soon, "volume_ml": 7.5,
                                      "timepoint": "C9D1"}, format="json")
    assert r.status_code == 201, r.json()
    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).isoformat()
    r = as_alice.post("/api/clinical-events/", {"patient": patient.pk, "date": tomorrow, "kind": "imaging",
                                                "recist": "PR"}, format="json")
    assert r.status_code == 400 and "is in the future" in r.json()["date"][0]
    r = as_alice.post("/api/clinical-events/", {"patient": patient.pk, "date": timezone.localdate().isoformat(),
                                                "kind": "imaging", "recist": "PR"}, format="json")
    assert r.status_code == 201, r.json()


def test_reference_endpoints(as_alice, team):
    teams = as_alice.get("/api/care-teams/").json()["results"]
    assert teams == [{"id": team.pk, "name": team.name, "site": team.site, "role": "oncologist"}]
    codes = {c["code"]: c["ctc_cutoff"] for c in as_alice.get("/api/cancer-types/").json()}
    assert codes["colorectal_metastatic"] == 3
