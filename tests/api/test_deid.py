"""De-identified export: pseudonyms only, no MRN, dates shifted per patient with intervals kept."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from api import deid
from patients.models import AuditEvent, Role
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def cohort(team):
    arm = factories.TrialArmFactory(code="A")
    p = factories.PatientFactory(care_team=team, study_id="BR-0042", mrn="MRN-998877", trial=arm.trial, arm=arm,
                                 diagnosis_date=dt.date(2025, 1, 10), enrolled_on=dt.date(2025, 1, 20))
    factories.TreatmentLineFactory(patient=p, line_number=1, start_date=dt.date(2025, 2, 1))
    factories.ClinicalEventFactory(patient=p, date=dt.date(2025, 4, 1), note="Dr Smith called the patient")
    d1 = factories.BloodDrawFactory(patient=p, drawn_at=dt.datetime(2025, 2, 1, 9, tzinfo=dt.UTC))
    d2 = factories.BloodDrawFactory(patient=p, drawn_at=dt.datetime(2025, 2, 22, 9, tzinfo=dt.UTC))
    for d, calls in [(d1, ["ctc"] * 6), (d2, ["ctc", "non_ctc"])]:
        up = factories.ImagingUploadFactory(draw=d)
        for c in calls:
            factories.CellEventFactory(upload=up, call=c, ctc_probability=0.9 if c == "ctc" else 0.1)
        recompute_summary(d)
    factories.PatientFactory(care_team=team, study_id="BR-0043")
    return p


def _days(a: str, b: str) -> int:
    return (dt.date.fromisoformat(b) - dt.date.fromisoformat(a)).days


def test_json_export_has_no_identifiers_and_keeps_intervals(as_alice, cohort):
    r = as_alice.get("/api/export/deidentified/?format=json")
    assert r.status_code == 200
    text = r.content.decode()
    for secret in ["BR-0042", "BR-0043", "MRN-998877", "Dr Smith", "Breast unit"]:
        assert secret not in text
    rec = next(p for p in r.json()["patients"] if p["pseudo_id"] == deid.pseudonym("BR-0042"))
    assert rec["pseudo_id"].startswith("S-") and rec["arm"] == "A"
    d1, d2 = rec["draws"]
    assert _days(d1["drawn_on"], d2["drawn_on"]) == 21
    assert _days(rec["diagnosis_date"], rec["enrolled_on"]) == 10
    assert _days(rec["diagnosis_date"], d1["drawn_on"]) == 22
    assert _days(rec["diagnosis_date"], rec["treatment_lines"][0]["start_date"]) == 22
    shift = deid.shift_days("BR-0042")
    assert -180 <= shift <= 180
    assert _days("2025-01-10", rec["diagnosis_date"]) == shift
    assert (d1["ctc_count"], d1["unfavorable"], d2["ctc_count"]) == (6, True, 1)


def test_dates_typed_into_labels_are_removed():
    assert deid.scrub("C3D1 2025-03-04") == "C3D1 [date]"
    assert deid.scrub("seen 4/3/25, C2D1") == "seen [date], C2D1"
    assert deid.scrub("baseline") == "baseline"


def test_pseudonyms_and_shifts_are_stable_and_secret(settings):
    a = (deid.pseudonym("BR-0042"), deid.shift_days("BR-0042"))
    assert a == (deid.pseudonym("BR-0042"), deid.shift_days("BR-0042"))
    assert deid.pseudonym("BR-0042") != deid.pseudonym("BR-0043")
    settings.SECRET_KEY = "another-key-" + "x" * 40
    assert deid.pseudonym("BR-0042") != a[0]
    shifts = {deid.shift_days(f"P-{i}") for i in range(200)}
    assert min(shifts) >= -180 and max(shifts) <= 180 and len(shifts) > 50


def test_csv_export_one_row_per_draw(as_alice, cohort):
    r = as_alice.get("/api/export/deidentified/?format=csv")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(rows) == 3  # two draws + a patient without draws
    assert "mrn" not in rows[0] and "study_id" not in rows[0]
    mine = [x for x in rows if x["pseudo_id"] == deid.pseudonym("BR-0042")]
    assert _days(mine[0]["drawn_on"], mine[1]["drawn_on"]) == 21
    assert "BR-0042" not in r.content.decode() and "MRN-998877" not in r.content.decode()


def test_export_is_filtered_scoped_and_audited(as_alice, as_charlie, cohort):
    body = as_alice.get(f"/api/export/deidentified/?trial={cohort.trial.code}").json()
    assert len(body["patients"]) == 1
    assert as_charlie.get("/api/export/deidentified/").json()["patients"] == []
    row = AuditEvent.objects.filter(action="export", object_type="DeidentifiedExport", user__username="alice").first()
    assert row is not None and row.detail["patients"] == 1 and row.detail["format"] == "json"


def test_export_needs_the_export_right(as_bob, cohort, client_for, team):
    assert as_bob.get("/api/export/deidentified/").status_code == 403
    nurse = factories.UserFactory(username="nurse")
    factories.MembershipFactory(user=nurse, team=team, role=Role.MEMBER)
    assert client_for(nurse).get("/api/export/deidentified/?format=csv").status_code == 403


def test_the_domain_status_goes_out_without_its_reasons(as_alice, cohort):
    """A count from images unlike the validated ones is marked in the de-identified export; the
    reasons stay home (one can quote an uploaded file's name)."""
    first, second = sorted(cohort.draws.all(), key=lambda d: d.drawn_at)
    first.uploads.update(domain_check={"status": "shifted", "score": 0.8,
                                       "reasons": ["field BR-0042_smith.tif: 4,000 objects is implausible"]})
    rows = [r for r in csv.DictReader(io.StringIO(
        as_alice.get("/api/export/deidentified/?format=csv").content.decode()))
        if r["pseudo_id"] == deid.pseudonym("BR-0042")]
    assert [r["domain_status"] for r in rows] == ["shifted", ""]  # the second draw has no stored check
    r = as_alice.get("/api/export/deidentified/?format=json")
    rec = next(p for p in r.json()["patients"] if p["pseudo_id"] == deid.pseudonym("BR-0042"))
    assert [d["domain_status"] for d in rec["draws"]] == ["shifted", None]
    assert "smith" not in r.content.decode()
