"""Kaplan–Meier, log-rank, Cox and c-index (patients.outcomes, fitted by lifelines) against a small
worked example computed by hand in the test: product-limit, hypergeometric log-rank, the partial
likelihood maximised directly, Harrell's concordance over pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from patients.outcomes import SurvivalRecord, survival_analysis

# Baseline favorable (x = 0) and unfavorable (x = 1); no tied times, so Efron's and Breslow's
# partial likelihoods agree and the hand computation below is the textbook one.
FAV = [(2, 1), (4, 0), (6, 1), (8, 1), (10, 0), (12, 0)]
UNF = [(1, 1), (3, 1), (5, 0), (7, 1), (9, 1)]


def _record(i: int, t: float, e: int, status: str, arm: str = "A") -> SurvivalRecord:
    return SurvivalRecord(
        patient_id=i, study_id=f"P{i}", trial="T", arm=arm, day0=None, day0_source="enrolment",
        pfs_months=t, pfs_event=bool(e), os_months=t, os_event=bool(e), baseline=status,
        baseline_per_7_5ml=10.0 if status == "unfavorable" else 1.0, ctc0=None, conversion=None, preliminary=False,
    )


def _records() -> list[SurvivalRecord]:
    rows = [("favorable", t, e) for t, e in FAV] + [("unfavorable", t, e) for t, e in UNF]
    return [_record(i, t, e, s) for i, (s, t, e) in enumerate(rows)]


def _km(data):
    s, out = 1.0, {}
    for t in sorted({t for t, _ in data}):
        d = sum(1 for u, e in data if u == t and e)
        n = sum(1 for u, _ in data if u >= t)
        if d:
            s *= 1 - d / n
            out[t] = s
    return out


def test_kaplan_meier_curves_and_medians_match_the_product_limit_by_hand():
    res = survival_analysis(_records(), endpoint="pfs", by="baseline")
    groups = {g["key"]: g for g in res["groups"]}
    for key, data in (("favorable", FAV), ("unfavorable", UNF)):
        g = groups[key]
        curve = dict(zip(g["times"], g["survival"], strict=True))
        assert curve[0.0] == 1.0
        for t, s in _km(data).items():
            assert curve[float(t)] == pytest.approx(s, abs=1e-4)
        assert g["n"] == len(data) and g["events"] == sum(e for _, e in data)
        assert g["censored_times"] == [float(t) for t, e in data if not e]
    # unfavorable: 0.8, 0.6, (5 censored), 0.3 at 7 -> median 7; favorable: 5/6, 0.625, 0.4167 at 8 -> 8.
    assert groups["unfavorable"]["median"] == 7.0
    assert groups["favorable"]["median"] == 8.0
    # At-risk table every 3 months: unfavorable has 5 at 0, 4 at 3 (t >= 3), 2 at 6, 1 at 9, 0 at 12.
    assert res["at_risk_times"][:5] == [0.0, 3.0, 6.0, 9.0, 12.0]
    assert groups["unfavorable"]["at_risk"][:5] == [5, 4, 2, 1, 0]
    assert groups["favorable"]["at_risk"][:5] == [6, 5, 4, 2, 1]
    # Both groups are small: the page says so instead of hiding them.
    assert not groups["favorable"]["reliable"]
    assert any("not a reliable estimate" in n for n in res["notes"])


def test_logrank_matches_the_hypergeometric_computation_by_hand():
    data = [(t, e, 0) for t, e in FAV] + [(t, e, 1) for t, e in UNF]
    o_minus_e = var = 0.0
    for t in sorted({t for t, e, _ in data if e}):
        n = sum(1 for u, _, _ in data if u >= t)
        n1 = sum(1 for u, _, g in data if u >= t and g == 1)
        d = sum(1 for u, e, _ in data if u == t and e)
        d1 = sum(1 for u, e, g in data if u == t and e and g == 1)
        o_minus_e += d1 - d * n1 / n
        var += d * (n1 / n) * (1 - n1 / n) * (n - d) / max(n - 1, 1)
    p = float(stats.chi2.sf(o_minus_e**2 / var, 1))
    res = survival_analysis(_records(), endpoint="os", by="baseline")
    assert res["logrank_p"] == pytest.approx(p, abs=1e-3)


def test_cox_hazard_ratio_and_c_index_match_the_partial_likelihood_and_pairs_by_hand():
    data = [(t, e, 0) for t, e in FAV] + [(t, e, 1) for t, e in UNF]
    t = np.array([d[0] for d in data], float)
    e = np.array([d[1] for d in data], bool)
    x = np.array([d[2] for d in data], float)

    def neg_log_pl(beta: float) -> float:
        return -sum(beta * x[i] - math.log(np.exp(beta * x[t >= t[i]]).sum()) for i in np.flatnonzero(e))

    beta = optimize.minimize_scalar(neg_log_pl, bounds=(-10, 10), method="bounded",
                                    options={"xatol": 1e-10}).x
    res = survival_analysis(_records(), endpoint="pfs", by="baseline")
    cox = res["cox"]
    assert cox["hr"] == pytest.approx(math.exp(beta), rel=1e-3)
    assert cox["hr"] > 1  # the unfavorable group fails sooner
    assert cox["ci95"][0] < cox["hr"] < cox["ci95"][1]
    assert cox["adjusted_for"] == []  # one arm: nothing to adjust for
    # Harrell's c: pairs (i, j) with t_i < t_j and an event at t_i; higher risk (x) at i concordant.
    num = den = 0.0
    for i in range(len(t)):
        for j in range(len(t)):
            if e[i] and t[i] < t[j]:
                den += 1
                num += 1.0 if x[i] > x[j] else 0.5 if x[i] == x[j] else 0.0
    assert res["c_index"] == pytest.approx(num / den, abs=1e-3)


def test_cox_is_adjusted_for_arm_when_there_are_two_arms():
    recs = [_record(r.patient_id, r.pfs_months, int(r.pfs_event), r.baseline, arm="A" if r.patient_id % 2 else "B")
            for r in _records()]
    res = survival_analysis(recs, endpoint="pfs", by="baseline")
    assert res["cox"]["adjusted_for"] == ["arm"]


def test_contract_keys():
    res = survival_analysis(_records(), endpoint="os", by="baseline")
    assert {"endpoint", "by", "groups", "logrank_p", "cox", "c_index", "notes"} <= set(res)
    for g in res["groups"]:
        assert {"name", "n", "events", "median", "median_ci95", "times", "survival", "at_risk"} <= set(g)
    assert set(res["cox"]) >= {"hr", "ci95", "p", "adjusted_for"}
    with pytest.raises(ValueError):
        survival_analysis(_records(), endpoint="dfs")
