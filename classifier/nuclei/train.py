"""``python -m classifier train-nuclei``: the nucleus network, trained on nuclei-train (DSB 2018, CC0).

Every training patch is drawn afresh from a real image with what instruments vary applied to it,
so that the network learns nuclei rather than one microscope: scale (nuclei from 1/1.6 to 1.6x
the working size for the segmentation outputs, and a wider 1/3.5-3.5x band for the size output
that drives scale inference), dim and bright nuclei side by side (per-nucleus gain), nuclear
texture, gamma, blur, uneven illumination, Poisson and read noise at a random signal level,
camera offsets of 16-bit cameras and 8-bit display renders, saturation, flips and rotations.
Every tenth image (sorted by name) is held out for validation; nuclei-dev is never read.
Deterministic for a seed on one thread count (torch and numpy generators are seeded).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels
from torch import nn
from torch.nn import functional as F  # noqa: N812

from classifier.nuclei import infer, metrics, star
from classifier.nuclei.net import NucleusUNet
from classifier.nuclei.prep import SCALE_TOLERANCE, WORK_DIAMETER, normalise

CONTEXT = 160  # working-scale crop the normalisation sees at a 12 px working size (inference sees whole images)
WIDE_TOLERANCE = 3.5  # scale band of the samples that train only the size output


@dataclass(frozen=True)
class Augment:
    """How hard a training stage pushes the rarer conditions (defaults: the first stage)."""

    dim_prob: float = 0.5  # share of patches in which some nuclei are dimmed
    dim_share: float = 0.35  # share of nuclei dimmed in such a patch
    dim_min: float = 0.06  # dimmest gain (log-uniform up to 0.6)
    contact_weight: float = 0.0  # extra distance-loss weight near borders between touching nuclei
    texture_prob: float = 0.3  # share of patches whose nuclei get chromatin texture
    nucleoli_prob: float = 0.0  # share of patches whose nuclei get dark nucleoli (1-4 each)
    #: share of dimmed patches whose gains spread smoothly over each nucleus's blurred halo (a dim
    #: nucleus touching a bright one then brightens towards it, as out-of-focus light does)
    halo_prob: float = 0.0
    #: share of 8-bit renders clipped at the 85-98th percentile (auto-exposure set by the brightest
    #: cells: bright nuclei saturate flat while dim ones sit near the floor)
    saturate_prob: float = 0.0


@dataclass
class Image:
    """One training image at its native scale, with its targets."""

    name: str
    img: np.ndarray  # float32
    labels: np.ndarray  # int32
    expanded: np.ndarray  # labels grown by 2 px (the halo of a nucleus goes with its gain)
    dist: np.ndarray  # distance to boundary / the nucleus's own maximum, 0..1
    logsize: np.ndarray  # log2 equivalent diameter of the pixel's nucleus (0 outside)
    diameter: float  # median equivalent diameter
    contact: np.ndarray  # 1 within 2 px of a border shared by two nuclei (where merges happen)


def targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance-to-boundary over the nucleus's maximum, and log2 equivalent diameter, per pixel."""
    lab = labels.astype(np.int32)
    inner = lab > 0
    # a pixel whose 4-neighbour belongs to another nucleus is boundary: touching nuclei separate
    for ax in (0, 1):
        for sh in (1, -1):
            nb = np.roll(lab, sh, axis=ax)
            inner &= (nb == lab)
    d = ndi.distance_transform_edt(inner).astype(np.float32)
    n = int(lab.max())
    mx = np.zeros(n + 1, np.float32)
    if n:
        mx[1:] = ndi.maximum(d, lab, index=np.arange(1, n + 1))
    dist = np.where(lab > 0, d / np.maximum(mx[lab], 1.0), 0).astype(np.float32)
    areas = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
    diam = 2 * np.sqrt(np.maximum(areas, 1) / math.pi)
    logsize = np.where(lab > 0, np.log2(diam[lab]), 0).astype(np.float32)
    return np.clip(dist, 0, 1), logsize


