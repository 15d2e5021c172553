"""Cohort statistics per trial arm: baseline/follow-up status, conversion, change from baseline."""

from __future__ import annotations

import datetime as dt

from patients import cohort, outcomes
from patients.models import Patient
from tests import factories
from tests.dashboard.builders import add_cells, draw_on


def _patient(team, arm, study_id, counts, timepoints=None):
    p = factories.PatientFactory(care_team=team, trial=arm.trial, arm=arm, study_id=study_id)
    timepoints = timepoints or ["baseline"] + [f"C{i + 2}D1" for i in range(len(counts) - 1)]
    for i, (n, tp) in enumerate(zip(counts, timepoints, strict=True)):
        d = draw_on(p, dt.date(2025, 1, 1) + dt.timedelta(days=21 * i), tp)
        if n is not None:
            add_cells(d, n, 3, seed=i, with_images=False)
    return p


def test_conversions_and_rates_per_arm(team, django_assert_max_num_queries):
    trial = factories.TrialFactory(code="T")
    a, b = factories.TrialArmFactory(trial=trial, code="A"), factories.TrialArmFactory(trial=trial, code="B")
    _patient(team, a, "A1", [8, 2])  # to favorable
    _patient(team, a, "A2", [9, 6])  # persistently unfavorable
    _patient(team, a, "A3", [0, 6])  # to unfavorable (5 with its one unsure call: 4-5, indeterminate until reviewed)
    _patient(team, a, "A4", [6])  # baseline only
    _patient(team, b, "B1", [1, 0, None])  # persistently favorable; last draw not analysed
    with django_assert_max_num_queries(3):
        courses = cohort.patient_courses(Patient.objects.all(), with_lines=True)
    arms = {s.arm: s for s in cohort.arm_summaries(courses)}
    sa = arms["A"]
    assert (sa.patients, sa.with_baseline, sa.baseline_unfavorable, sa.with_follow_up) == (4, 4, 3, 3)
    assert (sa.to_favorable, sa.persistent_unfavorable, sa.to_unfavorable) == (1, 1, 1)
    assert sa.conversion_rate == 0.5
    assert sa.reverse_rate == 1.0
    assert arms["B"].persistent_favorable == 1 and arms["B"].conversion_rate is None
    assert sa.label == "T / A"


def test_baseline_is_the_labelled_draw_not_the_first(team):
    arm = factories.TrialArmFactory()
    p = _patient(team, arm, "X", [1, 8, 2], timepoints=["screening", "baseline", "C3D1"])
    (course,) = cohort.patient_courses(Patient.objects.filter(pk=p.pk))
    assert course.baseline.timepoint == "baseline"
    assert course.follow_up.timepoint == "C3D1"
    assert course.conversion == cohort.TO_FAVORABLE
    assert course.change_pct == -75.0


def test_change_from_baseline_caps_rises_and_handles_zero():
    assert cohort.change_from_baseline(4, 2) == -50.0
    assert cohort.change_from_baseline(1, 10) == cohort.CHANGE_CAP
    assert cohort.change_from_baseline(0, 0) == 0.0
    assert cohort.change_from_baseline(0, 3) == cohort.CHANGE_CAP


def test_waterfall_and_csv(team):
    arm = factories.TrialArmFactory()
    _patient(team, arm, "W1", [8, 2])
    _patient(team, arm, "W2", [2, 4])
    courses = cohort.patient_courses(Patient.objects.all())
    bars = cohort.waterfall(courses)
    assert [b[0] for b in bars] == ["W2", "W1"]  # largest rise first
    rows = list(outcomes.draws_csv_rows(courses))
    assert rows[0][:3] == ["study_id", "cancer_type", "cutoff_per_7_5ml"]
    assert len(rows) == 1 + 4
    assert rows[1][13] == 1  # the baseline row is marked
