"""Fine-tuning the shipped weights on a lab's handful of labelled events.

With tens of events, plain fine-tuning overfits and forgets (measured: leave-one-out on
ctc-dev fell from 0.95 to 0.79 balanced accuracy when every layer was tuned). Guards:

- **only the top is tuned**: the fusion gate, the embedding and the heads; both
  branches (CNN and attribute MLP) and their batch-norm statistics stay frozen;
- **replay**: every step mixes the lab's events with synthetic ones (cached), so the
  model keeps what the generator taught it;
- **L2-SP** (Li et al. 2018): a penalty pulling weights toward the starting point;
- **WiSE-FT** (Wortsman et al. 2022): the result is the midpoint, in weight space, of the
  base and the fine-tuned weights, which keeps the base model's robustness.

Deterministic for a seed. The temperature and the call threshold are kept (too few
events to re-fit them). How the recipe was chosen is in docs/model-card.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classifier import data
from classifier.model import DualBranchCTC, LabHead, attach_lab_head
from classifier.train import TrainConfig, _augment, loss_fn, set_determinism
from classifier.weights import default_contract

REPLAY_EVENTS = 1024
REPLAY_SEED = 7_000


def finetune(
    model: DualBranchCTC,
    ds: data.EventSet,
    seed: int = 0,
    epochs: int | None = None,
    steps: int = 60,
    lr: float = 1e-3,
    l2sp: float = 1.0,
    real_weight: float = 1.0,
    wise_alpha: float = 0.5,
    replay: data.EventSet | None = None,
    progress: Callable[[float], None] | None = None,
) -> DualBranchCTC:
    """A fine-tuned copy of ``model`` (``model`` itself is untouched).

    ``progress``, when given, is called with the fraction of the steps done (0-1) after each step.
    """
    if epochs is not None:
        steps = max(1, int(epochs))
    set_determinism(seed, torch.get_num_threads())
    tuned = copy.deepcopy(model)
    if replay is None:
        replay = data.synthetic(REPLAY_EVENTS, REPLAY_SEED, default_contract(), workers=2,
                                cache=Path("artifacts/synth-cache"), progress=False)
    top = [tuned.reduce, tuned.head_ctc, tuned.head_category] + ([tuned.gate] if tuned.gate is not None else [])
    for p in tuned.parameters():
        p.requires_grad_(False)
    for module in top:
        for p in module.parameters():
            p.requires_grad_(True)
    params = [p for p in tuned.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cfg = TrainConfig(seed=seed)
    g = torch.Generator().manual_seed(seed)
    real_x = torch.from_numpy(np.asarray(ds.crops, np.float32))
    real_f = torch.from_numpy(ds.feats)
    real_y = torch.from_numpy(ds.is_ctc)
    real_c = torch.from_numpy(ds.category)
    rep_x = torch.from_numpy(np.asarray(replay.crops))
    tuned.eval()  # frozen branches: running statistics kept, no dropout below the top
    tuned.reduce.train()
    for step in range(steps):
        ri = torch.randint(0, len(ds), (min(len(ds), 64),), generator=g)
        si = torch.randint(0, len(replay), (64,), generator=g)
        xr = _augment(real_x[ri], g)
        xs = _augment(rep_x[si].float(), g)
        out_r = tuned(xr, real_f[ri])
        out_s = tuned(xs, torch.from_numpy(replay.feats[si.numpy()]))
        loss = real_weight * loss_fn(out_r, real_y[ri], real_c[ri], cfg) + loss_fn(
            out_s, torch.from_numpy(replay.is_ctc[si.numpy()]), torch.from_numpy(replay.category[si.numpy()]), cfg)
        loss = loss + l2sp * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress((step + 1) / steps)
    with torch.no_grad():  # WiSE-FT: interpolate toward the base weights
        for p, a in zip(params, anchor, strict=True):
            p.copy_((1.0 - wise_alpha) * a + wise_alpha * p)
    tuned.eval()
    return tuned


# --- the lab head and the choice between adaptations (issue 13, point 7) -------------------------
#
# Measured on real events from other labs: the full fine-tune above moved balanced accuracy
# 0.68 -> 0.63 on 20 test events, while a plain logistic regression on the model's own
# attributes reached 0.98. So ``adapt`` fits such a probe as a head (:class:`LabHead`) and
# lets stratified cross-validation on the lab's own folder choose between the base model,
# the head, the full fine-tune and both; the base is kept unless a candidate wins by a margin.

CANDIDATES = ("base", "head", "finetune", "finetune+head")
HEAD_C = (0.003, 0.01, 0.03, 0.1, 1.0)  # inverse L2 strengths tried for the head (sum-of-losses scale, as sklearn's C)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (``x`` already standardised).

    Minimises ``sum(v * logloss) + ||w||^2 / (2c)`` with class-balanced weights ``v``
    (``n / (2 n_class)``), so that P = 0.5 is the balanced-accuracy operating point whatever
    the lab's CTC fraction; the intercept is not penalised. Newton on ~100 columns converges
    in a few iterations and is deterministic (no scikit-learn here).
    """
    n, d = x.shape
    n_pos = max(1.0, float(y.sum()))
    v = np.where(y > 0.5, n / (2 * n_pos), n / (2 * max(1.0, n - n_pos)))
    xa = np.c_[x, np.ones(n)]
    w = np.zeros(d + 1)
    reg = np.full(d + 1, 1.0 / c)
    reg[-1] = 1e-8
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ w, -30, 30)))
        grad = xa.T @ (v * (p - y)) + reg * w
        hess = (xa * (v * p * (1 - p))[:, None]).T @ xa + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def head_inputs(model: DualBranchCTC, ds: data.EventSet) -> np.ndarray:
    """``[attributes, embedding, base logit]`` per event, as :meth:`LabHead.inputs` builds them."""
    from classifier.evaluate import predict

    plain = _without_head(model)
    pr = predict(plain, ds)
    with torch.no_grad():
        z = LabHead(plain.lab_head_dim()).inputs(torch.from_numpy(ds.feats), torch.from_numpy(pr["emb"]),
                                                 torch.from_numpy(pr["logit"]))
    return z.numpy().astype(np.float64)


