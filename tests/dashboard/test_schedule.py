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


@override_settings(DEFAULT_DRAW_INTERVAL_DAYS=28, DRAW_GRACE_DAYS=7, TIME_ZONE="Pacific/Auckland")
def test_due_counts_from_the_local_day_of_the_last_draw():
    from django.utils import timezone

    # 20:00 UTC on 31 January is 09:00 on 1 February in Auckland: the draw's day is 1 February.
    drawn = dt.datetime(2025, 1, 31, 20, tzinfo=dt.UTC)
    assert timezone.localtime(drawn).date() == dt.date(2025, 2, 1)
    assert schedule.due(drawn, 14, today=dt.date(2025, 2, 22)) == schedule.Due(14, dt.date(2025, 2, 15), 0)
    assert schedule.due(drawn, 14, today=dt.date(2025, 2, 23)) == schedule.Due(14, dt.date(2025, 2, 15), 8)
    assert schedule.due(drawn, None, today=dt.date(2025, 3, 9)) == schedule.Due(28, dt.date(2025, 3, 1), 8)
    assert schedule.due(None, 14) == schedule.Due(14, None, 0)


@pytest.mark.django_db
@override_settings(DEFAULT_DRAW_INTERVAL_DAYS=28, DRAW_GRACE_DAYS=7)
def test_the_list_its_overdue_filter_the_patient_page_and_the_cohort_agree(client, alice, team):
    """Issue 12.5: every page asks ``schedule.due`` (the list used to recompute it inline)."""
    from django.utils import timezone

    today = timezone.localdate()
    trial = factories.TrialFactory(draw_interval_days=14)
    # (study id, trial, days since the last draw) -> days overdue: due after 14 (trial) or 28 days,
    # overdue once more than 7 days past that.
    cases = {("IN-GRACE", trial, 21): 0, ("LATE", trial, 22): 8, ("SITE", None, 36): 8, ("ON-TIME", None, 30): 0}
    patients = {}
    for (study_id, in_trial, age), _ in cases.items():
        p = factories.PatientFactory(care_team=team, study_id=study_id, trial=in_trial)
        draw_on(p, today - dt.timedelta(days=age + 30), "baseline")
        draw_on(p, today - dt.timedelta(days=age), "C2D1")
        patients[study_id] = p
    factories.PatientFactory(care_team=team, study_id="NO-DRAWS")
    expected = {study_id: late for (study_id, _, _), late in cases.items()} | {"NO-DRAWS": 0}
    client.force_login(alice)

    listed = {p.study_id: p.days_overdue for p in client.get("/").context["patients"]}
    assert listed == expected
    filtered = {p.study_id for p in client.get("/", {"overdue": "on"}).context["patients"]}
    assert filtered == {s for s, late in expected.items() if late}
    for study_id, p in patients.items():
        assert client.get(f"/patients/{p.pk}/").context["days_overdue"] == expected[study_id], study_id
    # The cohort page's overdue table.
    overdue = schedule.overdue_patients(Patient.objects.filter(care_team=team))
    assert {o.study_id: o.days_overdue for o in overdue} == {s: late for s, late in expected.items() if late}
