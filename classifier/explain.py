"""Explanations for every event, computed for a whole batch in one backward pass.

- **Grad-CAM** (Selvaraju et al. 2017) of the spatial branch at its 12x12 stage, for the
  side of the call that was made: evidence *for* CTC when called CTC, *against* when not.
- **Branch contributions**: the fusion gate's per-sample weights.
- **Top attributes**: gradient x (input - training mean) of the CTC logit with respect to
  the attribute vector -- a first-order, signed estimate of how much each attribute
  moved the CTC logit away from an average event (> 0: toward CTC).

One forward and one backward pass for the batch: the sum of per-sample logits has
per-sample gradients because nothing in the model mixes samples at inference (batch
norm uses running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from classifier.model import DualBranchCTC


@dataclass
class BatchExplanation:
    ctc_logit: np.ndarray  # (N,) raw logit
    probability: np.ndarray  # (N,) calibrated
    category_probabilities: np.ndarray  # (N, K)
    embedding: np.ndarray  # (N, E)
    gate: np.ndarray  # (N, 2) spatial, texture
    heatmap: np.ndarray | None  # float32 (N, S, S) in [0, 1], None without a spatial branch
    attribute_effect: np.ndarray | None  # (N, F) signed effect on the CTC logit


def explain_batch(model: DualBranchCTC, x: torch.Tensor, f: torch.Tensor, with_explanations: bool = True,
                  autocast: bool = False) -> BatchExplanation:
    """Forward (and, with explanations, one backward) pass for a batch."""
    model.eval()
    if not with_explanations:
        with torch.inference_mode(), torch.autocast(x.device.type, enabled=autocast):
            out = model(x, f)
        return _pack(model, out, None, None)
    f = f.detach().clone().requires_grad_(model.texture is not None)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=autocast):
        out = model(x, f, keep_cam=True)
        logit = out["ctc_logit"]
        cams = list(out["cam"] or [])  # one per view of the crop, view k turned k quarter turns
        if not all(c.requires_grad for c in cams):
            cams = []
        targets = [*cams, *([f] if model.texture is not None else [])]
        grads = torch.autograd.grad(logit.float().sum(), targets, allow_unused=True) if targets else []
    g_cams = list(grads[:len(cams)])
    g_f = grads[-1] if model.texture is not None and grads else None
    heat = None
    if cams and all(g is not None for g in g_cams):
        heat = _grad_cam(logit.detach(), [c.detach() for c in cams], g_cams, x.shape[-2:])
    effect = None
    if g_f is not None and model.texture is not None:
        effect = (g_f.float() * (f.detach().float() - model.texture.mean)).cpu().numpy()
    return _pack(model, out, heat, effect)


def _grad_cam(logit: torch.Tensor, acts: list[torch.Tensor], grads: list[torch.Tensor], size: torch.Size
              ) -> np.ndarray:
    """Grad-CAM maps (N, S, S) in [0, 1] for the side of each call. A spatial branch that sees
    quarter turns of the crop (``ModelConfig.rotations``) gives one activation map per view,
    view ``k`` turned ``k`` times: each view's map is turned back and the views averaged, so the
    map explains the call that was made and turns with the event."""
    sign = torch.where(logit >= 0, 1.0, -1.0)[:, None, None, None]
    maps = []
    for k, (act, grad) in enumerate(zip(acts, grads, strict=True)):
        weights = (sign.to(grad.dtype) * grad).mean(dim=(2, 3), keepdim=True)
        maps.append(torch.rot90(F.relu((weights * act).sum(1)).float(), -k, dims=(1, 2)))
    cam = torch.stack(maps).mean(0)
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).max(1).values.clamp_min(1e-8)[:, None, None]
    return (cam / top).cpu().numpy().astype(np.float32)


def _pack(model: DualBranchCTC, out: dict, heat: np.ndarray | None, effect: np.ndarray | None) -> BatchExplanation:
    logit = out["ctc_logit"].detach().float()
    return BatchExplanation(
        ctc_logit=logit.cpu().numpy(),
        probability=model.calibrated_probability(logit).cpu().numpy(),
        category_probabilities=torch.softmax(out["category_logits"].detach().float(), 1).cpu().numpy(),
        embedding=out["embedding"].detach().float().cpu().numpy(),
        gate=out["gate"].detach().float().cpu().numpy(),
        heatmap=heat,
        attribute_effect=effect,
    )


def top_attributes(effect: np.ndarray, values: np.ndarray, names: list[str], k: int = 5) -> list[list[tuple]]:
    """Per event, the ``k`` attributes with the largest |effect|: (name, value, effect)."""
    order = np.argsort(-np.abs(effect), axis=1)[:, :k]
    return [[(names[j], float(values[i, j]), float(effect[i, j])) for j in row] for i, row in enumerate(order)]


def heat_inside_fraction(heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of each heat map's mass inside the mask (N,)."""
    total = heat.sum(axis=(1, 2))
    inside = (heat * mask).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.maximum(total, 1e-12), 0.0)