class _HeadFit:
    """Standardisation + logistic weights fitted on head inputs; predicts P(CTC)."""

    def __init__(self, z: np.ndarray, y: np.ndarray, c: float) -> None:
        self.mean = z.mean(0)
        std = z.std(0)
        self.std = np.where(std > 1e-6, std, 1.0)
        self.w, self.b = fit_logistic(self._std(z), y.astype(np.float64), c)

    def _std(self, z: np.ndarray) -> np.ndarray:
        return np.clip((z - self.mean) / self.std, -8.0, 8.0)

    def predict(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self._std(z) @ self.w + self.b, -30, 30)))

    def install(self, model: DualBranchCTC) -> DualBranchCTC:
        out = _without_head(model)
        head = attach_lab_head(out)
        with torch.no_grad():
            head.mean.copy_(torch.from_numpy(self.mean).float())
            head.std.copy_(torch.from_numpy(self.std).float())
            head.linear.weight.copy_(torch.from_numpy(self.w).float()[None])
            head.linear.bias.fill_(self.b)
        out.eval()
        return out


def fit_head(model: DualBranchCTC, ds: data.EventSet, c: float = 1.0) -> DualBranchCTC:
    """A copy of ``model`` with a lab head fitted on every event of ``ds`` (no selection)."""
    return _HeadFit(head_inputs(model, ds), ds.is_ctc.astype(int), c).install(model)


def _without_head(model: DualBranchCTC) -> DualBranchCTC:
    out = copy.deepcopy(model)
    out.lab_head = None
    return out


