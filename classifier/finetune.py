"""Fine-tuning the shipped weights on a lab's handful of labelled events.

With tens of events, plain fine-tuning overfits and forgets. Three guards:

- **replay**: every step mixes the lab's events with synthetic ones (cached), so the
  model keeps what the generator taught it;
- **L2-SP** (Li et al. 2018): a penalty pulling weights toward the starting point;
- **frozen normalisation**: batch-norm statistics stay those of the base model (tiny
  batches would wreck them), and the convolutional stem is frozen.

Deterministic for a seed. The temperature is kept (too few events to re-fit it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from classifier import data
from classifier.model import DualBranchCTC
from classifier.train import TrainConfig, _augment, loss_fn, set_determinism
from classifier.weights import default_contract

REPLAY_EVENTS = 1024
REPLAY_SEED = 7_000


def finetune(
    model: DualBranchCTC,
    ds: data.EventSet,
    seed: int = 0,
    epochs: int | None = None,
    steps: int = 80,
    lr: float = 5e-4,
    l2sp: float = 1e-2,
    real_weight: float = 2.0,
    replay: data.EventSet | None = None,
) -> DualBranchCTC:
    """A fine-tuned copy of ``model`` (``model`` itself is untouched)."""
    if epochs is not None:
        steps = max(1, int(epochs))
    set_determinism(seed, torch.get_num_threads())
    tuned = copy.deepcopy(model)
    if replay is None:
        replay = data.synthetic(REPLAY_EVENTS, REPLAY_SEED, default_contract(), workers=2,
                                cache=Path("artifacts/synth-cache"), progress=False)
    if tuned.spatial is not None:
        for p in tuned.spatial.stages[0].parameters():
            p.requires_grad_(False)
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
    tuned.train()
    for m in tuned.modules():  # keep running statistics and disable dropout noise in BN
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for _ in range(steps):
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
    tuned.eval()
    return tuned