def contacts(labels: np.ndarray) -> np.ndarray:
    """float32 (H, W): 1 within 2 px of a pixel whose 4-neighbour is another nucleus.

    Touching nuclei are what the network merges (on nuclei-dev three quarters of the missed
    nuclei were inside a neighbour's object): the distance map must reach 0 along these lines,
    so the loss weighs them more.
    """
    lab = labels.astype(np.int32)
    line = np.zeros(lab.shape, bool)
    for ax in (0, 1):
        a = lab
        b = np.roll(lab, 1, axis=ax)
        edge = (a != b) & (a > 0) & (b > 0)
        if ax == 0:
            edge[0, :] = False
        else:
            edge[:, 0] = False
        line |= edge | np.roll(edge, -1, axis=ax)
    return ndi.binary_dilation(line, iterations=2).astype(np.float32)


def load_folder(root: Path, names: list[str] | None = None) -> list[Image]:
    names = names or sorted(p.stem for p in (root / "images").glob("*.tif"))
    out = []
    for name in names:
        img = tifffile.imread(root / "images" / f"{name}.tif").astype(np.float32)
        lab = tifffile.imread(root / "masks" / f"{name}.tif").astype(np.int32)
        dist, logsize = targets(lab)
        areas = np.bincount(lab.ravel())[1:]
        areas = areas[areas > 0]
        diameter = float(2 * math.sqrt(np.median(areas) / math.pi)) if areas.size else 12.0
        out.append(Image(name, img, lab, expand_labels(lab, 2), dist, logsize, diameter, contacts(lab)))
    return out


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    period = 2 * n
    i = np.mod(idx, period)
    return np.where(i < n, i, period - 1 - i)


def _smooth_field(rng: np.random.Generator, size: int, grid: int = 3) -> np.ndarray:
    g = torch.from_numpy(rng.standard_normal((1, 1, grid, grid)).astype(np.float32))
    return F.interpolate(g, size=(size, size), mode="bicubic", align_corners=True)[0, 0].numpy()


def context(work_d: float) -> int:
    """The training crop's side (working px) for a network working at ``work_d``: :data:`CONTEXT`
    at 12 px, as many nuclei across at any other size, on the network's 8 px grid."""
    return 8 * max(1, round(CONTEXT * work_d / WORK_DIAMETER / 8))


