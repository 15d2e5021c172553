"""Issue 14, point 8: the cohort's follow-up landmark and conversion intervals, the cohort CSV's new
columns, and the chart-ready printable report (identifiers, sign-off, images, machine counts marked)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import numpy as np
import pytest
from django.utils import timezone

from patients.imaging import encode_strip
from patients.models import Patient
from patients.review import review_event
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _draw(patient, days_ago, timepoint, n_ctc, n_other=3):
    d = factories.BloodDrawFactory(patient=patient, timepoint=timepoint,
                                   drawn_at=timezone.now() - dt.timedelta(days=days_ago))
    up = factories.ImagingUploadFactory(draw=d, result_channels=["DAPI", "CK", "AF", "CD45"])
    thumb = encode_strip(np.full((4, 16, 16), 120, np.uint8))
    cells = [factories.CellEventFactory(upload=up, call="ctc", ctc_probability=0.9 + i / 1000, thumbnail=thumb)
             for i in range(n_ctc)]
    for _ in range(n_other):
        factories.CellEventFactory(upload=up, call="non_ctc", ctc_probability=0.01)
    recompute_summary(d)
    return d, cells


@pytest.fixture
def two_patients(team):
    arm = factories.TrialArmFactory(code="A")
    p1 = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm, study_id="PT-L1", mrn="MRN-42",
                                  enrolled_on=dt.date.today() - dt.timedelta(days=200))
    _draw(p1, 120, "baseline", 8)
    _draw(p1, 99, "C2D1", 1)  # to favorable at C2D1 ...
    _draw(p1, 20, "C5D1", 9)  # ... unfavorable again at the latest draw
    p2 = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm, study_id="PT-L2",
                                  enrolled_on=dt.date.today() - dt.timedelta(days=200))
    _draw(p2, 120, "baseline", 7)
    _draw(p2, 99, "C2D1", 0)
    factories.TreatmentLineFactory(patient=p1, line_number=1, regimen="Eribulin",
                                   start_date=dt.date.today() - dt.timedelta(days=190))
    p1.progression_date = dt.date.today() - dt.timedelta(days=15)
    p1.last_follow_up = dt.date.today() - dt.timedelta(days=2)
    p1.save()
    return arm.trial, p1, p2


def test_cohort_follow_up_landmark_and_conversion_interval(as_alice, two_patients):
    trial, p1, p2 = two_patients
    latest = as_alice.get("/cohort/", {"trial": trial.code}).content.decode()
    c2 = as_alice.get("/cohort/", {"trial": trial.code, "follow_up": "C2D1"}).content.decode()
    assert '<option value="C2D1">' in latest and '<option value="C5D1">' in latest
    # Latest draw: P1 back to unfavorable -> 1 of 2 converted; landmark C2D1: both converted, 2 of 2.
    assert "1 of 2 unfavorable at baseline" in latest
    assert "2 of 2 unfavorable at baseline" in c2 and "the C2D1 draw" in c2
    # 2 of 2 is not "100 %, settled": its exact 95 % interval is 16-100 %.
    assert re.search(r'data-testid="conversion-ci"[^>]*>95% CI 16%–100%', c2)


def test_cohort_csv_has_interval_line_outcomes_and_survival(as_alice, two_patients):
    trial, p1, _ = two_patients
    response = as_alice.get("/cohort/export.csv", {"trial": trial.code})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    mine = [r for r in rows if r["study_id"] == "PT-L1"]
    base = next(r for r in mine if r["timepoint"] == "baseline")
    assert (base["ctc_per_7_5ml_ci95_low"], base["ctc_per_7_5ml_ci95_high"]) == ("3.45", "15.76")  # 8 cells
    assert base["treatment_line"] == "1" and base["regimen"] == "Eribulin"
    assert base["progression_date"] == p1.progression_date.isoformat() and base["pfs_event"] == "1"
    assert float(base["pfs_months"]) == pytest.approx((p1.progression_date - p1.enrolled_on).days / 30.4375, abs=0.01)
    assert base["os_event"] == "0" and base["status_words"].startswith("unfavorable")


def test_printable_report_is_chart_ready(as_alice, bob, team):
    p = factories.PatientFactory(care_team=team, study_id="PT-R1", mrn="MRN-9001")
    d1, cells = _draw(p, 40, "baseline", 6)
    for c in cells:
        review_event(c, bob, "ctc", reason="")
    _draw(p, 5, "C2D1", 2)  # machine count only
    body = as_alice.get(f"/patients/{p.pk}/summary/").content.decode()
    ids = re.search(r'data-testid="report-identifiers">(.*?)</div>\s*</div>', body, re.S).group(1)
    assert "PT-R1" in ids and "MRN-9001" in ids
    signs = re.findall(r'data-testid="sign-off">(.*?)</td>', body, re.S)
    assert "Machine count, not settled" in signs[1]
    assert "Reviewed by bob" in signs[0]
    assert len(re.findall(r'<img src="data:image/png;base64,', body)) == 2  # the latest draw's CTCs (2)
    assert "Latest result not yet reviewed by a person." in body
    assert Patient.objects.get(pk=p.pk).mrn == "MRN-9001"


def test_outcomes_recorded_on_the_patient_page(as_alice, alice, team, client, bob):
    p = factories.PatientFactory(care_team=team, study_id="PT-O1", diagnosis_date=dt.date(2025, 1, 15),
                                 enrolled_on=None)
    _draw(p, 30, "baseline", 2)
    url = f"/patients/{p.pk}/outcomes/"
    r = as_alice.post(url, {"death_date": "2024-12-01"}, follow=True)
    assert "Outcomes not saved" in r.content.decode() and "before the diagnosis" in r.content.decode()
    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    r = as_alice.post(url, {"progression_date": future}, follow=True)
    assert "in the future" in r.content.decode()
    last_draw = timezone.localdate() - dt.timedelta(days=30)
    r = as_alice.post(url, {"last_follow_up": (last_draw - dt.timedelta(days=1)).isoformat()}, follow=True)
    assert "before the last blood draw" in r.content.decode()
    progressed = last_draw + dt.timedelta(days=10)
    r = as_alice.post(url, {"progression_date": progressed.isoformat(),
                            "last_follow_up": (last_draw + dt.timedelta(days=20)).isoformat()}, follow=True)
    body = r.content.decode()
    assert "Outcomes saved." in body
    p.refresh_from_db()
    assert p.progression_date == progressed and p.outcome_recorded_by == alice
    assert p.history.first().history_user == alice
    # Day 0 falls back to the diagnosis (no enrolment, no treatment line): the page says which.
    times = re.search(r'data-testid="survival-times">(.*?)</p>', body, re.S).group(1)
    months = round((progressed - p.diagnosis_date).days / 30.4375, 1)
    assert "diagnosis" in times and f"PFS {months} months (event)" in times
    client.force_login(bob)  # a reviewer may not edit records
    assert client.post(url, {"death_date": ""}).status_code == 403
