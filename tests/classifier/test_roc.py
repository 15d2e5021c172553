"""ROC points in the metrics (drawn by the dashboard's model page)."""

from __future__ import annotations

import json

import numpy as np

from classifier.evaluate import metrics, roc_auc, roc_curve


def _trapezoid(fpr, tpr) -> float:
    f, t = np.asarray(fpr), np.asarray(tpr)
    return float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2))


def test_roc_is_monotone_from_origin_to_one_and_its_area_is_the_auc():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.4
    score = rng.random(60) + 0.4 * y  # distinct scores: no ties
    roc = roc_curve(y, score)
    fpr, tpr, thr = map(np.asarray, (roc["fpr"], roc["tpr"], roc["thresholds"]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all() and (np.diff(thr) <= 0).all()
    assert abs(_trapezoid(fpr, tpr) - roc_auc(y, score)) < 1e-4
    # each point is the call score >= threshold
    for f, t, th in zip(fpr, tpr, thr, strict=True):
        call = score >= th
        assert abs(call[y].mean() - t) < 1e-4 and abs(call[~y].mean() - f) < 1e-4


def test_tied_scores_make_one_diagonal_step_so_the_area_still_matches():
    y = np.array([1, 0, 1, 0, 1, 0])
    score = np.array([0.9, 0.9, 0.5, 0.5, 0.2, 0.1])
    roc = roc_curve(y, score)
    assert len(roc["fpr"]) == 5  # origin + 4 distinct scores
    assert abs(_trapezoid(roc["fpr"], roc["tpr"]) - roc_auc(y, score)) < 1e-5


def test_large_sets_are_thinned_to_about_a_hundred_points_with_both_ends():
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.3
    score = rng.normal(size=5000) + 1.5 * y
    roc = roc_curve(y, score)
    n = len(roc["fpr"])
    assert 50 <= n <= 105
    assert roc["fpr"][0] == 0.0 and roc["tpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert (np.diff(roc["fpr"]) >= 0).all() and (np.diff(roc["tpr"]) >= 0).all()
    assert abs(_trapezoid(roc["fpr"], roc["tpr"]) - roc_auc(y, score)) < 0.005


def test_metrics_carry_the_roc_as_json_and_none_without_both_classes():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    m = metrics(y, p, threshold=0.5)
    roc = json.loads(json.dumps(m))["roc"]  # plain JSON (no Infinity)
    assert set(roc) == {"fpr", "tpr", "thresholds"} and len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert metrics(np.ones(3), np.array([0.2, 0.5, 0.9]))["roc"] is None


def test_shipped_metadata_has_roc_points_and_a_valid_sha256():
    from classifier.weights import DEFAULT_WEIGHTS, metadata_path, sha256

    meta = json.loads(metadata_path(DEFAULT_WEIGHTS).read_text())
    assert meta["sha256"] == sha256(DEFAULT_WEIGHTS)
    for name in ("synthetic_test", "ctc-dev"):
        m = meta["metrics"][name]
        roc = m["roc"]
        assert roc["fpr"][0] == roc["tpr"][0] == 0.0 and roc["fpr"][-1] == roc["tpr"][-1] == 1.0
        assert len(roc["fpr"]) <= 105
        # no ties among real-valued probabilities here: the area is the stored AUC
        assert abs(_trapezoid(roc["fpr"], roc["tpr"]) - m["roc_auc"]) < 0.01