def sample(rng: np.random.Generator, im: Image, patch: int, aug: Augment = Augment(),
           work_d: float = WORK_DIAMETER, rays: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented (2, P, P) input, (3 + rays, P, P) targets and (3 or 4, P, P) loss weights, for a
    network whose nuclei are ``work_d`` px across (``patch`` should grow with it) with ``rays``
    star-convex directions (:func:`classifier.nuclei.star.ray_targets`)."""
    ctx = context(work_d)
    wide = rng.random() < 0.3
    tol = WIDE_TOLERANCE if wide else SCALE_TOLERANCE
    drawn_d = work_d * math.exp(rng.uniform(-math.log(tol), math.log(tol)))
    s = drawn_d / im.diameter
    n = int(math.ceil(ctx / s))
    k = max(1, int(1 / (2 * s)))  # decimate very large crops before the area mean
    h, w = im.img.shape
    y0 = int(rng.integers(-n // 4, max(h - 3 * n // 4, -n // 4 + 1)))
    x0 = int(rng.integers(-n // 4, max(w - 3 * n // 4, -n // 4 + 1)))
    ys, xs = _reflect(np.arange(y0, y0 + n, k), h), _reflect(np.arange(x0, x0 + n, k), w)
    ix = np.ix_(ys, xs)
    img, lab, exp = im.img[ix], im.labels[ix], im.expanded[ix]
    dist, logsize, contact = im.dist[ix], im.logsize[ix], im.contact[ix]

    # per-nucleus gain (dim next to bright) and texture, on the signal above the background
    base = float(np.percentile(img, 5))
    sig = img - base
    if rng.random() < aug.dim_prob:
        ids = np.unique(exp)
        lut = np.ones(int(exp.max()) + 1, np.float32)
        dim = rng.random(ids.size) < aug.dim_share
        lut[ids] = np.where(dim, np.exp(rng.uniform(math.log(aug.dim_min), math.log(0.6), ids.size)), 1.0)
        lut[0] = 1.0
        # drawn only when asked for, so that the shipped recipe (halo_prob 0) keeps its random stream
        if aug.halo_prob > 0 and rng.random() < aug.halo_prob:
            sig = sig * halo_gain(lab, lut, im.diameter / k)
        else:
            sig = sig * lut[exp]
    if rng.random() < aug.texture_prob:
        tex = ndi.gaussian_filter(rng.standard_normal(sig.shape).astype(np.float32),
                                  rng.uniform(0.04, 0.15) * im.diameter / k)
        tex /= max(float(tex.std()), 1e-6)
        sig = np.where(lab > 0, sig * np.clip(1 + rng.uniform(0.2, 0.6) * tex, 0.15, None), sig)
    # drawn only when asked for, so that the shipped recipe (nucleoli_prob 0) keeps its random stream
    if aug.nucleoli_prob > 0 and rng.random() < aug.nucleoli_prob:
        sig = sig * nucleoli(rng, lab, im.diameter / k)
    img = sig + base

    # to the working scale
    stack = torch.from_numpy(np.stack([img, (lab > 0).astype(np.float32), dist, logsize, contact]))[None]
    mode = "area" if s * k < 1 else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    st = F.interpolate(stack, size=(ctx, ctx), mode=mode, **kw)[0].numpy()
    img, fgf, dist = st[0], st[1], st[2]
    size_t = np.where(fgf > 0.5, st[3] / np.maximum(fgf, 1e-3) + math.log2(s) - math.log2(work_d), 0)

    img = _instrument(rng, img, aug.saturate_prob, blur_scale=work_d / WORK_DIAMETER)
    x = normalise(img, work_d)
    t = np.stack([(fgf > 0.5).astype(np.float32), np.clip(dist / np.maximum(fgf, 1e-3), 0, 1) * (fgf > 0.5),
                  size_t]).astype(np.float32)
    dist_w = np.zeros_like(fgf) if wide else 1.0 + aug.contact_weight * (st[4] > 0.25)
    wgt = np.stack([np.ones_like(fgf), dist_w, (fgf > 0.95).astype(np.float32)])
    if rays:
        lab_w = F.interpolate(torch.from_numpy(lab.astype(np.float32))[None, None], size=(ctx, ctx),
                              mode="nearest")[0, 0].numpy().astype(np.int32)
        ray_t, ray_w = star.ray_targets(lab_w, rays, work_d)
        t = np.concatenate([t, ray_t])
        wgt = np.concatenate([wgt, (ray_w * t[1] * (not wide))[None]])
    oy, ox = (int(v) for v in rng.integers(0, ctx - patch + 1, 2))
    sl = (slice(None), slice(oy, oy + patch), slice(ox, ox + patch))
    x, t, wgt = x[sl], t[sl], wgt[sl]
    r = int(rng.integers(4))
    flip = rng.random() < 0.5
    out = []
    for a in (x, t, wgt):
        a = np.rot90(a, r, axes=(1, 2))
        out.append(np.ascontiguousarray(a[:, :, ::-1] if flip else a))
    if rays:
        out[1][3:] = star.turn_rays(out[1][3:], r, flip)
    return out[0], out[1], out[2]


def halo_gain(lab: np.ndarray, lut: np.ndarray, diameter: float) -> np.ndarray:
    """Each nucleus's gain (``lut[label]``) spread smoothly over its blurred halo, as
    ``emulate._gain_map`` renders dim nuclei: next to a bright neighbour a dim nucleus brightens
    towards the contact and the bright one dims, instead of a step at the mask's edge that the
    network could learn to look for (on the `dimbright` render the shipped network gives the dim
    nuclei it misses a median foreground share of 2 %)."""
    spread = max(2.0, 0.2 * diameter)
    return ndi.gaussian_filter(lut[expand_labels(lab, spread)], spread / 2).astype(np.float32)


def nucleoli(rng: np.random.Generator, lab: np.ndarray, diameter: float) -> np.ndarray:
    """A multiplicative map of dark nucleoli: about 2.5 per nucleus (Poisson), each 18-32 % of the
    nucleus diameter across, 40-75 % darker at its centre. Large nuclei at fine pixel sizes (stem
    cells at ~0.24 µm/px) show them, and a nucleolus near the edge leaves a crescent or a waist that
    a network trained on smooth nuclei cuts along."""
    inside = np.flatnonzero(lab.ravel() > 0)
    area = math.pi * (diameter / 2) ** 2
    k = min(inside.size, int(rng.poisson(2.5 * inside.size / max(area, 1.0))))
    out = np.ones(lab.shape, np.float32)
    if k == 0:
        return out
    # one width per patch (its nuclei share a size), one depth per nucleolus
    sigma = max(0.5, 0.5 * diameter * float(rng.uniform(0.18, 0.32)) * 0.8)
    spots = np.zeros(lab.shape, np.float32)
    spots.ravel()[rng.choice(inside, size=k, replace=False)] = rng.uniform(0.4, 0.75, k)
    dip = ndi.gaussian_filter(spots, sigma) * (2 * math.pi * sigma ** 2)
    return np.clip(1 - dip, 0.2, 1).astype(np.float32)


def _instrument(rng: np.random.Generator, img: np.ndarray, saturate_prob: float = 0.0,
                blur_scale: float = 1.0) -> np.ndarray:
    """What a different microscope and camera would make of the same specimen (blur in 12 px nuclei's
    pixels times ``blur_scale``)."""
    if rng.random() < 0.25:
        return img  # as recorded
    lo, hi = float(img.min()), float(img.max())
    u = (img - lo) / max(hi - lo, 1e-6)
    u = u ** math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    if rng.random() < 0.4:
        u = ndi.gaussian_filter(u, rng.uniform(0.3, 1.2) * blur_scale)
    if rng.random() < 0.5:  # uneven illumination: a smooth gain from about 0.4 to 1
        g = _smooth_field(rng, u.shape[0])
        g = 1 - rng.uniform(0.1, 0.6) * (g - g.min()) / max(float(np.ptp(g)), 1e-6)
        u = u * g
    peak = math.exp(rng.uniform(math.log(15), math.log(30000)))  # photo-electrons at the brightest
    bg = rng.uniform(0, 0.3) * peak * (1 + 0.5 * _smooth_field(rng, u.shape[0]) * (rng.random() < 0.5))
    e = rng.poisson(np.maximum(u * peak + np.maximum(bg, 0), 0)).astype(np.float32)
    e += rng.normal(0, rng.uniform(0.5, 8), e.shape).astype(np.float32)  # read noise
    if rng.random() < 0.5:  # 16-bit camera with an offset (some ~33,000)
        offset = rng.choice([100.0, 500.0, 33000.0])
        counts = np.clip(np.floor(e * rng.uniform(0.5, 4) + offset), 0, 65535)
        if rng.random() < 0.2:
            counts = np.minimum(counts, np.percentile(counts, rng.uniform(97, 99.9)))  # saturated
        return counts.astype(np.float32)
    # 8-bit display render, sometimes clipped
    top = np.percentile(e, rng.uniform(99, 100))
    if saturate_prob > 0 and rng.random() < saturate_prob:  # drawn only when asked for (random stream)
        top = np.percentile(e, rng.uniform(85, 98))
    return np.clip(np.floor(e / max(top, 1e-6) * 255), 0, 255).astype(np.float32)


def batch(rng: np.random.Generator, images: list[Image], n: int, patch: int, aug: Augment = Augment(),
          work_d: float = WORK_DIAMETER, rays: int = 0) -> tuple[torch.Tensor, ...]:
    xs, ts, ws = zip(*(sample(rng, images[int(rng.integers(len(images)))], patch, aug, work_d, rays)
                       for _ in range(n)), strict=True)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ws))


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a run drawn from its own generator (seed, i), so that worker processes can
    draw batches side by side and a run gives the same batches with 1 or 16 workers. On a GPU
    the network's step takes milliseconds and one process drawing patches (~0.2 s a batch of 16)
    would leave it idle. A different random stream from the single-process one that made the
    shipped weights (``workers=0``), so the two are not interchangeable."""

    def __init__(self, images: list[Image], seed: int, size: int, patch: int, aug: Augment,
                 work_d: float = WORK_DIAMETER, rays: int = 0) -> None:
        self.images, self.seed, self.size, self.patch, self.aug = images, seed, size, patch, aug
        self.work_d, self.rays = work_d, rays

    def __len__(self) -> int:  # indexed by step number; the sampler names the steps
        return 2 ** 31

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...]:
        return batch(np.random.default_rng([self.seed, step]), self.images, self.size, self.patch, self.aug,
                     self.work_d, self.rays)


