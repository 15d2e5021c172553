"""Nuclei from a DAPI image at any scale: :func:`segment_nuclei`.

1. **Scale.** With a nucleus diameter (from a pixel size) the image is resampled so nuclei are
   ``WORK_DIAMETER`` px across. Without one, the network's third output, each nuclear pixel's
   own estimate of its nucleus's size, is read from two first looks (long sides of 1024 and
   384 px) and the image is resampled accordingly; a further pass follows while the estimate
   moves by more than 25 %. When the two looks read the image differently (scales > 1.6x
   apart: small nuclei, or the chromocentres of large ones, in the fine look; large nuclei
   in the coarse one), each reading is followed to its own scale and the one with the surer
   nuclear outlines wins (:func:`boundary_ambiguity`). A given diameter is checked the same
   way: when the network finds nuclei more than 1.6x off it, its own estimate wins (CTC nuclei
   and other instruments' large nuclei are bigger than the 7 µm leukocyte nucleus).
2. **Network.** Foreground probability and the distance-to-boundary map (divided by each
   nucleus's radius), tiled for large images.
3. **Instances.** Seeds are the nuclear cores (distance > 0.4-0.7 of the radius, see
   :func:`seeds`), each grown over the foreground by a watershed on the distance map, so
   touching nuclei split along their contact line and a textured nucleus stays one (its
   texture does not reach the distance map); neighbours whose shared border is not a valley of
   the distance map are joined again (:func:`merge_uncut`).
   Foreground regions without a core (small, dim nuclei) are kept as nuclei of their own.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.morphology import convex_hull_image
from skimage.segmentation import relabel_sequential, watershed
from torch.nn import functional as F  # noqa: N812

from classifier.kernels import block_mean_padded
from classifier.nuclei import star
from classifier.nuclei.net import NucleusUNet
from classifier.nuclei.prep import SCALE_TOLERANCE, WORK_DIAMETER, Prepared, prepare, resample
from classifier.preprocess import fill_border

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "nuclei-unet.pt"
MAX_WORK_PIXELS = 25e6  # a working image larger than this (5000^2) is not made
MAX_UPSAMPLE = 4.0  # nuclei of 3 px are enlarged to the working size, smaller ones no further
_TILE = 1024
_MARGIN = 48  # context on each side of a tile; more than the network's reach that matters
#: the network runs on the areas with signal only when they cover less than this share of the image
SPARSE_BELOW = 0.3
#: a 3x3 mean this many noise SDs above the background level is signal (see signal_regions)
SIGNAL_SDS = 1.0
_SPARSE_MARGIN = 32  # context around a region's box (its nuclei's outputs no longer change beyond it)
_SPARSE_MIN_PIXELS = 512 * 512
_SPARSE_MAX_REGIONS = 3000
_RESCALE_BAND = 1.25  # a size estimate within this factor of the working size needs no new pass
_MAX_PASSES = 3
#: neighbours whose shared border lies this deep inside a nucleus (distance / radius) are one nucleus
MERGE_ABOVE = 0.35
#: touching objects whose union is this convex (area / convex hull area) and at most MERGE_MAX_AREA
#: times the median object are one nucleus cut along its texture (see merge_convex)
MERGE_SOLIDITY = 0.93
MERGE_MAX_AREA = 1.6
#: distance-map levels (fractions of the radius) at which nuclear cores are looked for, see seeds()
SEED_LEVELS = (0.4, 0.55, 0.7)
#: an image worked smaller than recorded gets its instances from maps enlarged back by up to this
MAX_INSTANCE_ZOOM = 4.0
#: nuclear outlines this unsure (see :func:`boundary_ambiguity`) make a field's count one to review:
#: the lowest level at which no image segmented with F1 >= 0.9 was flagged
AMBIGUOUS_ABOVE = 0.75
#: a field whose brightest nuclear pixel stands less than this far out of the background noise
#: (SDs of the smoothed background, see :func:`contrast`) holds no nucleus: empty 16-bit renders and
#: pure noise top out at 8.7 SDs over a megapixel, the faintest of 295 real images here at 42.2
#: (model card, Segmentation); 19 is about midway on a log scale
EMPTY_BELOW = 19.0


@dataclass
class NucleiResult:
    """Labels (input pixel grid) and how they were found."""

    labels: np.ndarray  # int32 (H, W), 0 = background
    diameter_px: float | None  # nucleus diameter (input px) the final pass assumed
    measured_diameter_px: float | None  # median equivalent diameter of the nuclei found
    scale_source: str  # "pixel size", "pixel size, corrected by the image" or "image"
    passes: int
    factor: float  # working scale / input scale of the final pass
    notes: list[str] = field(default_factory=list)
    #: unsure pixels per nuclear pixel at the working scale (:func:`boundary_ambiguity`)
    ambiguity: float | None = None
    #: how far the brightest nucleus stands out of the background noise (:func:`contrast`)
    contrast: float | None = None
    #: share of the objects that measured far smaller than the rest at the first scale settled on,
    #: when they were many (:func:`smaller_population`); the final pass was then at their size
    smaller_share: float | None = None

    @property
    def empty(self) -> bool:
        """Nothing in the image stands out of the noise: no nuclei, whatever the network saw."""
        return self.contrast is not None and self.contrast < EMPTY_BELOW

    @property
    def uncertain(self) -> bool:
        """The network could not tell where many nuclei end: the count needs a look."""
        return self.ambiguity is not None and self.ambiguity > AMBIGUOUS_ABOVE

    @property
    def count(self) -> int:
        return int(self.labels.max())


@functools.lru_cache(maxsize=4)
def load_model(path: str | None = None) -> NucleusUNet:
    """The shipped network (``classifier/weights/nuclei-unet.pt``), loaded once per process."""
    p = Path(path) if path else WEIGHTS
    bundle = torch.load(p, map_location="cpu", weights_only=True)
    # weights from before the working size was recorded were all trained at 12 px
    model = NucleusUNet(tuple(bundle["widths"]), work_diameter=float(bundle.get("work_diameter", WORK_DIAMETER)),
                        rays=int(bundle.get("rays", 0)))
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    _fuse_batchnorm(model)
    return model.to(memory_format=torch.channels_last)


def _fuse_batchnorm(model: NucleusUNet) -> None:
    """Fold each BatchNorm into the conv before it (same outputs; a third faster on CPU)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in [*model.down, *model.up]:
        for i in (0, 3):
            conv, bn = block[i], block[i + 1]
            if isinstance(bn, torch.nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(conv, bn)
                block[i + 1] = torch.nn.Identity()


def provenance(path: str | None = None) -> dict:
    """The weights' JSON record (training data, command, seed, metrics)."""
    p = Path(path) if path else WEIGHTS
    return json.loads(p.with_suffix(".json").read_text())


def predict_maps(model: NucleusUNet, x: np.ndarray, regions: np.ndarray | None = None) -> np.ndarray:
    """(3 + rays, h, w) float32: foreground probability, distance (fraction of radius), log2 size /
    work, then the star-convex rays' lengths (working diameters) when the network has them.

    ``x`` is the (2, h, w) normalised input; large inputs go through in overlapping tiles. With
    ``regions`` (labelled areas with signal, see :func:`signal_regions`) the network runs on each
    region's box only and everything else is background: a sparse field (a CellSearch frame holds
    a few dozen cells in 1.4 megapixels) costs a fraction of a dense one.
    """
    _, h, w = x.shape
    out = np.zeros((model.outputs, h, w), np.float32)
    with torch.inference_mode():
        if regions is not None:
            for i, box in enumerate(ndi.find_objects(regions), start=1):
                if box is None:
                    continue
                # boxes on the network's pooling grid (multiples of 8 from the image origin, as
                # the whole-image pass sees it): off-grid crops give slightly different maps
                m = model.multiple
                y0, x0 = (max(0, (b.start - _SPARSE_MARGIN) // m * m) for b in box)
                y1 = min(h, -(-(box[0].stop + _SPARSE_MARGIN) // m) * m)
                x1 = min(w, -(-(box[1].stop + _SPARSE_MARGIN) // m) * m)
                y = _forward(model, x[:, y0:y1, x0:x1])
                own = regions[y0:y1, x0:x1] == i
                out[:, y0:y1, x0:x1][:, own] = y[:, own]
            return out
        if h * w <= 1.3 * _TILE * _TILE:
            tiles = [(0, h, 0, w)]
        else:
            tiles = [(y, min(y + _TILE, h), x0, min(x0 + _TILE, w))
                     for y in range(0, h, _TILE) for x0 in range(0, w, _TILE)]
        for y0, y1, x0, x1 in tiles:
            ty0, tx0 = max(0, y0 - _MARGIN), max(0, x0 - _MARGIN)
            ty1, tx1 = min(h, y1 + _MARGIN), min(w, x1 + _MARGIN)
            y = _forward(model, x[:, ty0:ty1, tx0:tx1])
            out[:, y0:y1, x0:x1] = y[:, y0 - ty0:y1 - ty0, x0 - tx0:x1 - tx0]
    return out


def _forward(model: NucleusUNet, tile: np.ndarray) -> np.ndarray:
    """The network's maps for one (2, h, w) tile (padded to the network's multiple, then cropped)."""
    th, tw = tile.shape[1:]
    m = model.multiple
    ph, pw = -th % m, -tw % m
    if ph or pw:
        tile = np.pad(tile, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(th, tw) > max(ph, pw) else "edge")
    t = torch.from_numpy(np.ascontiguousarray(tile))[None].contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16()):
        y = model(t)[0].float()
    y[:2] = torch.sigmoid(y[:2])
    return y[:, :th, :tw].numpy()


#: ``CLASSIFIER_NUCLEI_PRECISION``: "fp32", "bf16", or "auto" (bf16 where the CPU multiplies bfloat16
#: matrices in hardware: Intel AMX, Sapphire Rapids and later)
PRECISION_ENV = "CLASSIFIER_NUCLEI_PRECISION"


@functools.cache
def bfloat16() -> bool:
    """Whether the network runs under bfloat16 autocast (:data:`PRECISION_ENV`, read once a process).

    With AMX a 1024^2 tile takes 0.35-0.39 s instead of 0.73-0.84 s for the shipped network and 0.98 s
    instead of 3.5 s for a 4x wider one; without it bfloat16 is emulated and slower than float32,
    so "auto" keeps float32 there."""
    mode = os.environ.get(PRECISION_ENV, "fp32").strip().lower()
    if mode not in ("fp32", "bf16", "auto"):
        raise ValueError(f"{PRECISION_ENV} must be fp32, bf16 or auto, not {mode!r}")
    if mode == "auto":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        return bool(amx and amx())
    return mode == "bf16"


def signal_regions(prep: Prepared, work_d: float = WORK_DIAMETER) -> np.ndarray | None:
    """Labelled areas of a working-scale image with signal worth a look, or None when the image is
    dense enough that running the network everywhere costs no more.

    Signal: a 3x3 mean more than twice the background's noise SD above the background level
    (six SDs for that mean: a nucleus 6 % as bright as a saturated neighbour on an 8-bit render is
    still well above it), grown by a nucleus diameter so each region holds whole nuclei. Level
    and SD are the median and MAD of the image, which are the background's only when most of the
    image is background: otherwise (the median pixel is already well above the block background)
    the image counts as dense.
    """
    h, w = prep.excess.shape
    if h * w < _SPARSE_MIN_PIXELS:
        return None  # small images: one pass costs little, and the result stays exactly as before
    e = prep.excess
    sample = e[:: max(1, h // 512), :: max(1, w // 512)].ravel()
    level = float(np.median(sample))
    sd = 1.4826 * float(np.median(np.abs(sample - level)))
    if sd <= 0 or level > 3 * max(sd, prep.noise):
        return None
    signal = ndi.uniform_filter(e, 3) > level + SIGNAL_SDS * sd
    # specks of noise above that level are a few pixels; the dimmest nucleus is many
    specks, n_specks = ndi.label(signal)
    if n_specks:
        big = np.bincount(specks.ravel()) >= 0.15 * math.pi * (work_d / 2) ** 2  # a sixth of a nucleus
        big[0] = False
        signal = big[specks]
    grow = 2 * int(work_d) + 1
    grown = ndi.maximum_filter(signal.view(np.uint8), size=grow) > 0
    if grown.mean() > SPARSE_BELOW:
        return None
    regions, n = ndi.label(grown)
    return regions if 0 < n <= _SPARSE_MAX_REGIONS else None


def min_object_area(zoom: float = 1.0, work_d: float = WORK_DIAMETER) -> float:
    """The smallest object taken for a nucleus (px at ``zoom`` times the working scale): 12 % of a
    working-size disc."""
    return 0.12 * math.pi * (zoom * work_d / 2) ** 2


def instances(maps: np.ndarray, min_area: float | None = None, merge_above: float = MERGE_ABOVE,
              zoom: float = 1.0, work_d: float = WORK_DIAMETER) -> np.ndarray:
    """int32 nucleus labels from the network's maps (working scale, or ``zoom`` times finer)."""
    prob, dist = maps[0], maps[1]
    mask = prob > 0.5
    if not mask.any():
        return np.zeros(prob.shape, np.int32)
    mask = ndi.binary_fill_holes(mask)
    min_area = min_object_area(zoom, work_d) if min_area is None else min_area
    outlines = star.mode() if maps.shape[0] > 3 else "off"  # rays from channel 3 on (star.py)
    if outlines == "polygons":
        labels = star.polygon_labels(maps, mask, zoom * work_d)
    else:
        markers, n = star.seeds(maps, mask, zoom * work_d) if outlines == "seeds" else seeds(dist, mask)
        labels = watershed(-dist, markers, mask=mask) if n else np.zeros(prob.shape, np.int32)
        # foreground without a core: a faint or small nucleus the distance map did not peak in
        rest, n_rest = ndi.label(mask & (labels == 0))
        if n_rest:
            labels = np.where(rest > 0, rest + int(labels.max()), labels)
    if outlines == "off":
        # without outlines, parts of one nucleus are told apart by the distance map and shape only;
        # with them, two seeds are two outlines that non-maximum suppression kept apart already
        labels = merge_uncut(labels, dist, merge_above)
        labels = merge_convex(labels)
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def seeds(dist: np.ndarray, mask: np.ndarray, levels: tuple[float, ...] = SEED_LEVELS) -> tuple[np.ndarray, int]:
    """Nuclear cores: components of the distance map above ``levels[0]``, each replaced by its
    parts above the next level when it has two or more (a coarse h-maxima: two nuclei pressed
    together share a core at a low level and part at a higher one; a single nucleus has one
    part at every level). Labels need not be consecutive; returns (markers, largest label)."""
    markers, n = ndi.label(mask & (dist > levels[0]))
    for level in levels[1:]:
        hi, nh = ndi.label(mask & (dist > level))
        if nh == 0:
            break
        sel = hi > 0
        pairs = np.unique(markers[sel].astype(np.int64) * (nh + 1) + hi[sel])
        split = np.bincount(pairs // (nh + 1), minlength=n + 1) >= 2
        split[0] = False
        if split.any():
            parted = split[markers]
            markers = np.where(parted, np.where(hi > 0, hi + n, 0), markers).astype(np.int32)
            n += nh
    return markers, n


def merge_uncut(labels: np.ndarray, dist: np.ndarray, above: float) -> np.ndarray:
    """Join neighbouring objects whose shared border is not a boundary in the distance map.

    Two touching nuclei meet where the network's distance map is near 0 (it is trained to put
    a boundary there); a large or textured nucleus that got two seeds is cut where the map is
    still high. So pairs whose mean border distance exceeds ``above`` are merged (vectorised
    over pixel pairs; the loop is over the few pairs merged).
    """
    n = int(labels.max())
    if n < 2 or above >= 1:
        return labels
    keys_l, vals_l = [], []
    for a, b, da, db in ((labels[:, :-1], labels[:, 1:], dist[:, :-1], dist[:, 1:]),
                         (labels[:-1, :], labels[1:, :], dist[:-1, :], dist[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        keys_l.append(lo.astype(np.int64) * (n + 1) + hi)
        vals_l.append(np.minimum(da[touch], db[touch]))
    keys = np.concatenate(keys_l)
    if not keys.size:
        return labels
    uk, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, weights=np.concatenate(vals_l)) / counts
    join = (mean > above) & (counts >= 3)
    if not join.any():
        return labels
    return _join(labels, [(int(k // (n + 1)), int(k % (n + 1))) for k in uk[join]])


def merge_convex(labels: np.ndarray, solidity: float = MERGE_SOLIDITY, max_area: float = MERGE_MAX_AREA
                 ) -> np.ndarray:
    """Join touching neighbours that together are one convex, nucleus-sized shape.

    A large textured nucleus can get a valley in the distance map along its texture and come
    out in two parts; two touching nuclei make a waisted (less convex) pair, or a pair larger
    than one nucleus. So a pair whose union fills at least ``solidity`` of its convex hull and
    is at most ``max_area`` times the median object is one nucleus (both values chosen on the
    52 validation images of nuclei-train, not on nuclei-dev).
    """
    n = int(labels.max())
    if n < 2:
        return labels
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    sizes = areas[1:][areas[1:] > 0]
    limit = max_area * float(np.median(sizes))
    keys_l = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        keys_l.append(lo.astype(np.int64) * (n + 1) + hi)
    keys = np.unique(np.concatenate(keys_l))
    lo, hi = keys // (n + 1), keys % (n + 1)
    small = areas[lo] + areas[hi] <= limit
    if not small.any():
        return labels
    boxes = ndi.find_objects(labels)
    pairs = []
    for x, y in zip(lo[small].tolist(), hi[small].tolist(), strict=True):
        bx, by = boxes[x - 1], boxes[y - 1]
        if bx is None or by is None:
            continue
        box = tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(bx, by, strict=True))
        both = (labels[box] == x) | (labels[box] == y)
        if both.sum() >= solidity * convex_hull_image(both).sum():
            pairs.append((x, y))
    return _join(labels, pairs) if pairs else labels


def _join(labels: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """``labels`` with each pair of objects (and chains of pairs) made one, the lowest id kept."""
    n = int(labels.max())
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n + 1)])
    return roots[labels].astype(np.int32)


def boundary_ambiguity(prob: np.ndarray, work_d: float = WORK_DIAMETER) -> float | None:
    """Pixels whose foreground probability is between 0.2 and 0.8, per pixel called nuclear
    (> 0.5), on working-scale maps; None when less than half a nucleus is called nuclear.

    Crisp nuclei at the working size have a band of such pixels along their outlines only
    (0.3-0.6 per nuclear pixel on images segmented well); faint nuclei, crowds the network
    cannot part, or nuclei far from what it was trained on widen it. Per image it tracks the
    error (Spearman -0.46 against detection F1 over nuclei-dev, nuclei-train's validation
    images and their renders): above :data:`AMBIGUOUS_ABOVE`, 14 of those 296 images, F1
    0.25-0.88, none >= 0.9. Confident mistakes it does not see: only 10 of the 43 images below
    F1 0.8 are flagged (docs/model-card.md, Segmentation).
    """
    nuclear = int(np.count_nonzero(prob > 0.5))
    if nuclear < 0.5 * math.pi * (work_d / 2) ** 2:
        return None
    unsure = int(np.count_nonzero((prob > 0.2) & (prob < 0.8)))
    return unsure / nuclear


def contrast(prep: Prepared, prob: np.ndarray, work_d: float = WORK_DIAMETER) -> float | None:
    """How far the brightest pixel called nuclear stands out of the background, in SDs of the
    background after smoothing at the nuclear-core scale (Gaussian, 2 working px), the SD read
    about the background's local level (:func:`_local_level`); None when nothing is called nuclear.

    In a field of pure camera noise the network, asked for nuclei, finds them: the scale
    search shrinks to the noise grain and thousands of specks follow (3,603 objects in an empty
    1024^2 16-bit render). Real nuclei, the dimmest included, stand 42 or more SDs out of their
    background at the working scale; noise peaks reach 8.7 (model card, Segmentation). Per object
    this is no use (a dim nucleus next to bright ones can be as faint as noise); per image it is.
    """
    nuclear = prob > 0.5
    if not nuclear.any():
        return None
    k = work_d / WORK_DIAMETER  # the lengths below are for 12 px nuclei
    smooth = ndi.gaussian_filter(prep.excess, 2.0 * k)
    background = ~ndi.maximum_filter(prob > 0.2, size=2 * round(3 * k) + 1)
    if np.count_nonzero(background) > 500:
        sample = smooth[background]
        # the spread is read about the background's local level (Gaussian, ~2 nuclei): the block
        # background leaves ramps where the light falls off, and those are not noise. A 512^2
        # synthetic field of 200 nuclei whose corners get 30 % of the light read 15 SDs by the
        # plain spread (called empty: no cell counted), 280 about the local level (flat: 393 -> 408)
        spread = (smooth - _local_level(smooth, background, 20.0 * k))[background]
    else:
        sample = spread = smooth.ravel()
    level = float(np.median(sample[:: max(1, sample.size // 200_000)]))
    spread = spread[:: max(1, spread.size // 200_000)]
    sd = 1.4826 * float(np.median(np.abs(spread - np.median(spread))))
    return (float(smooth[nuclear].max()) - level) / max(sd, 1e-6 * max(abs(level), 1.0), 1e-12)


def _local_level(img: np.ndarray, background: np.ndarray, sigma: float = 20.0, f: int = 4) -> np.ndarray:
    """The level of the ``background`` pixels of ``img`` around each pixel: their Gaussian-weighted
    mean at ``sigma`` px (about two nuclei), computed on ``f`` x ``f`` blocks and brought back."""
    num = ndi.gaussian_filter(block_mean_padded(np.where(background, img, 0.0), f), sigma / f)
    den = ndi.gaussian_filter(block_mean_padded(background.astype(np.float32), f), sigma / f)
    h, w = img.shape
    return ndi.zoom(num / np.maximum(den, 1e-6), f, order=1, mode="nearest", grid_mode=True)[:h, :w]


def _ambiguity_or_inf(prob: np.ndarray, work_d: float = WORK_DIAMETER) -> float:
    a = boundary_ambiguity(prob, work_d)
    return math.inf if a is None else a


def _median_size(maps: np.ndarray, work_d: float = WORK_DIAMETER) -> float | None:
    """The network's median nucleus diameter (working px) over confident nuclear pixels; in a sparse
    frame where a few large objects outweigh many small, isolated ones by pixels, one vote per object
    (:func:`_outweighed_by_few`)."""
    sel = maps[0] > 0.7
    if sel.sum() < 20:
        return None
    log_size = float(np.median(maps[2][sel]))
    by_object = _outweighed_by_few(maps, log_size, work_d)
    return float(work_d * 2 ** (log_size if by_object is None else by_object))


def _object_log_sizes(maps: np.ndarray, work_d: float = WORK_DIAMETER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pass's objects (its foreground labelled), the labels of those of at least the minimum
    object's area, and each one's mean log2 size / working size (bincount: a per-object median costs
    ~1 s on a 2048^2 field)."""
    objects, n = ndi.label(maps[0] > 0.5)
    flat = objects.ravel()
    areas = np.bincount(flat, minlength=n + 1)
    keep = np.flatnonzero(areas[1:] >= min_object_area(work_d=work_d)) + 1
    sizes = (np.bincount(flat, weights=maps[2].ravel(), minlength=n + 1)[keep] / areas[keep]).astype(np.float64)
    return objects, keep, sizes


#: a frame is sparse when the network's foreground covers less than this share of it
_SPARSE_FOREGROUND = 0.1


def _outweighed_by_few(maps: np.ndarray, pixel_vote: float, work_d: float = WORK_DIAMETER) -> float | None:
    """The median over objects of each one's mean log size when a sparse frame's pixel vote is set by a
    few large objects while most objects are small and lie apart (cells scattered over a CellSearch-like
    frame beside one large artefact: the pixel vote followed the artefact and the scale lost every
    cell); None otherwise. Small objects packed together are the texture of large nuclei (their
    chromocentres), where the large objects are the nuclei and the pixel vote is right."""
    fg = maps[0] > 0.5
    if fg.mean() >= _SPARSE_FOREGROUND:
        return None
    objects, keep, sizes = _object_log_sizes(maps, work_d)
    if keep.size < 8:
        return None
    count_vote = float(np.median(sizes))
    if pixel_vote - count_vote < 1.0:  # within 2x: no few-against-many
        return None
    small = sizes < 0.5 * (pixel_vote + count_vote)
    if small.mean() < 0.75:
        return None
    centres = np.asarray(ndi.center_of_mass(fg, objects, keep[small]))
    diameter = work_d * 2 ** float(np.median(sizes[small]))
    gaps, _ = cKDTree(centres).query(centres, k=2)  # the nearest other small object of each
    return count_vote if float(np.median(gaps[:, 1])) > 4 * diameter else None


def _most_objects_agree(maps: np.ndarray, work_d: float = WORK_DIAMETER) -> bool:
    """Whether most objects of a pass (one vote each) measure within the trained band of the
    working size, whatever the pixel-weighted median says: one 80 px artefact among 24 cells
    of 11 px outweighs them all by pixels (it made a correct pixel size look 4x off, and the
    cells were lost), but not by count. A pixel size that is really wrong has every object off."""
    objects, n = ndi.label(maps[0] > 0.5)
    if n == 0:
        return False
    areas = np.bincount(objects.ravel(), minlength=n + 1)[1:]
    keep = np.flatnonzero(areas >= min_object_area(work_d=work_d)) + 1
    if keep.size < 3:
        return False
    sizes = np.asarray(ndi.median(maps[2], objects, keep))
    return bool(np.mean(np.abs(sizes) < math.log2(SCALE_TOLERANCE)) > 0.5)


#: a scale leaves a population behind when at least this share of objects (of at least
#: :data:`_POPULATION_MIN` objects) measure below the trained band of the working size
_SMALLER_SHARE = 0.3
_POPULATION_MIN = 20


def smaller_population(maps: np.ndarray, work_d: float = WORK_DIAMETER) -> tuple[float, float] | None:
    """``(share, diameter)`` of the objects of a pass that measure below the trained band of the
    working size (diameter in working px, their median), when they are :data:`_SMALLER_SHARE` or
    more of :data:`_POPULATION_MIN` or more objects; None otherwise.

    One scale is read per image, and the pixel vote follows the larger nuclei: a field whose right
    half is out of focus (blurred nuclei look larger) was worked at 32 px nuclei where its sharp
    half's are 11, and 85 of that half's 155 nuclei were lost without a word. Worked at the smaller
    size, the larger nuclei are still found (a pixel size that gives the sharp nuclei's size finds
    all 300). In nuclei-dev, the 52 validation images with 20 or more objects and the four renders
    of nuclei-dev, this share stays at or under 0.23 (half-blurred fields: 0.42-0.43)."""
    _objects, keep, sizes = _object_log_sizes(maps, work_d)
    if keep.size < _POPULATION_MIN:
        return None
    small = sizes < -math.log2(SCALE_TOLERANCE)
    share = float(small.mean())
    if share < _SMALLER_SHARE:
        return None
    return share, float(work_d * 2 ** float(np.median(sizes[small])))


def _equivalent_diameter(labels: np.ndarray) -> float | None:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(2 * math.sqrt(np.median(areas) / math.pi)) if areas.size else None


def instance_zoom(factor: float) -> float:
    """How much finer than the working scale instances are drawn, for a pass at ``factor``.

    Large nuclei are worked smaller than recorded (a 40 px nucleus at 0.3x); labels drawn there
    and blown up come back in blocks of 3x3 recorded pixels. Drawn on maps enlarged back towards
    the recorded resolution (bilinear; never past it, since the zoom is at most 1 / factor) the
    outlines follow the nucleus: F1 at IoU 0.5 +0.006 to +0.017 on nuclei-dev, its two renders and
    the validation images, detection +0.001 to +0.003 (docs/model-card.md, Segmentation).
    """
    z = min(MAX_INSTANCE_ZOOM, 1.0 / factor)
    return z if z >= 1.2 else 1.0


def _zoom_maps(maps: np.ndarray, zoom: float) -> np.ndarray:
    """Maps enlarged ``zoom`` times (rays stay in working diameters: ``instances`` is told the zoom)."""
    t = torch.from_numpy(np.ascontiguousarray(maps))[None]
    size = (round(maps.shape[1] * zoom), round(maps.shape[2] * zoom))
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].numpy()


def _resize_labels(lab: np.ndarray, h: int, w: int) -> np.ndarray:
    if lab.shape == (h, w):
        return lab
    ry = np.minimum(((np.arange(h) + 0.5) * lab.shape[0] / h).astype(np.intp), lab.shape[0] - 1)
    rx = np.minimum(((np.arange(w) + 0.5) * lab.shape[1] / w).astype(np.intp), lab.shape[1] - 1)
    return lab[ry][:, rx]


def _factor_for(diameter: float, shape: tuple[int, int], work_d: float = WORK_DIAMETER) -> float:
    f = work_d / diameter
    if abs(math.log(f)) < math.log(1.2):
        f = 1.0  # close enough: the network is trained on a band of sizes, spare the resampling
    return min(f, MAX_UPSAMPLE, math.sqrt(MAX_WORK_PIXELS / (shape[0] * shape[1])))


def segment_nuclei(dapi: np.ndarray, diameter_px: float | None = None, *, weights: str | None = None
                   ) -> NucleiResult:
    """Nucleus labels of a 2-D DAPI image; ``diameter_px`` (e.g. 7 µm / pixel size) when known."""
    img = np.asarray(dapi, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    return segment_nuclei_with(load_model(weights), img, diameter_px)


#: fill around the content kept as context when a canvas is cropped to it (working px are more)
_CANVAS_MARGIN = 32


def _content_box(img: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` lines of a canvas to leave out: where the four corners share
    one value and everything off that value lies within a box of under half the frame (an image
    pasted onto a blank canvas, whose own dark background keeps its edges from reading as a
    straight fill line), the canvas beyond the box and a margin. None for any other image."""
    h, w = img.shape
    corner = img[0, 0]
    if not (img[0, -1] == corner and img[-1, 0] == corner and img[-1, -1] == corner):
        return None
    off = img != corner
    rows, cols = np.flatnonzero(off.any(axis=1)), np.flatnonzero(off.any(axis=0))
    if not rows.size:
        return None
    y0, y1 = max(0, rows[0] - _CANVAS_MARGIN), min(h, rows[-1] + 1 + _CANVAS_MARGIN)
    x0, x1 = max(0, cols[0] - _CANVAS_MARGIN), min(w, cols[-1] + 1 + _CANVAS_MARGIN)
    if (y1 - y0) * (x1 - x0) >= 0.5 * h * w or min(y1 - y0, x1 - x0) < 16:
        return None
    return int(y0), int(h - y1), int(x0), int(w - x1)


def segment_nuclei_with(model: NucleusUNet, dapi: np.ndarray, diameter_px: float | None = None) -> NucleiResult:
    """:func:`segment_nuclei` with a given network (training validates with this).

    Constant fill at the border (an image padded onto a larger canvas, the black beyond a scan's
    edge; :func:`classifier.preprocess.fill_border`) is left out: it is no background the network
    has seen, and it moved the scale search (nuclei-dev pasted into zero 1024^2 canvases: pooled
    F1 0.928 -> 0.808, dsb13 one 271 px object) and put false nuclei along the edge."""
    img = np.asarray(dapi, dtype=np.float32)
    top, bottom, left, right = _content_box(img) or fill_border(img)
    if top or bottom or left or right:
        h, w = img.shape
        inner = segment_nuclei_with(model, img[top:h - bottom, left:w - right], diameter_px)
        labels = np.zeros((h, w), np.int32)
        labels[top:h - bottom, left:w - right] = inner.labels
        inner.labels = labels
        return inner
    h, w = img.shape
    notes: list[str] = []
    passes = 0
    wd = model.work_diameter

    def probe(f: float) -> tuple[float, np.ndarray, float | None, Prepared]:
        nonlocal passes
        passes += 1
        prep = prepare(resample(img, f), wd)
        maps = predict_maps(model, prep.x, signal_regions(prep, wd))
        return f, maps, _median_size(maps, wd), prep

    def off(size: float | None) -> float:
        return abs(math.log(size / wd)) if size else math.inf

    if diameter_px is not None:
        source = "pixel size"
        f, maps, size, prep = probe(_factor_for(diameter_px, (h, w), wd))
        if size is not None and off(size) > math.log(SCALE_TOLERANCE) and not _most_objects_agree(maps, wd):
            estimate = size / f
            f, maps, size, prep = probe(_factor_for(estimate, (h, w), wd))
            source = "pixel size, corrected by the image"
            notes.append(f"nuclei measure about {estimate:.0f} px, not the {diameter_px:.0f} px the pixel size implies")
    else:
        source = "image"
        # two first looks, at a long side of 1024 px and of 384 px: small nuclei are seen in the
        # first, nuclei of 100 px or more in the second
        fine = min(1.0, 1024 / max(h, w))
        coarse = min(1.0, 384 / max(h, w))
        looks = [probe(fine)]
        if coarse < 0.75 * fine:
            looks.append(probe(coarse))

        def settle(look: tuple[float, np.ndarray, float | None, Prepared], budget: int
                   ) -> tuple[float, np.ndarray, float | None, Prepared]:
            """Follow a look's size estimate with further passes (at most ``budget``) until it
            settles; a scale looked at already is taken from ``looks``, once."""
            f, maps, size, prep = look
            seen = {f}
            spent = 0
            while size is not None and spent < budget:
                new_f = _factor_for(size / f, (h, w), wd)
                if abs(math.log(new_f / f)) < math.log(_RESCALE_BAND):
                    break  # settled
                earlier = [lk for lk in looks if abs(math.log(new_f / lk[0])) < math.log(_RESCALE_BAND)]
                if earlier:
                    if earlier[0][0] in seen:
                        break
                    f, maps, size, prep = earlier[0]
                    seen.add(f)
                    continue
                looks.append(probe(new_f))
                spent += 1
                f, maps, size, prep = looks[-1]
                seen.add(f)
            return f, maps, size, prep

        implied = [_factor_for(lk[2] / lk[0], (h, w), wd) for lk in looks if lk[2] is not None]
        if len(implied) == 2 and abs(math.log(implied[0] / implied[1])) > math.log(SCALE_TOLERANCE):
            # two readings of one image: the fine look sees small nuclei, or the texture of large
            # ones (chromocentres read as nuclei: 607 objects for 58 nuclei on dsb14's render), the
            # coarse look large nuclei. Each is followed to its own scale and the one whose outlines
            # the network is surer of wins: texture read as nuclei leaves wide unsure rims (ambiguity
            # 0.75-2.6 against 0.18-0.64 for the nuclei themselves, model card, Segmentation)
            readings = [settle(look, _MAX_PASSES - 1) for look in list(looks)]
            f, maps, size, prep = min(readings, key=lambda r: _ambiguity_or_inf(r[1][0], wd))
        else:
            # one reading: the look whose nuclei are nearest the working size (where the network's
            # size estimate is surest) sets the scale
            f, maps, size, prep = settle(min(looks, key=lambda look: off(look[2])), _MAX_PASSES + 1 - passes)
    smaller_share = None
    if source == "image" and (smaller := smaller_population(maps, wd)) is not None:
        # a second, smaller population the scale left behind (part of the field out of focus, or
        # two kinds of cells): one pass at its size, where the larger nuclei are still found
        share, small_d = smaller
        finer = _factor_for(small_d / f, (h, w), wd)
        if finer > f * _RESCALE_BAND:
            f, maps, size, prep = probe(finer)
            smaller_share = share
    stands_out = contrast(prep, maps[0], wd)
    if stands_out is not None and stands_out < EMPTY_BELOW:
        # no nuclei (an empty field, or not a nuclear stain): whatever the network saw is noise
        return NucleiResult(labels=np.zeros((h, w), np.int32), diameter_px=wd / f,
                            measured_diameter_px=None, scale_source=source, passes=passes, factor=f,
                            notes=notes, contrast=stands_out)
    zoom = instance_zoom(f)
    lab_w = instances(_zoom_maps(maps, zoom) if zoom > 1 else maps, zoom=zoom, work_d=wd)
    labels = _resize_labels(lab_w, h, w)
    measured = _equivalent_diameter(lab_w)
    return NucleiResult(labels=labels, diameter_px=wd / f,
                        measured_diameter_px=measured / (f * zoom) if measured else None,
                        scale_source=source, passes=passes, factor=f, notes=notes,
                        ambiguity=boundary_ambiguity(maps[0], wd), contrast=stands_out,
                        smaller_share=smaller_share)
