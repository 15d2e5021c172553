"""Training: seeded and deterministic, resumable, with temperature scaling on a held-out
synthetic split.

The same seed gives the same synthetic data (each event depends only on its seed and
index), the same batches and augmentations (one torch.Generator), and deterministic
kernels, hence the same weights and metrics on the same machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812
from tqdm import tqdm

from classifier.data import EventSet
from classifier.model import DualBranchCTC, ModelConfig, build


@dataclass
class TrainConfig:
    epochs: int = 12
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    category_weight: float = 0.5
    label_smoothing: float = 0.05
    seed: int = 0
    threads: int = 1
    #: crops moved by up to this many model pixels each batch (0: not moved, the v9 recipe): real
    #: exports centre an event to ~1-2 µm, the generator to 0.8 µm (SD)
    shift_px: int = 0


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _augment(x: torch.Tensor, g: torch.Generator, shift_px: int = 0) -> torch.Tensor:
    """Crop augmentation for robustness to renderings the generator may not cover:
    a dihedral transform (orientation carries no information), a move of up to ``shift_px``
    (edges replicated), per-event, per-channel gain/offset and gamma (display stretches),
    occasional blur (focus) and noise."""
    k = int(torch.randint(0, 4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=g)):
        x = torch.flip(x, dims=(3,))
    if shift_px > 0:  # drawn only then, so that the recipe without it keeps its random stream
        dy, dx = (int(v) for v in torch.randint(-shift_px, shift_px + 1, (2,), generator=g))
        h, w = x.shape[-2:]
        x = F.pad(x, (shift_px,) * 4, mode="replicate")[..., shift_px + dy:shift_px + dy + h,
                                                        shift_px + dx:shift_px + dx + w]
    n, c = x.shape[:2]
    gamma = torch.exp(torch.randn(n, c, 1, 1, generator=g) * 0.2)
    x = torch.where(x > 0, x.clamp_min(1e-6) ** gamma, x)
    gain = torch.exp(torch.randn(n, c, 1, 1, generator=g) * 0.15)
    offset = torch.randn(n, c, 1, 1, generator=g) * 0.03
    x = x * gain + offset
    if float(torch.rand(1, generator=g)) < 0.3:  # a 3x3 binomial blur of the whole batch
        kern = torch.tensor([1.0, 2.0, 1.0])
        kern = (kern[:, None] * kern[None, :] / 16).expand(c, 1, 3, 3).contiguous()
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kern, groups=c)
    x = x + torch.randn(x.shape, generator=g) * float(torch.rand(1, generator=g)) * 0.04
    return x.clamp(-0.5, 1.5)


def _augment_features(f: torch.Tensor, std: torch.Tensor, mean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Attribute noise (0.2 SD) and attribute dropout (10%, to the mean): the texture branch
    must not hinge on a fine balance of correlated attributes, which shift between
    synthetic and real images."""
    noise = torch.randn(f.shape, generator=g) * 0.2 * std
    drop = torch.rand(f.shape, generator=g) < 0.1
    return torch.where(drop, mean.expand_as(f), f + noise)