def _balanced_accuracy(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    call = p >= threshold
    pos, neg = y == 1, y == 0
    return float((call[pos].mean() + (~call[neg]).mean()) / 2)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint test index sets, each class spread evenly over them."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.array(sorted(f)) for f in folds]


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising balanced accuracy (midpoint of the widest best gap)."""
    s = np.unique(p)
    cuts = np.r_[s[0] - 1e-6, (s[:-1] + s[1:]) / 2, s[-1] + 1e-6] if s.size else np.array([0.5])
    scores = np.array([_balanced_accuracy(y, p, t) for t in cuts])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(np.clip(cuts[best[len(best) // 2]], 0.02, 0.98))


@dataclass
class Adapted:
    """The chosen model, its operating threshold, and how it was chosen (for the metadata)."""

    model: DualBranchCTC
    threshold: float
    report: dict = field(default_factory=dict)


def adapt(
    model: DualBranchCTC,
    ds: data.EventSet,
    base_threshold: float = 0.5,
    seed: int = 0,
    folds: int = 5,
    steps: int = 60,
    replay: data.EventSet | None = None,
    candidates: tuple[str, ...] = CANDIDATES,
    margin: float | None = None,
    min_events_for_threshold: int = 40,
    progress: Callable[[float, str], None] | None = None,
) -> Adapted:
    """Adapt ``model`` to a lab's labelled events, choosing the adaptation by cross-validation.

    Candidates: the base model unchanged, a lab head (:class:`LabHead`) on the frozen
    model, the full fine-tune (:func:`finetune`) and the fine-tune with a head. Each is
    scored by stratified k-fold CV on ``ds``: balanced accuracy at its operating threshold
    (the base threshold; 0.5 for a head, whose output is a fitted probability), ties broken
    by log-loss. A candidate replaces the base only when its CV balanced accuracy beats the
    base's by ``margin`` (default: one event of each class flipped, at least 0.02; 0.12 for
    ctc-dev's 7 + 11), so that a handful of events cannot make the model worse. With
    ``min_events_for_threshold`` events or more, the threshold is re-picked on the chosen
    candidate's CV probabilities.

    ``progress``, when given, is called with the fraction of the work done (0-1) and a few words
    on the step (``"cross-validation fold 2 of 5"``, ``"final fit: head C=0.1"``): the folds and
    the final fit are equal shares, and a fine-tune inside one reports its steps.
    """
    from classifier.evaluate import predict

    def report_progress(done: float, what: str) -> None:
        if progress is not None:
            progress(min(1.0, max(0.0, done)), what)

    y = ds.is_ctc.astype(int)
    n, n_pos = len(y), int(y.sum())
    k = min(folds, n_pos, n - n_pos)
    report: dict = {"n": n, "n_ctc": n_pos, "folds": k, "candidates": {}}
    if k < 2:
        report.update(chosen="base", reason="fewer than 2 events of a class: nothing to cross-validate")
        return Adapted(_without_head(model), base_threshold, report)
    # one event of each class flipped: the smallest gain CV can show, so noise alone cannot win
    margin = max(0.02, 0.5 / n_pos + 0.5 / (n - n_pos)) if margin is None else margin
    report["margin"] = margin
    if replay is None and any(c.startswith("finetune") for c in candidates):
        report_progress(0.0, "the synthetic replay set")  # cached after the first build
        replay = data.synthetic(REPLAY_EVENTS, REPLAY_SEED, default_contract(), workers=2,
                                cache=Path("artifacts/synth-cache"), progress=False)
    base = _without_head(model)
    z_base = head_inputs(base, ds)
    cv: dict[str, np.ndarray] = {"base": predict(base, ds)["p"]}
    names = ["base"] + [f"head C={c:g}" for c in HEAD_C if "head" in candidates]
    if "finetune" in candidates:
        names.append("finetune")
    if "finetune+head" in candidates:
        names += [f"finetune+head C={c:g}" for c in HEAD_C]
    for name in names[1:]:
        cv[name] = np.zeros(n)
    shares = k + 1  # each fold, then the final fit on every event
    for fold, test in enumerate(stratified_folds(y, k, seed)):
        what = f"cross-validation fold {fold + 1} of {k}"
        report_progress(fold / shares, what)
        train = np.setdiff1d(np.arange(n), test)
        for c in HEAD_C:
            if f"head C={c:g}" in cv:
                cv[f"head C={c:g}"][test] = _HeadFit(z_base[train], y[train], c).predict(z_base[test])
        if "finetune" in cv or any(m.startswith("finetune+head") for m in cv):
            tuned = finetune(base, ds.subset(train), seed=seed, steps=steps, replay=replay,
                             progress=lambda f, fold=fold, what=what: report_progress((fold + f) / shares, what))
            if "finetune" in cv:
                cv["finetune"][test] = predict(tuned, ds.subset(test))["p"]
            z_t = head_inputs(tuned, ds)
            for c in HEAD_C:
                if f"finetune+head C={c:g}" in cv:
                    cv[f"finetune+head C={c:g}"][test] = _HeadFit(z_t[train], y[train], c).predict(z_t[test])
    thr = {name: (0.5 if "head" in name else base_threshold) for name in cv}
    for name, p in cv.items():
        report["candidates"][name] = {"cv_balanced_accuracy": round(_balanced_accuracy(y, p, thr[name]), 4),
                                      "cv_log_loss": round(_log_loss(y, p), 4), "threshold": thr[name]}
    scores = report["candidates"]
    best = max(cv, key=lambda m: (scores[m]["cv_balanced_accuracy"], -scores[m]["cv_log_loss"]))
    if best != "base" and scores[best]["cv_balanced_accuracy"] < scores["base"]["cv_balanced_accuracy"] + margin:
        best = "base"
    report["chosen"] = best
    threshold = thr[best]
    if best != "base" and n >= min_events_for_threshold:
        threshold = best_threshold(y, cv[best])
        report["threshold_from"] = "cross-validated probabilities (max balanced accuracy)"
    else:
        report["threshold_from"] = "base threshold" if best == "base" else "0.5 (few events)"
    report["threshold"] = threshold
    # the final fit, on every event
    report_progress(k / shares, f"final fit: {best}")
    if best == "base":
        out = base
    elif best.startswith("head"):
        out = _HeadFit(z_base, y, float(best.split("C=")[1])).install(base)
    else:
        out = finetune(base, ds, seed=seed, steps=steps, replay=replay,
                       progress=lambda f: report_progress((k + f) / shares, f"final fit: {best}"))
        if best.startswith("finetune+head"):
            out = _HeadFit(head_inputs(out, ds), y, float(best.split("C=")[1])).install(out)
    report_progress(1.0, f"final fit: {best}")
    return Adapted(out, threshold, report)
