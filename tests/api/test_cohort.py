"""Cohort summary per trial/arm through the API (statistics from patients.cohort)."""

from __future__ import annotations

import datetime as dt

import pytest

from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db


def _draw(patient, month, calls, timepoint):
    d = factories.BloodDrawFactory(patient=patient, drawn_at=dt.datetime(2025, month, 1, tzinfo=dt.UTC),
                                   timepoint=timepoint)
    up = factories.ImagingUploadFactory(draw=d)
    for c in calls:
        factories.CellEventFactory(upload=up, call=c, ctc_probability=0.9 if c == "ctc" else 0.1)
    recompute_summary(d)


def test_cohort_conversion_per_arm(as_alice, as_bob, team, django_assert_max_num_queries):
    a = factories.TrialArmFactory(code="A")
    b = factories.TrialArmFactory(code="B", trial=a.trial)
    p1 = factories.PatientFactory(care_team=team, trial=a.trial, arm=a)  # 6 -> 1: converts to favorable
    _draw(p1, 1, ["ctc"] * 6, "baseline")
    _draw(p1, 3, ["ctc"], "C3D1")
    p2 = factories.PatientFactory(care_team=team, trial=a.trial, arm=b)  # 7 -> 8: persistently unfavorable
    _draw(p2, 1, ["ctc"] * 7, "baseline")
    _draw(p2, 3, ["ctc"] * 8, "C3D1")
    with django_assert_max_num_queries(10):
        r = as_alice.get(f"/api/cohort/?trial={a.trial.code}")
    assert r.status_code == 200
    body = r.json()
    assert body["patients"] == 2
    arms = {x["arm"]: x for x in body["arms"]}
    assert arms["A"]["to_favorable"] == 1 and arms["A"]["conversion_rate"] == 1.0
    assert arms["B"]["persistent_unfavorable"] == 1 and arms["B"]["conversion_rate"] == 0.0
    assert {w["study_id"] for w in body["waterfall"]} == {p1.study_id, p2.study_id}
    assert as_bob.get("/api/cohort/").status_code == 403  # reviewers have no cohort view