def loss_fn(out: dict, y: torch.Tensor, cat: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    target = y.float() * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
    loss = F.binary_cross_entropy_with_logits(out["ctc_logit"], target)
    known = cat >= 0
    if known.any():
        loss = loss + cfg.category_weight * F.cross_entropy(
            out["category_logits"][known], cat[known], label_smoothing=cfg.label_smoothing)
    return loss


def init_standardisation(model: DualBranchCTC, feats: np.ndarray) -> None:
    if model.texture is None:
        return
    mu = feats.mean(0)
    sd = feats.std(0)
    model.texture.mean.copy_(torch.from_numpy(mu))
    model.texture.std.copy_(torch.from_numpy(np.where(sd > 1e-6, sd, 1.0).astype(np.float32)))


def fit(
    model: DualBranchCTC,
    train: EventSet,
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
    log: list[dict] | None = None,
    run_key: str = "",
    stop_after: int | None = None,
) -> list[dict]:
    """Train ``model`` on ``train``; resume from ``checkpoint`` if it exists and was written
    by the same run (``run_key``: data, seed and settings), and save to it after every
    epoch. ``stop_after`` ends this invocation after that many epochs (a time-boxed run
    that a later call resumes). Returns the per-epoch log (mean loss)."""
    set_determinism(cfg.seed, cfg.threads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps_per_epoch // 2)) * 0.5 * (1 + math.cos(math.pi * s / total)))
    g = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = list(log or [])
    start = 0
    state = torch.load(checkpoint, weights_only=False) if checkpoint is not None and Path(checkpoint).exists() else None
    if state is not None and state.get("run_key") != run_key:
        print(f"checkpoint {checkpoint} belongs to another run; starting afresh", flush=True)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["gen"])
        start, history = state["epoch"], state["history"]
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
    crops = torch.from_numpy(np.asarray(train.crops))
    feats = torch.from_numpy(train.feats)
    y = torch.from_numpy(train.is_ctc)
    cat = torch.from_numpy(train.category)
    bar = tqdm(total=total, initial=start * steps_per_epoch, desc="train", unit="step", disable=not progress)
    end = cfg.epochs if stop_after is None else min(cfg.epochs, start + stop_after)
    for epoch in range(start, end):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        losses = []
        t0 = time.time()
        for s in range(0, len(train), cfg.batch):
            idx = perm[s:s + cfg.batch]
            if idx.numel() < 2:
                continue
            x = _augment(crops[idx].float(), g, cfg.shift_px)
            f = feats[idx]
            if model.texture is not None:
                f = _augment_features(f, model.texture.std, model.texture.mean, g)
            out = model(x, f)
            loss = loss_fn(out, y[idx], cat[idx], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1)})
        if checkpoint is not None:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(checkpoint) + ".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": g.get_state(), "epoch": epoch + 1, "history": history, "run_key": run_key,
                        "torch_rng": torch.get_rng_state()}, tmp)
            tmp.replace(checkpoint)
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def _logits(model: DualBranchCTC, ds: EventSet, batch: int = 512) -> torch.Tensor:
    model.eval()
    out = []
    for s in range(0, len(ds), batch):
        x = torch.from_numpy(np.asarray(ds.crops[s:s + batch], np.float32))
        out.append(model(x, torch.from_numpy(ds.feats[s:s + batch]))["ctc_logit"])
    return torch.cat(out)


def calibrate_temperature(model: DualBranchCTC, val: EventSet) -> float:
    """Fit the CTC logit's temperature on held-out events (minimum NLL, Guo et al. 2017)."""
    logits = _logits(model, val)
    y = torch.from_numpy(val.is_ctc).float()
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(np.clip(log_t.exp().item(), 0.05, 20.0))
    model.temperature.fill_(t)
    return t


def operating_threshold(model: DualBranchCTC, val: EventSet, target_sensitivity: float = 0.98) -> float:
    """The call threshold: the highest calibrated probability that still calls
    ``target_sensitivity`` of the held-out synthetic CTCs CTC (bounded to 0.1-0.5).

    A screening operating point: every call is reviewed, so a missed CTC costs more
    than one more candidate to look at. Calibration is unchanged; only the call moves.
    """
    logits = _logits(model, val)
    p = torch.sigmoid(logits / model.temperature).numpy()
    pos = np.sort(p[val.is_ctc == 1])
    if pos.size == 0:
        return 0.5
    k = int(np.floor((1.0 - target_sensitivity) * pos.size))
    return float(np.clip(pos[k], 0.1, 0.5))


def new_model(n_features: int, branches: tuple[str, ...], train: EventSet, seed: int, rotations: int = 1
              ) -> DualBranchCTC:
    torch.manual_seed(seed)
    model = build(ModelConfig(n_features=n_features, branches=branches, rotations=rotations))
    init_standardisation(model, train.feats)
    return model


def config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    if not d["shift_px"]:
        del d["shift_px"]  # the run key (resume) and metadata of the recipe before it, unchanged
    return d
