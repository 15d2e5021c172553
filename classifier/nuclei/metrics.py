"""Instance-segmentation metrics for nuclei, as the issue defines them.

- **Detection**: a predicted object is a true positive when its centroid lies inside a true
  nucleus that no other predicted object has claimed (one to one: a nucleus split in two gives
  one TP and one FP; two nuclei merged into one object give one TP and one FN).
- **IoU 0.5**: predicted and true objects matched one to one at IoU >= 0.5. At that threshold the
  match is unique (two objects with IoU > 0.5 to the same third one would have to overlap each
  other by more than half), so the greedy matching here equals the Hungarian one; IoU exactly 0.5
  counts as a match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Scores:
    """Counts and rates for one image or a pool of images."""

    n_true: int
    n_pred: int
    tp: int  # detection true positives
    tp_iou: int  # matches at IoU >= 0.5

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else float(self.n_true == 0)

    @property
    def recall(self) -> float:
        return self.tp / self.n_true if self.n_true else float(self.n_pred == 0)

    @property
    def f1(self) -> float:
        return _f1(self.tp, self.n_true, self.n_pred)

    @property
    def f1_iou50(self) -> float:
        return _f1(self.tp_iou, self.n_true, self.n_pred)

    def __add__(self, other: Scores) -> Scores:
        return Scores(self.n_true + other.n_true, self.n_pred + other.n_pred, self.tp + other.tp,
                      self.tp_iou + other.tp_iou)

    def as_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = asdict(self)
        d.update(precision=round(self.precision, 4), recall=round(self.recall, 4), f1=round(self.f1, 4),
                 f1_iou50=round(self.f1_iou50, 4))
        return d


def _f1(tp: int, n_true: int, n_pred: int) -> float:
    return 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    ids, inv = np.unique(labels.ravel(), return_inverse=True)
    if ids[0] != 0:  # no background pixel at all
        inv = inv + 1
        ids = np.concatenate([[0], ids])
    return inv.reshape(labels.shape), ids.size - 1


def _under_centroids(t: np.ndarray, p: np.ndarray, npred: int) -> tuple[np.ndarray, np.ndarray]:
    """The (compact) true label under each predicted object's centroid (0: background), and the
    predicted objects' areas (index 0 = background)."""
    flat = p.ravel()
    area_p = np.bincount(flat, minlength=npred + 1).astype(np.float64)
    yy, xx = np.indices(p.shape)
    cy = np.bincount(flat, weights=yy.ravel(), minlength=npred + 1) / np.maximum(area_p, 1)
    cx = np.bincount(flat, weights=xx.ravel(), minlength=npred + 1) / np.maximum(area_p, 1)
    iy = np.clip(np.rint(cy[1:]).astype(int), 0, p.shape[0] - 1)
    ix = np.clip(np.rint(cx[1:]).astype(int), 0, p.shape[1] - 1)
    return t[iy, ix], area_p


def _overlaps(t: np.ndarray, p: np.ndarray, npred: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contingency table of (compact) true and predicted labels, as parallel arrays: true
    label, predicted label and the pixels they share, for every pair that overlaps."""
    both = (t > 0) & (p > 0)
    pair = t[both].astype(np.int64) * (npred + 1) + p[both]
    keys, inter = np.unique(pair, return_counts=True)
    return keys // (npred + 1), keys % (npred + 1), inter


def score(true: np.ndarray, pred: np.ndarray) -> Scores:
    """Detection and IoU-0.5 counts of ``pred`` against ``true`` (int label images, 0 = background)."""
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: {true.shape} vs {pred.shape}")
    t, nt = _compact(true)
    p, npred = _compact(pred)
    if nt == 0 or npred == 0:
        return Scores(nt, npred, 0, 0)
    # detection: the true label under each predicted centroid, each true label claimed once
    hit, area_p = _under_centroids(t, p, npred)
    tp = int(np.unique(hit[hit > 0]).size)
    # IoU: contingency table of (true, pred) pixel pairs
    ti, pi, inter = _overlaps(t, p, npred)
    area_t = np.bincount(t.ravel(), minlength=nt + 1)
    iou = inter / (area_t[ti] + area_p[pi] - inter)
    good = iou >= 0.5
    # unique at > 0.5; at exactly 0.5 a tie is possible: count each side once (greedy)
    tp_iou = min(np.unique(ti[good]).size, np.unique(pi[good]).size)
    return Scores(nt, npred, tp, int(tp_iou))


#: a true nucleus covered less than this much by any one predicted object was not found at all
FOUND_COVER = 0.2


def errors(true: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """What the detection errors of ``pred`` are, for diagnosis (same matching as :func:`score`).

    Misses (true nuclei no predicted centroid claims): ``merged`` (the object covering most of
    the nucleus is claimed by a neighbouring nucleus: two nuclei in one object), ``not_found``
    (no object covers :data:`FOUND_COVER` of it) and ``off_centre`` (covered by an object whose
    centroid lies outside every nucleus). False objects: ``split`` (the centroid lies in a
    nucleus another object already claims: one nucleus in several objects) and ``background``
    (the centroid lies outside every nucleus). ``merged + not_found + off_centre`` is the number
    of false negatives and ``split + background`` the number of false positives.
    """
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: {true.shape} vs {pred.shape}")
    t, nt = _compact(true)
    p, npred = _compact(pred)
    out = {"merged": 0, "not_found": 0, "off_centre": 0, "split": 0, "background": 0}
    if npred == 0:
        out["not_found"] = nt
        return out
    hit, _ = _under_centroids(t, p, npred)
    # false objects: every object after the first whose centroid lies in a nucleus is a split
    inside = hit[hit > 0]
    out["background"] = int(np.count_nonzero(hit == 0))
    out["split"] = int(inside.size - np.unique(inside).size)
    if nt == 0:
        return out
    claimed = np.zeros(nt + 1, bool)
    claimed[inside] = True
    # each missed nucleus: the object covering most of it, and how much
    ti, pi, inter = _overlaps(t, p, npred)
    if not ti.size:  # no object touches any nucleus
        out["not_found"] = int(np.count_nonzero(~claimed[1:]))
        return out
    order = np.lexsort((inter, ti))  # by nucleus, then overlap: each nucleus's largest is its last
    ti, pi, inter = ti[order], pi[order], inter[order]
    last = np.r_[np.flatnonzero(np.diff(ti)), ti.size - 1]
    best_obj = np.zeros(nt + 1, np.int64)
    best_cover = np.zeros(nt + 1, np.int64)
    best_obj[ti[last]] = pi[last]
    best_cover[ti[last]] = inter[last]
    area_t = np.bincount(t.ravel(), minlength=nt + 1)
    for k in np.flatnonzero(~claimed[1:]) + 1:
        if best_cover[k] < FOUND_COVER * area_t[k]:
            out["not_found"] += 1
        elif hit[best_obj[k] - 1] > 0:
            out["merged"] += 1
        else:
            out["off_centre"] += 1
    return out