#: the rays' loss (mean absolute error in working diameters, ~0.1 once trained) against the others
#: (binary cross-entropies of 0.1-0.3)
RAY_LOSS_WEIGHT = 2.0

#: numeric precision of the training forward pass (``train(precision=...)``)
PRECISIONS = ("fp32", "bf16")


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a worker per core; torch's own pool in each would oversubscribe


def batches(images: list[Image], *, seed: int, size: int, patch: int, aug: Augment, first: int, last: int,
            workers: int, rng: np.random.Generator, pin: bool = False, work_d: float = WORK_DIAMETER,
            rays: int = 0) -> Generator[tuple[torch.Tensor, ...], None, None]:
    """Batches for steps ``first..last``: from ``rng`` in turn (``workers=0``, the shipped
    recipe's stream) or one generator per step in ``workers`` processes (:class:`StepBatches`)."""
    if workers <= 0:
        for _ in range(first, last + 1):
            yield batch(rng, images, size, patch, aug, work_d, rays)
        return
    loader = torch.utils.data.DataLoader(
        StepBatches(images, seed, size, patch, aug, work_d, rays), batch_size=None, sampler=range(first, last + 1),
        num_workers=workers, worker_init_fn=_one_thread, pin_memory=pin, prefetch_factor=4)
    yield from loader


