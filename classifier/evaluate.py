"""Metrics for CTC calls, and model inference over prepared event sets.

Everything here is plain numpy (no scikit-learn in the stack): ROC AUC is the
Mann-Whitney statistic with ties counted half.
"""

from __future__ import annotations

import numpy as np
import torch

from classifier.data import EventSet
from classifier.model import DualBranchCTC
from classifier.results import CATEGORIES


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    y = np.asarray(y).astype(bool)
    pos, neg = score[y], score[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def roc_curve(y: np.ndarray, score: np.ndarray, max_points: int = 101) -> dict | None:
    """ROC points ``{"fpr", "tpr", "thresholds"}``, from (0, 0) to (1, 1).

    Point k is the call ``score >= thresholds[k]``; the first threshold lies above every
    score (nothing called positive), the last is the lowest score (everything called).
    Tied scores form one step, so the trapezoid area under the points equals
    :func:`roc_auc` (ties counted half). Curves with more than ``max_points`` points are
    thinned to about that many, evenly spaced along the curve's length (corners and
    both ends kept), for compact metadata and plots. None when a class is absent.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    top = float(s[0])
    thr = np.r_[max(1.0, float(np.nextafter(top, np.inf))), s[last]]
    if tpr.size > max_points:
        length = np.r_[0.0, np.cumsum(np.hypot(np.diff(fpr), np.diff(tpr)))]
        marks = np.linspace(0.0, length[-1], max_points)
        keep = np.unique(np.r_[0, np.searchsorted(length, marks), tpr.size - 1].clip(0, tpr.size - 1))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return {"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr],
            "thresholds": [float(v) for v in thr]}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def metrics(y: np.ndarray, p: np.ndarray, category: np.ndarray | None = None,
            category_pred: np.ndarray | None = None, threshold: float = 0.5) -> dict:
    """Binary CTC metrics, plus per-category accuracy of the CTC call when categories
    are known (for a non-CTC category: the fraction correctly called non-CTC)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, float)
    call = (p >= threshold).astype(int)
    tp = int(((call == 1) & (y == 1)).sum())
    tn = int(((call == 0) & (y == 0)).sum())
    fp = int(((call == 1) & (y == 0)).sum())
    fn = int(((call == 0) & (y == 1)).sum())
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    bal = (sens + spec) / 2 if sens is not None and spec is not None else (sens if spec is None else spec)
    out: dict = {
        "n": int(y.size),
        "n_ctc": int(y.sum()),
        "accuracy": float((call == y).mean()) if y.size else None,
        "balanced_accuracy": bal,
        "sensitivity": sens,
        "specificity": spec,
        "roc_auc": roc_auc(y, p),
        "roc": roc_curve(y, p),
        "brier": float(np.mean((p - y) ** 2)) if y.size else None,
        "ece": expected_calibration_error(y, p) if y.size else None,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "threshold": threshold,
    }
    if category is not None and (category >= 0).any():
        per = {}
        head = {}
        for k, name in enumerate(CATEGORIES):
            m = category == k
            if m.any():
                per[name] = {"n": int(m.sum()), "accuracy": float((call[m] == y[m]).mean())}
                if category_pred is not None:
                    head[name] = float((category_pred[m] == k).mean())
        out["per_category"] = per
        if category_pred is not None:
            known = category >= 0
            out["category_head_accuracy"] = float((category_pred[known] == category[known]).mean())
            out["category_head_recall"] = head
    else:
        out["per_category"] = {}
    return out


@torch.inference_mode()
def predict(model: DualBranchCTC, ds: EventSet, batch: int = 256, device: str = "cpu") -> dict[str, np.ndarray]:
    """Calibrated CTC probabilities, category probabilities, gates and embeddings."""
    model.eval()
    outs: dict[str, list[np.ndarray]] = {"p": [], "cat": [], "gate": [], "emb": [], "logit": []}
    for s in range(0, len(ds), batch):
        x = torch.from_numpy(np.ascontiguousarray(ds.crops[s:s + batch], np.float32)).to(device)
        f = torch.from_numpy(ds.feats[s:s + batch]).to(device)
        o = model(x, f)
        outs["logit"].append(o["ctc_logit"].float().cpu().numpy())  # type: ignore[union-attr]
        outs["p"].append(model.calibrated_probability(o["ctc_logit"]).float().cpu().numpy())  # type: ignore[arg-type]
        outs["cat"].append(torch.softmax(o["category_logits"].float(), 1).cpu().numpy())  # type: ignore[union-attr]
        outs["gate"].append(o["gate"].float().cpu().numpy())  # type: ignore[union-attr]
        outs["emb"].append(o["embedding"].float().cpu().numpy())  # type: ignore[union-attr]
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in outs.items()}


def evaluate_set(model: DualBranchCTC, ds: EventSet, threshold: float = 0.5) -> dict:
    pr = predict(model, ds)
    cat_pred = pr["cat"].argmax(1) if len(ds) else np.zeros(0, int)
    return metrics(ds.is_ctc, pr["p"], ds.category, cat_pred, threshold)


#: gate thresholds, midway between the synthetic CTC and leukocyte medians (not tuned on real data)
GATES = {"CK_contrast": 2.5, "CD45_contrast": 0.2, "DAPI_nucleus_mean": 0.3}


def gating_baseline(ds: EventSet, feature_names: list[str]) -> np.ndarray:
    """ACCEPT-style marker gating: CK+ and CD45- and DAPI+ on the event's segmented mask.

    Returns a score in [0, 1] (the call is score >= 0.5): the weakest of the three gate
    margins through a logistic, so that ROC AUC can be computed for gating too. CK and
    CD45 use the stretch-invariant contrast of the cell against the rest of the crop (in
    background SDs); DAPI the nucleus' mean normalised intensity.
    """
    idx = {n: i for i, n in enumerate(feature_names)}
    f = ds.feats
    ck = f[:, idx["CK_contrast"]] - GATES["CK_contrast"]
    cd45 = GATES["CD45_contrast"] - f[:, idx["CD45_contrast"]]
    dapi = (f[:, idx["DAPI_nucleus_mean"]] - GATES["DAPI_nucleus_mean"]) * 10
    dapi = np.where(f[:, idx["has_nucleus"]] > 0, dapi, -10.0)
    margins = np.stack([ck, cd45 * 3, dapi], 1)
    return 1.0 / (1.0 + np.exp(-margins.min(axis=1)))
