"""The cohort survival page (issue 14): curves, at-risk table, medians, log-rank, Cox; scoped; CSV."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests import factories
from tests.api.test_survival import _cohort_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def cohort(team, other_team):
    arm_a = factories.TrialArmFactory(code="A")
    arm_b = factories.TrialArmFactory(code="B", trial=arm_a.trial)
    for i in range(12):
        _cohort_patient(team, arm_a if i % 2 else arm_b, 12, 2 + i * 0.4, event=i < 10, follow_count=6)
    for i in range(6):
        _cohort_patient(team, arm_a if i % 2 else arm_b, 1, 6 + i * 0.6, event=i < 3, follow_count=0)
    for _ in range(4):  # charlie's: never in alice's curves
        _cohort_patient(other_team, arm_a, 30, 0.5, event=True, follow_count=30)
    return arm_a.trial


def _figure(body: str) -> dict:
    return json.loads(re.search(r'<script id="fig-km" type="application/json">(.*?)</script>', body, re.S).group(1))


def test_survival_page_draws_curves_at_risk_medians_and_tests(as_alice, cohort):
    r = as_alice.get("/cohort/survival/", {"trial": cohort.code, "endpoint": "pfs", "by": "baseline"})
    assert r.status_code == 200
    body = r.content.decode()
    fig = _figure(body)
    curves = [t for t in fig["data"] if t["mode"] == "lines"]
    assert len(curves) == 2 and all(c["line"]["shape"] == "hv" for c in curves)
    assert {html.unescape(c["name"]).split(" (")[0] for c in curves} == {"Baseline < cut-off", "Baseline ≥ cut-off"}
    # 12 + 6 of alice's patients; charlie's 4 never enter a curve.
    assert sum(int(re.search(r"n=(\d+)", c["name"]).group(1)) for c in curves) == 18
    at_risk = re.search(r'data-testid="at-risk".*?</table>', body, re.S).group(0)
    assert "Number at risk" in at_risk and ">12</td>" in at_risk and ">6</td>" in at_risk
    assert re.search(r'data-testid="logrank">p [=<] \d', body)
    assert re.search(r'data-testid="cox">HR \d', body) and "adjusted for trial arm" in body
    assert re.search(r'data-testid="c-index">0\.\d\d', body)
    # 6 favorable patients with 3 events: shown, flagged as not reliable.
    assert "not reliable" in body and "not a reliable estimate" in body
    assert 'href="/cohort/survival/"' in body and ">Survival</a>" in body  # in the navigation


def test_survival_page_groupings_and_export(as_alice, client, bob, cohort):
    body = as_alice.get("/cohort/survival/", {"by": "ctc0", "endpoint": "os"}).content.decode()
    assert "CTC0 at first follow-up" in body
    body = as_alice.get("/cohort/survival/", {"by": "conversion", "follow_up": "C9D1"}).content.decode()
    assert 'data-testid="no-curves"' in body
    csv = as_alice.get("/cohort/survival/export.csv").getvalue().decode()
    lines = csv.strip().splitlines()
    assert lines[0].startswith("study_id,trial,arm,day0") and len(lines) == 1 + 18
    client.force_login(bob)  # reviewer: no cohort right
    assert client.get("/cohort/survival/").status_code == 403