def loss_fn(y: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    fg = F.binary_cross_entropy_with_logits(y[:, 0], t[:, 0])
    bce = F.binary_cross_entropy_with_logits(y[:, 1], t[:, 1], reduction="none")
    dist = (bce * w[:, 1]).sum() / w[:, 1].sum().clamp(min=1)
    size = (F.smooth_l1_loss(y[:, 2], t[:, 2], reduction="none") * w[:, 2]).sum() / w[:, 2].sum().clamp(min=1)
    if y.shape[1] == 3:
        return fg + 2 * dist + 0.5 * size
    # rays: mean absolute error in working diameters, weighted towards nuclear centres as StarDist
    # does (an outline is read from the centre; rays from an edge pixel are short and unsure)
    ray = ((y[:, 3:] - t[:, 3:]).abs().mean(dim=1) * w[:, 3]).sum() / w[:, 3].sum().clamp(min=1)
    return fg + 2 * dist + 0.5 * size + RAY_LOSS_WEIGHT * ray


def validate(model: NucleusUNet, images: list[Image], known_scale: bool) -> dict:
    # inference is the product's (CPU, whole images): a copy there when training on a GPU
    net = model if _device(model).type == "cpu" else copy.deepcopy(model).cpu()
    net.eval()
    total = metrics.Scores(0, 0, 0, 0)
    for im in images:
        res = infer.segment_nuclei_with(net, im.img, im.diameter if known_scale else None)
        total = total + metrics.score(im.labels, res.labels)
    model.train()
    return total.as_dict()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train(data: Path, out: Path, *, steps: int, batch_size: int, patch: int, lr: float, seed: int,
          threads: int, widths: tuple[int, ...], log_every: int = 250, val_images: int = 20,
          stop_after: int | None = None, init: Path | None = None, aug: Augment = Augment(),
          device: str = "cpu", workers: int = 0, save_every: int | None = None,
          time_limit_s: float | None = None, precision: str = "fp32",
          work_diameter: float = WORK_DIAMETER, rays: int | None = None) -> dict:
    """Train and save to ``out``; ``stop_after`` ends the run early on the same schedule (the
    weights at that step of the full run, reproducibly). ``init``: continue from these weights
    (a second stage with its own schedule; the widths and working size are the init's).
    ``work_diameter``: the nucleus size (px) the network learns to work at (12 for the shipped one;
    give ``patch`` in proportion). ``device`` "cuda" trains
    on a GPU (validation and the saved weights stay on the CPU, as inference is); ``workers``
    draw the batches in that many processes, one random stream per step (:class:`StepBatches`).
    The weights are saved every ``save_every`` steps (default: at each validation, every
    ``4 * log_every``), so that a run stopped by a time limit leaves recent ones. ``time_limit_s``:
    stop after the step that reaches this many seconds of training (loading not counted), save,
    and report ``steps_done``, so that ``stop_after=steps_done`` runs the same steps of the same
    schedule on the same batches: the same weights on the CPU (tested), and on a GPU up to cuDNN's
    non-deterministic backward pass. The final validation then reads the first ``val_images`` only.
    ``precision`` "bf16": the forward pass under bfloat16 autocast (the loss and the weights stay
    float32), channels-last; on a CPU with AMX (Sapphire Rapids and later) a step of the 24-48-96-128
    network then costs what a float32 step of the shipped 12-24-48-64 one does (2.6x faster)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not 4 <= work_diameter <= 48:
        raise ValueError(f"work_diameter must be 4-48 px, got {work_diameter:g}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch sees no CUDA device (torch.cuda.is_available() is False)")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    names = sorted(p.stem for p in (data / "images").glob("*.tif"))
    val_names = names[::10]
    train_names = [n for n in names if n not in set(val_names)]
    t0 = time.time()
    tr = load_folder(data, train_names)
    va = load_folder(data, val_names)
    print(f"loaded {len(tr)} train / {len(va)} val images in {time.time() - t0:.0f}s", flush=True)
    if rays is not None and (rays < 0 or rays % 4):
        raise ValueError(f"rays must be a multiple of 4 (quarter turns map rays onto rays), got {rays}")
    if init is not None:
        bundle = torch.load(init, map_location="cpu", weights_only=True)
        had = int(bundle.get("rays", 0))
        model = NucleusUNet(tuple(bundle["widths"]), work_diameter=float(bundle.get("work_diameter", WORK_DIAMETER)),
                            rays=had if rays is None else rays)
        if model.rays != had and had:
            raise ValueError(f"--init has {had} rays; a run from it keeps them (asked for {rays})")
        # weights without rays gain a new ray head: everything else continues from them
        model.load_state_dict(bundle["state_dict"], strict=not model.rays or bool(had))
    else:
        model = NucleusUNet(widths, work_diameter=work_diameter, rays=rays or 0)
    if patch > context(model.work_diameter):
        raise ValueError(f"patch {patch} is larger than the {context(model.work_diameter)} px crop drawn for "
                         f"{model.work_diameter:g} px nuclei")
    model.to(dev).train()
    if precision == "bf16":
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = []
    run = 0.0
    last = min(steps, stop_after or steps)
    stream = batches(tr, seed=seed, size=batch_size, patch=patch, aug=aug, first=1, last=last, workers=workers,
                     rng=rng, pin=dev.type == "cuda", work_d=model.work_diameter, rays=model.rays)
    started = time.monotonic()
    stopped_early = False
    step = 0
    for step, (x, t, w) in enumerate(stream, start=1):
        x, t, w = (a.to(dev, non_blocking=True) for a in (x, t, w))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = model(x.contiguous(memory_format=torch.channels_last) if precision == "bf16" else x)
        loss = loss_fn(y.float(), t, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
        if step % log_every == 0 or step == last:
            rec = {"step": step, "loss": round(run, 4), "minutes": round((time.time() - t0) / 60, 1)}
            if step % (4 * log_every) == 0 or step == last:
                rec["val_known_scale"] = validate(model, va[:val_images], True)
                rec["val_inferred_scale"] = validate(model, va[:val_images], False)
            history.append(rec)
            print(rec, flush=True)
        if step % (save_every or 4 * log_every) == 0:
            save(model, out)
        if time_limit_s is not None and step < last and time.monotonic() - started >= time_limit_s:
            # a borrowed GPU's minutes are few: stop at a known step rather than be killed between saves
            stopped_early = True
            history.append({"step": step, "loss": round(run, 4), "minutes": round((time.time() - t0) / 60, 1),
                            "stopped_by_time_limit": True})
            print(f"stopped by the {time_limit_s:g} s time limit after step {step} of {last}", flush=True)
            break
    stream.close()  # worker processes stop drawing batches now, not when train() returns
    save(model, out)
    scored = va[:val_images] if stopped_early else va
    return {"history": history, "steps_done": step, "stopped_by_time_limit": stopped_early,
            "work_diameter": model.work_diameter, "rays": model.rays,
            "train_images": len(tr), "val_images": [im.name for im in scored],
            "minutes": round((time.time() - t0) / 60, 1),
            "val_known_scale": validate(model, scored, True), "val_inferred_scale": validate(model, scored, False)}


def save(model: NucleusUNet, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    # written beside and renamed: a run stopped by its time limit mid-write keeps the last whole file
    part = out.with_name(out.name + ".part")
    torch.save({"widths": list(model.widths), "work_diameter": model.work_diameter, "rays": model.rays,
                "state_dict": state}, part)
    os.replace(part, out)
    infer.load_model.cache_clear()
