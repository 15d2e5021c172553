"""Dual-branch CTC classifier.

After Han et al., "a dual-branch network combining traditional image processing and
deep learning for CTC identification", J Transl Med 23:1002 (2025): one branch reads
the cell's spatial/morphological appearance (a compact CNN on the multi-channel crop),
the other its texture and fluorescence attributes (an MLP on GLCM/LBP/intensity/shape
attributes, see :mod:`classifier.features`). The branches are fused with learned
per-sample weights (reported as branch contributions), reduced to a low-dimensional
embedding, and read by two heads: a binary CTC logit, calibrated by temperature
scaling, and a 5-way category head (:data:`classifier.results.CATEGORIES`).

Written in the timm style: small blocks, ``forward_features`` / ``forward_head``, one
factory per variant (:func:`ctc_dual`, :func:`ctc_spatial`, :func:`ctc_texture`, the
latter two for the ablation). Sized for CPU throughput: ~8 MMAC per 48x48 event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from classifier.results import CATEGORIES

BRANCHES = ("spatial", "texture")


@dataclass(frozen=True)
class ModelConfig:
    n_features: int
    in_chans: int = 4
    widths: tuple[int, ...] = (16, 24, 48, 64)
    hidden: int = 64
    embed_dim: int = 12
    n_categories: int = len(CATEGORIES)
    branches: tuple[str, ...] = BRANCHES
    dropout: float = 0.1
    #: quarter turns of the crop the spatial branch sees, its pooled output averaged (1 or 4; see
    #: :class:`SpatialBranch`). Weights saved before it existed load as 1.
    rotations: int = 1

    def __post_init__(self) -> None:
        if self.rotations not in (1, 4):
            raise ValueError(f"rotations must be 1 or 4, not {self.rotations}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["branches"] = list(self.branches)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d["branches"] = tuple(d["branches"])
        return cls(**d)


class ConvBlock(nn.Sequential):
    """3x3 conv, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SpatialBranch(nn.Module):
    """Compact CNN: a stride-2 stem, then conv blocks with 2x pooling between them,
    global average pool. 48 -> 24 -> 24 -> 12 -> 6 pixels.

    The stride-2 stem halves the cost of the full-resolution layer (the CPU bottleneck);
    at 0.5 µm/px a 1 µm step still resolves nuclear fragments. ``cam_stage`` is the stage
    whose activations Grad-CAM reads (12x12 for a 48 px crop: fine enough to localise
    inside a cell, coarse enough to be class-specific).

    With ``rotations`` 4 the branch sees the crop at its four quarter turns and averages the
    pooled outputs, so a quarter turn of the crop no longer changes its output: trained with turned
    crops, the stride-2 stem still answered a turned event differently (ctc-dev events turned,
    flipped and moved by 0-3 px: p 0.013-0.967 for one CTC; issue 11). Grad-CAM then reads each
    view's activations: ``cams[k]`` is the crop turned ``k`` quarter turns. In training each view
    updates the batch-norm running statistics (four updates a step, of one distribution of turned
    crops); the output stays invariant in either mode. Mirror images are not averaged over.
    """

    cam_stage = 2

    def __init__(self, in_chans: int, widths: tuple[int, ...], rotations: int = 1) -> None:
        super().__init__()
        chans = (in_chans, *widths)
        self.stages = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], stride=2 if i == 0 else 1) for i in range(len(widths))
        )
        self.out_dim = widths[-1]
        self.rotations = rotations

    def forward(self, x: torch.Tensor, keep_cam: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled output (N, out_dim) and the Grad-CAM stage's activations of each view."""
        if self.rotations == 1:
            pooled, cam = self._forward(x, keep_cam)
            return pooled, [cam]
        # one view at a time: a 4N batch ran 1.4x slower on 2 cores (cache); a turned view loses
        # channels-last, which the CPU convolutions need to be fast (4x)
        fmt = torch.channels_last if not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format
        total: torch.Tensor | None = None
        cams = []
        for k in range(self.rotations):
            view = torch.rot90(x, k, dims=(2, 3)).contiguous(memory_format=fmt) if k else x
            pooled, cam = self._forward(view, keep_cam)
            total = pooled if total is None else total + pooled
            cams.append(cam)
        assert total is not None
        return total / self.rotations, cams

    def _forward(self, x: torch.Tensor, keep_cam: bool) -> tuple[torch.Tensor, torch.Tensor]:
        cam: torch.Tensor | None = None
        for i, stage in enumerate(self.stages):
            if i >= 2:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            if i == self.cam_stage:
                cam = x
                if keep_cam and x.requires_grad:
                    x.retain_grad()
        assert cam is not None, "the branch has fewer stages than its Grad-CAM stage"
        return x.mean(dim=(2, 3)), cam


class TextureBranch(nn.Module):
    """MLP on standardised attributes. Standardisation lives here (buffers) so the
    weights file is self-contained."""

    def __init__(self, n_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.mlp = nn.Sequential(
            nn.Linear(n_features, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden), nn.GELU(),
        )
        self.out_dim = hidden

    def standardise(self, f: torch.Tensor) -> torch.Tensor:
        return ((f - self.mean) / self.std).clamp(-6.0, 6.0)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.standardise(f))


class LabHead(nn.Module):
    """A lab's calibrated CTC head over the frozen model (issue 13, point 7).

    A logistic regression on the standardised ``[attributes, embedding, base logit]`` of
    an event, fitted on a lab's reviewed events by :mod:`classifier.finetune`. With tens
    of events, a linear probe on the model's own features transfers better than moving
    the network (a probe reached 0.98 balanced accuracy where a full fine-tune fell to
    0.63). Its logit is already calibrated, so the model's temperature does not apply to it.
    Standardisation lives in buffers so the weights file stays self-contained.
    """

    def __init__(self, n_in: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.linear = nn.Linear(n_in, 1)

    def inputs(self, f: torch.Tensor, embedding: torch.Tensor, base_logit: torch.Tensor) -> torch.Tensor:
        """The raw head inputs; a non-finite attribute reads as 0 (the same in fitting and in use)."""
        f = torch.nan_to_num(f.float(), nan=0.0, posinf=0.0, neginf=0.0)
        return torch.cat([f, embedding.float(), base_logit.float()[:, None]], 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(((z - self.mean) / self.std).clamp(-8.0, 8.0)).squeeze(1)


class DualBranchCTC(nn.Module):
    """Spatial CNN + attribute MLP, gated fusion, low-dimensional embedding, two heads.

    ``lab_head`` (None for the shipped weights) replaces the CTC logit when a lab's head
    has been fitted (see :class:`LabHead`, :func:`attach_lab_head`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.spatial = SpatialBranch(cfg.in_chans, cfg.widths, cfg.rotations) if "spatial" in cfg.branches else None
        self.texture = TextureBranch(cfg.n_features, h, cfg.dropout) if "texture" in cfg.branches else None
        self.proj_spatial = nn.Linear(cfg.widths[-1], h) if self.spatial is not None else None
        self.proj_texture = nn.Linear(h, h) if self.texture is not None else None
        # the gate sees both projections and returns per-sample weights summing to 1
        self.gate = nn.Linear(2 * h, 2) if len(cfg.branches) == 2 else None
        self.reduce = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(h, cfg.embed_dim), nn.LayerNorm(cfg.embed_dim))
        self.head_ctc = nn.Linear(cfg.embed_dim, 1)
        self.head_category = nn.Linear(cfg.embed_dim, cfg.n_categories)
        self.register_buffer("temperature", torch.ones(()))
        self.lab_head: LabHead | None = None

    def lab_head_dim(self) -> int:
        return self.cfg.n_features + self.cfg.embed_dim + 1

    def forward_features(
        self, x: torch.Tensor, f: torch.Tensor, keep_cam: bool = False
    ) -> dict[str, torch.Tensor | None]:
        """Branch outputs, fusion weights and the embedding."""
        n = x.shape[0]
        zs = zt = None
        cam: list[torch.Tensor] | None = None
        if self.spatial is not None and self.proj_spatial is not None:
            hs, cam = self.spatial(x, keep_cam)
            zs = F.gelu(self.proj_spatial(hs))
        if self.texture is not None and self.proj_texture is not None:
            zt = F.gelu(self.proj_texture(self.texture(f)))
        if zs is not None and zt is not None and self.gate is not None:
            gate = torch.softmax(self.gate(torch.cat([zs, zt], 1)), dim=1)
            fused = gate[:, :1] * zs + gate[:, 1:] * zt
        elif zs is not None:
            gate = torch.tensor([1.0, 0.0], device=x.device).expand(n, 2)
            fused = zs
        else:
            assert zt is not None
            gate = torch.tensor([0.0, 1.0], device=x.device).expand(n, 2)
            fused = zt
        return {"gate": gate, "fused": fused, "embedding": self.reduce(fused), "cam": cam}

    def forward_head(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "ctc_logit": self.head_ctc(embedding).squeeze(1),
            "category_logits": self.head_category(embedding),
        }

    def forward(self, x: torch.Tensor, f: torch.Tensor, keep_cam: bool = False) -> dict[str, torch.Tensor | None]:
        feats = self.forward_features(x, f, keep_cam)
        out: dict[str, torch.Tensor | None] = dict(feats)
        out.update(self.forward_head(feats["embedding"]))  # type: ignore[arg-type]
        if self.lab_head is not None:
            out["base_ctc_logit"] = out["ctc_logit"]
            z = self.lab_head.inputs(f, feats["embedding"], out["ctc_logit"])  # type: ignore[arg-type]
            out["ctc_logit"] = self.lab_head(z)
        return out

    def calibrated_probability(self, ctc_logit: torch.Tensor) -> torch.Tensor:
        if self.lab_head is not None:  # the lab head's logit is calibrated by its own fit
            return torch.sigmoid(ctc_logit)
        return torch.sigmoid(ctc_logit / self.temperature)


def attach_lab_head(model: DualBranchCTC) -> LabHead:
    """Give ``model`` an (unfitted) lab head; its state-dict keys are ``lab_head.*``."""
    model.lab_head = LabHead(model.lab_head_dim())
    return model.lab_head


def has_lab_head(state_dict: dict) -> bool:
    return "lab_head.linear.weight" in state_dict


def fuse_batchnorm(model: DualBranchCTC) -> DualBranchCTC:
    """Fold each BatchNorm into its conv for inference (same outputs, ~15% faster on CPU)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.spatial is None:
        return model
    for block in model.spatial.stages:
        conv, bn = block[0], block[1]
        if isinstance(bn, nn.BatchNorm2d):
            block[0] = fuse_conv_bn_eval(conv.eval(), bn.eval())
            block[1] = nn.Identity()
    return model


def build(cfg: ModelConfig) -> DualBranchCTC:
    return DualBranchCTC(cfg)


def ctc_dual(n_features: int, **kw: object) -> DualBranchCTC:
    return build(ModelConfig(n_features=n_features, branches=BRANCHES, **kw))  # type: ignore[arg-type]


def ctc_spatial(n_features: int, **kw: object) -> DualBranchCTC:
    return build(ModelConfig(n_features=n_features, branches=("spatial",), **kw))  # type: ignore[arg-type]


def ctc_texture(n_features: int, **kw: object) -> DualBranchCTC:
    return build(ModelConfig(n_features=n_features, branches=("texture",), **kw))  # type: ignore[arg-type]
