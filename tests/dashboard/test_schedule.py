"""The visit schedule (overdue draws) and the CTC status sentence."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings

from patients import schedule
from patients.models import Patient
from tests import factories
from tests.dashboard.builders import draw_on


@pytest.mark.parametrize(("points", "expected"), [
    ([], "No analysed draws yet."),
    ([("baseline", 7.0)], "Unfavorable at baseline."),
    ([("baseline", 7.0), ("C3D1", 1.0), ("C5D1", 0.0)], "Unfavorable at baseline, favorable since C3D1."),
    ([("baseline", 1.0), ("C3D1", 6.0), ("C6D1", 2.0)],
     "Favorable at baseline, unfavorable at C3D1, favorable since C6D1."),
    ([("baseline", 9.0), ("C3D1", 5.0), ("C5D1", 12.0)], "Persistently unfavorable since baseline (3 draws)."),
    ([("baseline", 9.0), ("C2D1", 5.0), ("C3D1", 1.0)], "Unfavorable at baseline and C2D1, favorable since C3D1."),
    ([("baseline", 1.0), ("C2D1", 5.0), ("C3D1", 7.0), ("C4D1", 8.0), ("C6D1", 0.0)],
     "Favorable at baseline, unfavorable from C2D1 to C4D1, favorable since C6D1."),
    ([("Baseline", 9.0), ("C2D1", None), ("C3D1", 0.0)], "Unfavorable at baseline, favorable since C3D1."),
])
def test_status_sentence_reads_like_a_clinician_would_say_it(points, expected):
    assert schedule.status_sentence(points, cutoff=5) == expected


def test_the_cutoff_itself_is_unfavorable():
    # CellSearch: unfavorable at or above the cut-off (>=5 in metastatic breast).
    assert schedule.ctc_status(5.0, 5) == "unfavorable"
    assert schedule.ctc_status(4.9, 5) == "favorable"
    assert schedule.ctc_status(None, 5) is None


def test_trend_compares_with_the_previous_draw():
    assert schedule.trend(3, 1) == "up"
    assert schedule.trend(1, 3) == "down"
    assert schedule.trend(2, 2) == "same"
    assert schedule.trend(2, None) == ""


@override_settings(DEFAULT_DRAW_INTERVAL_DAYS=28, DRAW_GRACE_DAYS=7)
def test_overdue_only_after_the_grace_period():
    last = dt.date(2025, 1, 1)
    assert schedule.interval_days(None) == 28
    assert schedule.interval_days(21) == 21
    assert schedule.next_due(last, 21) == dt.date(2025, 1, 22)
    assert schedule.days_overdue(last, 21, today=dt.date(2025, 1, 29)) == 0  # 7 days late: still in grace
    assert schedule.days_overdue(last, 21, today=dt.date(2025, 1, 30)) == 8
    assert schedule.days_overdue(None, 21, today=dt.date(2025, 6, 1)) == 0


@override_settings(DEFAULT_DRAW_INTERVAL_DAYS=28, DRAW_GRACE_DAYS=7)
def test_overdue_patients_uses_the_trial_interval(team, django_assert_max_num_queries):
    today = dt.date(2025, 3, 1)
    trial = factories.TrialFactory(draw_interval_days=14)
    in_trial = factories.PatientFactory(care_team=team, trial=trial, study_id="T-1")
    outside = factories.PatientFactory(care_team=team, study_id="O-1")
    factories.PatientFactory(care_team=team, study_id="NO-DRAWS")
    draw_on(in_trial, dt.date(2025, 2, 1), "baseline")  # due 15 Feb: 14 days late
    draw_on(outside, dt.date(2025, 2, 1), "baseline")  # due 1 Mar: on time
    with django_assert_max_num_queries(1):
        overdue = schedule.overdue_patients(Patient.objects.all(), today=today)
    assert [(o.study_id, o.days_overdue, o.due) for o in overdue] == [("T-1", 14, dt.date(2025, 2, 15))]
