"""From an image and an event position to the model's input: a normalised crop at a
fixed physical scale, with the event's nucleus and cell masks.

Steps (the *preprocessing contract*: :class:`classifier.contract.PreprocessContract`, stored
with the weights and checked on load; the numeric kernels are :mod:`classifier.kernels`):

1. **Channels** are mapped by name to the model's order (``DAPI, CK, CD45, AF``);
   an optional channel that is absent is all zeros (the model was trained so).
2. **Intensity**: per channel, ``(x - bg) / (top - bg)`` read on the whole input image
   (a frame wider than the validated framing: its central window, below), clipped, where
   ``top`` is the 99.9th percentile of a smoothed copy (the brightest objects) and ``bg``
   the lower of p20 and the darkest block means (a frame the cell fills has p20 inside
   the cell; its darkest blocks are still background).
   Affine-invariant, so raw 16-bit counts and 8-bit stretched renders of the same cells agree.
3. **Scale**: the input is resampled to ``um_per_px``. The pixel size comes from the
   caller or file metadata; otherwise it is estimated from the median diameter of the
   image's nuclei (DAPI objects) other than the event's, which are mostly leukocytes of
   known size. With fewer than three such neighbours (a tight crop: the cell fills the
   frame) the event's own nucleus is the reference, at a candidate's typical diameter
   (``lone_nucleus_um``) -- the population median would then be the event itself, and a
   large CTC would be taken for a leukocyte 1.5-2x too small.
4. **Crop** ``crop_px`` square around the centre object (events) or a cell (fields).
5. **Masks**: the event's nucleus and cell body, segmented on the normalised crop (nuclei
   from DAPI; body = DAPI|CK|CD45 foreground in the nucleus' Voronoi region).

Event thumbnails wider than the validated framing (:data:`ANALYSIS_FRAME_UM`, on the longer side,
padding left out): step 2's anchors and the foreground thresholds are read on the central window of
that width only; the scale is still read on every nucleus of the frame, and only a pixel size,
given or estimated, of :data:`WINDOW_MAX_PX_UM` or finer cuts a window (:func:`analysis_side`). What lies beyond is
other cells, which moved the event's attributes with the export's framing (issue 11, tenth session:
ctc-dev among neighbours in a 150 µm frame, BA 0.81, 100 µm window 0.95). This is part of
:func:`prepare_image`, so training, fine-tuning replay and ``evaluate`` see it as inference does.

Every image, first: burned-in scale bars (a filled rectangle at a channel's maximum) are set to
the background (:func:`remove_overlays`).

Fields only (cells anywhere in a large image; never thumbnails, so training and the validated
gallery path are unchanged), before step 2: each channel's slowly varying background is levelled
(:func:`flatten_background`) and CD45's bleed-through into CK, read from the field, is taken out
(:func:`compensate_bleed`). Single hot pixels are removed from a field before anything else,
segmentation included (:func:`remove_hot_pixels`, called by the engine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from classifier.channel_names import canonical
from classifier.contract import CLIP, HIGH_PCT, LOW_PCT, PreprocessContract
from classifier.errors import InputError
from classifier.kernels import (
    bilinear,
    block_background,
    block_mean,
    median_disc_diameter,
    otsu_rows,
    percentile_rows,
)


@dataclass
class Prepared:
    """A batch of events ready for features and the model."""

    crops: np.ndarray  # float32 (N, C, S, S), normalised, model channel order
    nucleus: np.ndarray  # bool (N, S, S)
    cell: np.ndarray  # bool (N, S, S)
    x: np.ndarray  # float64 (N,) event centroid in input pixels
    y: np.ndarray
    px_um: np.ndarray  # float64 (N,) pixel size used for each input
    scale_source: list[str]  # "given" | "estimated" | "default"
    #: bool (N,): the event's image was analysed on its central window (:func:`analysis_side`); the
    #: domain check reports what was done rather than deciding it again (None: no event was)
    windowed: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @classmethod
    def concat(cls, parts: Sequence[Prepared], contract: PreprocessContract) -> Prepared:
        if not parts:
            s, c = contract.crop_px, len(contract.channels)
            return cls(np.zeros((0, c, s, s), np.float32), np.zeros((0, s, s), bool), np.zeros((0, s, s), bool),
                       np.zeros(0), np.zeros(0), np.zeros(0), [], np.zeros(0, bool))
        return cls(
            np.concatenate([p.crops for p in parts]),
            np.concatenate([p.nucleus for p in parts]),
            np.concatenate([p.cell for p in parts]),
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.px_um for p in parts]),
            [s for p in parts for s in p.scale_source],
            np.concatenate([p.windowed_flags() for p in parts]),
        )

    def windowed_flags(self) -> np.ndarray:
        """bool (N,): :attr:`windowed`, all False when unset."""
        return np.zeros(len(self), bool) if self.windowed is None else np.asarray(self.windowed, bool)


# --- channels and intensity ------------------------------------------------------------


def map_channels(image: np.ndarray, channels: Sequence[str], contract: PreprocessContract, source: str = "image"
                 ) -> np.ndarray:
    """Reorder ``image`` (C, H, W) to the contract's channels; absent optional ones are zeros."""
    if image.ndim != 3:
        raise InputError(f"{source}: expected a (channels, height, width) image, got shape {image.shape}.")
    if image.shape[0] != len(channels):
        raise InputError(f"{source}: {image.shape[0]} channels in the image but {len(channels)} channel names "
                         f"({', '.join(channels)}).")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"{source}: unsupported pixel type {image.dtype}.")
    names = [(canonical(c) or c.strip().upper()) for c in channels]
    index = {n: i for i, n in enumerate(names)}
    missing = [c for c in contract.required if c not in index]
    if missing:
        raise InputError(f"{source}: missing required channel(s) {', '.join(missing)} "
                         f"(has {', '.join(names)}; {', '.join(contract.required)} are required).")
    h, w = image.shape[1:]
    if h < 8 or w < 8:
        raise InputError(f"{source}: image of {h}x{w} pixels is too small to hold a cell.")
    out = np.zeros((len(contract.channels), h, w), np.float32)
    for k, name in enumerate(contract.channels):
        if name in index:
            out[k] = image[index[name]]
    if not np.isfinite(out).all():
        raise InputError(f"{source}: image contains NaN or infinite values.")
    return out


#: a padded frame keeps at least this many pixels of image across (as :func:`map_channels` asks of any)
MIN_CONTENT_PX = 8
#: border fill is at least this thick: one constant line can be a quantised dim edge or a frame line
#: drawn by the viewer (ctc-dev divided by 6 in 8 bits has one), and leaving it in costs nothing
MIN_FILL_PX = 2
#: ... and ends at a straight edge: at most this share of the next line's pixels still at the fill value
MAX_EDGE_AT_FILL = 0.5


def fill_border(image: np.ndarray) -> tuple[int, int, int, int]:
    """How many whole border rows/columns of a (C, H, W) image are fill: ``(top, bottom, left, right)``.

    A line is fill when every channel is exactly constant along it, at the value of that side's
    outermost line: padding to a larger frame, or the black beyond the scan edge of a cell there;
    a side counts from :data:`MIN_FILL_PX` such lines on, when the line inside them is image (a
    flat clipped background, which fades into the scene, is not fill).
    Real background never is (it always has noise), so an unpadded image gives ``(0, 0, 0, 0)``
    after four cheap line checks. A frame that is constant throughout is blank, not padded."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[None]
    _c, h, w = a.shape

    def run(lines: np.ndarray, limit: int) -> int:
        # lines: (C, n, L), outermost first; fill while every channel equals its outermost line's first pixel
        ref = lines[:, :1, :1]
        n = 0
        while n < limit and bool((lines[:, n:n + 1] == ref).all()):
            n += 1
        if n < MIN_FILL_PX or n >= lines.shape[1]:
            return 0
        # padding ends at a straight edge: the next line is image, nearly all of it off the fill value;
        # a flat clipped background (a JPEG's or a harsh stretch's black) fades into the scene instead
        edge = (lines[:, n] == ref[:, 0]).all(axis=0)
        return n if float(edge.mean()) <= MAX_EDGE_AT_FILL else 0

    top = run(a, h - MIN_CONTENT_PX)
    bottom = run(a[:, ::-1], h - MIN_CONTENT_PX - top)
    rows = a[:, top:h - bottom]
    left = run(rows.transpose(0, 2, 1), w - MIN_CONTENT_PX)
    right = run(rows[:, :, ::-1].transpose(0, 2, 1), w - MIN_CONTENT_PX - left)
    if top or bottom or left or right:
        inside = rows[:, :, left:w - right].reshape(a.shape[0], -1)
        if bool((inside.min(axis=1) == inside.max(axis=1)).all()):
            return 0, 0, 0, 0
    return top, bottom, left, right


def _darkest_block_level(small: np.ndarray, grid: int = 8) -> np.ndarray:
    """Per-channel background robust to framing: the median of the darkest eighth of
    ``grid`` x ``grid`` block means. When the cell fills the frame, p20 of the pixels lies
    inside the cell; the frame's darkest blocks (its corners, the gaps between neighbours)
    are still background. The low anchor is the lower of the two, so a frame with
    background in it keeps the p20 anchor."""
    c, h, w = small.shape
    b = max(2, min(h, w) // grid)
    if h < 2 * b or w < 2 * b:
        return np.full(c, np.inf, np.float64)
    means = np.sort(block_mean(small, b).reshape(c, -1), axis=1)  # 64 values per channel
    k = max(1, means.shape[1] // 8)
    return 0.5 * (means[:, (k - 1) // 2] + means[:, k // 2])  # median of the k darkest


def normalise(image: np.ndarray) -> np.ndarray:
    """Robust per-channel affine normalisation (see module docstring)."""
    return _normalise(image)[0]


def _normalise(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Normalised image, plus its smoothed block-averaged copy (normalised the same way)
    and the block factor, which :func:`analyse_objects` reuses instead of recomputing."""
    lo, span, smooth_norm, f = _anchors(image)
    return _apply_anchors(image, lo, span), smooth_norm, f


def _apply_anchors(image: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    out = image - lo[:, None, None].astype(np.float32)
    out /= span[:, None, None].astype(np.float32)
    np.clip(out, *CLIP, out=out)
    return out.astype(np.float32, copy=False)


def _anchors(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per-channel background ``lo`` and ``span`` (top - lo) of ``image``, its smoothed
    block-averaged copy normalised by them, and the block factor.

    The top anchor is the 99.9th percentile of a smoothed, block-averaged copy: close to
    the brightest *object* (not a hot pixel), so a CK+ event maps to ~1 whether it fills
    the thumbnail or a corner of a wide field -- a plain 99.5th percentile of the pixels
    depends on how much of the image the sparse CK signal covers.
    """
    c, h, w = image.shape
    f = max(1, min(4, min(h, w) // 80))
    small = block_mean(image, f) if f > 1 else image
    flat = small.reshape(c, -1)
    if flat.shape[1] > 12000:  # percentiles of a regular subsample are as robust and faster
        flat = flat[:, :: flat.shape[1] // 8000]
    lo = np.minimum(percentile_rows(flat, LOW_PCT), _darkest_block_level(small))
    smooth = ndi.gaussian_filter(small, (0.0, 1.0, 1.0)).reshape(c, -1)  # sigma 0: channels stay apart
    hi = percentile_rows(smooth, HIGH_PCT)
    span = hi - lo
    if (span <= 0).any():  # a flat channel, or one whose only signal is a few pixels
        top = image.reshape(c, -1).max(axis=1)
        span = np.where(span > 0, span, top - lo)
        span = np.where(span > 0, span, 1.0)
    smooth_norm = np.clip((smooth - lo[:, None]) / span[:, None], *CLIP).reshape(small.shape).astype(np.float32)
    return lo, span, smooth_norm, f


# --- objects at native resolution ----------------------------------------------------------


@dataclass
class Objects:
    """Foreground analysis of a whole normalised image at its native resolution."""

    thresholds: np.ndarray  # (C,) smoothed-intensity thresholds per channel
    nucleus_diam_px: float | None  # median nucleus diameter (None if no nuclei)
    #: fewer than ``MIN_NEIGHBOURS`` nuclei besides the centre one: the size comes from the
    #: event itself (a tight crop), not from a leukocyte-dominated population
    lone: bool = False
    n_nuclei: int = 0


#: nuclei besides the event's needed to use the population median as the scale reference
MIN_NEIGHBOURS = 3

#: the widest event frame (µm) the model was validated on (ctc-dev: 160 px at 0.35-0.47 µm, 56-75
#: µm; 240 px crops of it held). A wider thumbnail is normalised and thresholded on its central
#: window of this width (:func:`setup_image`); the domain check still names the wide framing.
ANALYSIS_FRAME_UM = 100.0
#: a pixel size coarser than this cuts no analysis window (:func:`analysis_side`): estimated, the
#: median nucleus was under ~7 px at the reference size (specks, or a lone nucleus: a guess); given, a
#: wrong file calibration (which some exports write) would cut a validated 160 px thumbnail to a few
#: nuclei. Such frames are rescaled whole, and the domain check names the coarse pixel size.
WINDOW_MAX_PX_UM = 1.0


def _thresholds(smooth: np.ndarray) -> np.ndarray:
    """Foreground thresholds, bounded so that pure (stretched) noise stays background.

    Nuclei use the Otsu level itself (lower levels merge touching nuclei); markers use
    half of it, since a dim CK body next to a bright one is still cytoplasm."""
    c = smooth.shape[0]
    flat = smooth.reshape(c, -1)
    varies = flat.max(axis=1) > flat.min(axis=1)
    otsu = np.ones(c, smooth.dtype)  # a flat channel: 1.0, i.e. no foreground
    if varies.any():
        otsu[varies] = otsu_rows(smooth[varies, ::2, ::2].reshape(int(varies.sum()), -1))
    out = np.empty(c, np.float32)
    for k in range(c):
        t = otsu[k] if varies[k] else 1.0
        out[k] = float(np.clip(t, 0.15, 0.6)) if k == 0 else float(np.clip(0.5 * t, 0.15, 0.5))
    return out


def analyse_objects(norm: np.ndarray, nucleus_px: float | None = None, smooth_px: float = 1.0,
                    smoothed: tuple[np.ndarray, int] | None = None) -> Objects:
    """Thresholds and nucleus size, from a block-averaged copy where that keeps nuclei
    at least ~8 px across (``nucleus_px``: expected diameter when the pixel size is known;
    otherwise at most 4x and never below 80 px on the short side). ``smoothed``: a
    smoothed block-averaged copy already made by :func:`_normalise`, used if its factor fits."""
    f = max(1, int(nucleus_px // 8)) if nucleus_px is not None else max(1, min(4, min(norm.shape[1:]) // 80))
    obj = _objects_at(norm, f, smooth_px, smoothed)
    if nucleus_px is None and f > 1 and obj.nucleus_diam_px is not None and obj.nucleus_diam_px < 8 * f:
        # a wide frame at low magnification: blocks of f px blur nuclei under ~8 blocks
        # across into their neighbours (sizes come out ~1.3x too large); measure again finer
        f2 = max(1, int(obj.nucleus_diam_px // 8))
        if f2 < f:
            obj = _objects_at(norm, f2, smooth_px, smoothed)
    return obj


def _objects_at(norm: np.ndarray, f: int, smooth_px: float, smoothed: tuple[np.ndarray, int] | None) -> Objects:
    if smoothed is not None and smoothed[1] == f:
        smooth = smoothed[0][:3]
    else:
        small = block_mean(norm[:3], f) if f > 1 else norm[:3]
        smooth = ndi.gaussian_filter(small, (0.0, smooth_px, smooth_px))
    thr = _thresholds(smooth)
    dapi = smooth[0] > thr[0]
    lab, n = ndi.label(dapi)
    diam = None
    lone = False
    n_use = 0
    if n:
        areas = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        inner = np.ones(n, bool)
        inner[border[border > 0] - 1] = False
        ok = inner & (areas >= 4)
        centre = _centre_label(lab)
        # the event is a candidate, not a leukocyte: leave it out of the reference when
        # enough neighbours are there; with (almost) none, it is all the frame has
        others = ok.copy()
        if centre:
            others[centre - 1] = False
        if others.sum() >= MIN_NEIGHBOURS:
            use = areas[others]
        else:
            lone = True
            use = areas[centre - 1:centre] if centre and areas[centre - 1] >= 4 else areas[ok]
            if use.size == 0:
                use = areas[areas >= 4]
        n_use = int(ok.sum())
        if use.size:
            diam = median_disc_diameter(use) * f
    return Objects(thr, diam, lone, n_use)


def _centre_label(lab: np.ndarray) -> int:
    """The label of the object at (or, within 1/8 of the frame, nearest to) the centre; 0 if none."""
    h, w = lab.shape
    cy, cx = h // 2, w // 2
    if lab[cy, cx]:
        return int(lab[cy, cx])
    r = max(2, min(h, w) // 8)
    win = lab[max(cy - r, 0):cy + r + 1, max(cx - r, 0):cx + r + 1]
    ys, xs = np.nonzero(win)
    if ys.size == 0:
        return 0
    d = (ys - (cy - max(cy - r, 0))) ** 2 + (xs - (cx - max(cx - r, 0))) ** 2
    return int(win[ys[np.argmin(d)], xs[np.argmin(d)]])


def pixel_size(objects: Objects, given: float | None, contract: PreprocessContract) -> tuple[float, str]:
    if given is not None:
        return float(given), "given"
    if objects.nucleus_diam_px is not None and objects.nucleus_diam_px >= 3.0:
        ref = contract.lone_nucleus_um if objects.lone else contract.reference_nucleus_um
        return ref / objects.nucleus_diam_px, "estimated"
    return contract.um_per_px, "default"


def centre_object(shape: tuple[int, int]) -> tuple[float, float]:
    """The event position in a gallery thumbnail: its centre.

    Instruments centre the event when they export it; snapping to a nearby object's
    centroid was tried and moved crops onto touching leukocytes (merged foreground).
    """
    return (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0


# --- crops and masks ----------------------------------------------------------------------


def crop_at(norm: np.ndarray, y: float, x: float, px_um: float, contract: PreprocessContract) -> np.ndarray:
    """Resample a ``crop_px`` square centred on (y, x) to the contract's scale.

    Shrinking is anti-aliased to a Gaussian of 0.45 output pixels: an integer block mean
    does most of it cheaply (a 240 px window at 100x becomes 48 px before any filtering),
    a small Gaussian the rest; then linear interpolation on the target grid.
    """
    s = contract.crop_px
    factor = contract.um_per_px / px_um  # source pixels per model pixel
    half = s * factor / 2.0
    y0, x0 = int(np.floor(y - half)), int(np.floor(x - half))
    n = int(np.ceil(2 * half)) + 2
    c, h, w = norm.shape
    win = np.zeros((c, n, n), np.float32)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + n, h), min(x0 + n, w)
    if ye > ys and xe > xs:
        win[:, ys - y0:ye - y0, xs - x0:xe - x0] = norm[:, ys:ye, xs:xe]
    k = int(factor) if factor >= 2.0 else 1
    if k > 1:
        win = block_mean(win, k)
    if factor > 1.2:
        # target variance (0.45 factor)^2 in source pixels, minus what the block mean did
        rest = (0.45 * factor) ** 2 - (k * k - 1) / 12.0
        if rest > 0.01:
            sig = float(np.sqrt(rest)) / k
            win = ndi.gaussian_filter(win, (0.0, sig, sig))
    grid = (np.arange(s, dtype=np.float32) - (s - 1) / 2.0) * factor
    gy = (grid + (y - y0) - (k - 1) / 2.0) / k
    gx = (grid + (x - x0) - (k - 1) / 2.0) / k
    return bilinear(win, gy, gx)


def masks(crop: np.ndarray, thresholds: np.ndarray, um_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus and cell-body masks of the object at the crop's centre."""
    s = crop.shape[-1]
    c = s // 2
    sm = ndi.gaussian_filter(crop[:3], (0.0, 0.8, 0.8))
    nuc_fg = sm[0] > thresholds[0]
    fg = nuc_fg | (sm[1] > thresholds[1]) | (sm[2] > thresholds[2])
    nlab, n = ndi.label(nuc_fg)
    r_near = 5.0 / um_per_px
    yy, xx = np.ogrid[:s, :s]
    rr = np.hypot(yy - c, xx - c)
    seed = int(nlab[c, c])
    if not seed and n:
        # the centre fell between nuclei (an event exported a few px off centre): take the
        # nucleus covering most of the disc around it, not the one with the nearest pixel, which
        # after a 3 px move was a touching leukocyte's (issue 11, the instability probe)
        disc = rr <= r_near
        counts = np.bincount(nlab[disc], minlength=n + 1)
        counts[0] = 0
        if counts.any():
            tied = np.flatnonzero(counts == counts.max())  # a tie goes to the nucleus nearest the centre
            seed = int(tied[np.argmin([rr[disc & (nlab == t)].min() for t in tied])])
    if seed:
        vor = expand_labels(nlab, distance=int(10.0 / um_per_px))
        region = fg & ((vor == seed) | (vor == 0)) & (rr <= 14.0 / um_per_px)
        comp, _ = ndi.label(region)
        keep = np.unique(comp[nlab == seed])
        cell = np.isin(comp, keep[keep > 0])
        nucleus = nlab == seed
        return nucleus, cell | nucleus
    comp, k = ndi.label(fg & (rr <= 14.0 / um_per_px))
    if k:
        hit = int(comp[c, c])
        if not hit:
            near = (comp > 0) & (rr <= 8.0 / um_per_px)
            if near.any():
                hit = int(comp[near][np.argmin(rr[near])])
        if hit:
            return np.zeros((s, s), bool), comp == hit
    return np.zeros((s, s), bool), rr <= 4.0 / um_per_px


# --- public entry points ----------------------------------------------------------------------


@dataclass
class ImageSetup:
    """The per-image half of :func:`prepare_image`: what every event of the image shares."""

    norm: np.ndarray  # float32 (C, H, W), normalised, model channel order
    thresholds: np.ndarray  # (3,) foreground thresholds of the smoothed channels
    px_um: float
    scale_source: str  # "given" | "estimated" | "default"
    #: ``(y0, y1, x0, x1)`` in the content's pixels (inside any border fill) of the square whose anchors
    #: and thresholds were used (:func:`analysis_window`); None: the whole frame's
    window: tuple[int, int, int, int] | None = None


def setup_image(
    image: np.ndarray,
    channels: Sequence[str],
    contract: PreprocessContract,
    pixel_size_um: float | None = None,
    source: str = "image",
    *,
    field: bool = False,
) -> ImageSetup:
    """Channels, intensity normalisation, thresholds and pixel size of one image.

    ``field``: a whole field (cells anywhere in it), whose slowly varying background is
    flattened first (:func:`flatten_background`); an event thumbnail is too small for that."""
    mapped = map_channels(np.asarray(image), channels, contract, source)
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise InputError(f"{source}: pixel size must be a positive number of µm, got {pixel_size_um!r}.")
    # constant fill at the border (padding, a cell at the scan edge) is not part of the scene: the
    # intensity anchors and nuclei are measured on the image inside it (the fill would drag p20 to
    # the fill value, and make nuclei cut by the real edge look whole), and the fill itself becomes
    # background (0), as the frame's outside is in crop_at; an unpadded image takes the plain path
    h, w = mapped.shape[1:]
    top, bottom, left, right = fill_border(mapped)
    content = mapped[:, top:h - bottom, left:w - right] if top or bottom or left or right else mapped
    content = remove_overlays(content)
    if field:
        content = flatten_background(content, contract.reference_nucleus_um / pixel_size_um if pixel_size_um else None)
        content = compensate_bleed(content, contract.channels)
    nucleus_px = contract.reference_nucleus_um / pixel_size_um if pixel_size_um else None
    centre = ((h - 1) / 2.0 - top, (w - 1) / 2.0 - left)  # the frame's centre, in the content's pixels
    side = None if field or pixel_size_um is None else analysis_side(content.shape[1:], pixel_size_um, "given")
    if side is None:
        norm, smooth_small, block = _normalise(content)
        objects = analyse_objects(norm, nucleus_px, smoothed=(smooth_small, block))
        px_um, how = pixel_size(objects, pixel_size_um, contract)
        thresholds = objects.thresholds
        if not field and pixel_size_um is None:
            # the scale stays the whole frame's (more nuclei, a surer median); a wide frame's intensity
            # anchors and thresholds are then its window's, as if exported like the validated images
            side = analysis_side(content.shape[1:], px_um, how)
    else:  # the scale is known: the whole frame's anchors and objects would be thrown away
        px_um, how = float(pixel_size_um), "given"
    window = None
    if side is not None:
        # the window's objects at the known scale's block factor, as the same window exported alone
        # with that scale given would be analysed
        window = analysis_window(content.shape[1:], side, centre)
        norm, thresholds = _window_analysis(content, window, contract.reference_nucleus_um / px_um)
    if content.shape != mapped.shape:
        framed = np.zeros(mapped.shape, np.float32)
        framed[:, top:h - bottom, left:w - right] = norm
        norm = framed
    return ImageSetup(norm, thresholds, px_um, how, window)


def analysis_frame_px(px_um: float) -> int:
    """The validated framing's width (:data:`ANALYSIS_FRAME_UM`) in pixels of ``px_um``."""
    return max(MIN_CONTENT_PX, int(round(ANALYSIS_FRAME_UM / px_um)))


def analysis_side(scene: tuple[int, int], px_um: float, scale_source: str) -> int | None:
    """The side (px) of the square an event frame is analysed on, or None: the whole frame (every
    validated thumbnail, as before). ``scene``: the frame's size inside any constant border fill
    (padding is not scene); ``scale_source`` as :func:`pixel_size` gives it.

    Only a frame whose longer side spans more than :func:`analysis_frame_px`, at a scale given or
    estimated from nuclei, and no coarser than :data:`WINDOW_MAX_PX_UM`; never at the default scale
    (no nuclei were measured). The domain check (:mod:`classifier.domain`) names the framing by the
    same width."""
    if scale_source not in ("given", "estimated") or not (np.isfinite(px_um) and 0 < px_um <= WINDOW_MAX_PX_UM):
        return None
    side = analysis_frame_px(px_um)
    return side if max(scene) > side else None


def analysis_window(shape: tuple[int, int], side: int, centre: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the square of ``side`` px around ``centre``, kept inside a frame of
    ``shape`` (a side shorter than ``side`` is kept whole)."""
    h, w = shape
    sy, sx = min(side, h), min(side, w)
    y0 = int(np.clip(round(centre[0] - (sy - 1) / 2.0), 0, h - sy))
    x0 = int(np.clip(round(centre[1] - (sx - 1) / 2.0), 0, w - sx))
    return y0, y0 + sy, x0, x0 + sx


def _window_analysis(content: np.ndarray, window: tuple[int, int, int, int], nucleus_px: float | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The whole ``content`` normalised by its window's anchors, and the window's thresholds."""
    y0, y1, x0, x1 = window
    lo, span, smooth_small, block = _anchors(content[:, y0:y1, x0:x1])
    norm = _apply_anchors(content, lo, span)
    return norm, analyse_objects(norm[:, y0:y1, x0:x1], nucleus_px, smoothed=(smooth_small, block)).thresholds


#: a plateau at a channel's maximum this large (px), filling its bounding box, is a burned-in bar
OVERLAY_MIN_PX = 24
#: ... when its sides are at least this (a 1 px line can be a saturated streak) and this long
OVERLAY_MIN_SIDES = (2, 8)


def remove_overlays(image: np.ndarray) -> np.ndarray:
    """(C, H, W) with burned-in scale bars (and the label text beside them) set to the channel's
    background level; the image itself when it has none.

    Viewers "flatten" a scale bar into exported thumbnails: a filled rectangle at the channel's
    maximum, in every channel or in one. The intensity anchors and the masks took it for signal:
    ctc-dev with a 6 x 80 px bar lost specificity (BA 0.955 -> 0.909; a leukocyte's p 0.16 -> 0.48),
    with the bar in CK only 0.864, the domain check reading in_domain. Light from a specimen never
    forms an exactly constant, axis-aligned rectangle (a saturated cell is a blob), so only those
    are taken, with same-valued strokes (the label) within a few bar heights of them."""
    out = image
    for c in range(image.shape[0]):
        plane = image[c]
        if not plane.size or plane.min() == plane.max():
            continue  # a blank plane (an absent AF written as zeros) is one big rectangle, and no overlay
        plateau = plane == plane.max()
        if not OVERLAY_MIN_PX <= np.count_nonzero(plateau) <= 0.2 * plane.size:
            continue
        lab, n = ndi.label(plateau)
        hit = np.zeros(plane.shape, bool)
        for k, box in enumerate(ndi.find_objects(lab), start=1):
            hh, ww = box[0].stop - box[0].start, box[1].stop - box[1].start
            area = int(np.count_nonzero(lab[box] == k))
            # a bar is long and thin: a square is more likely a saturated core enlarged by pixel replication
            if (area >= OVERLAY_MIN_PX and area == hh * ww and min(hh, ww) >= OVERLAY_MIN_SIDES[0]
                    and max(hh, ww) >= OVERLAY_MIN_SIDES[1] and max(hh, ww) >= 3 * min(hh, ww)):
                pad = 3 * min(hh, ww) + 14  # the label: above or below the bar, about as wide
                near = (slice(max(0, box[0].start - pad), box[0].stop + pad),
                        slice(max(0, box[1].start - 10), box[1].stop + 10))
                hit[near] |= plateau[near]
        if hit.any():
            if out is image:
                out = np.array(image, dtype=np.float32, copy=True)
            out[c][hit] = np.median(plane[~hit])
    return out


def _noise_sd(grid: np.ndarray) -> float:
    """A 2-D image's pixel noise (robust SD) from differences between horizontal neighbours: the
    spread of the pixels below the median also holds uneven light and the cells' dim edges (8x
    the noise in a synthetic field). 0.0 for an image one pixel wide."""
    if grid.shape[1] < 2:
        return 0.0
    return 1.4826 * float(np.median(np.abs(np.diff(grid, axis=1)))) / math.sqrt(2)


#: a pixel this many noise SDs above the brightest of its 8 neighbours, and more than twice as far
#: above the background as that neighbour, is a camera defect, not light through the optics
HOT_SDS = 6.0


def remove_hot_pixels(image: np.ndarray) -> np.ndarray:
    """(C, H, W) with single hot pixels (camera defects, cosmic rays) set to their brightest neighbour.

    The optics spread any real point over several pixels, so a pixel far above all 8 neighbours
    is not light from a cell; in a field it became CK "signal" at a leukocyte: 0.01 % / 0.05 % of
    pixels stuck at 65,535 in every channel gave 38 / 41 CTC calls where the clean field gave 34
    (32 right), 34 once removed. Shot noise on a bright cell never reaches twice its neighbour's
    level, so cells are left as they were (their calls unchanged). Returns ``image`` itself when
    nothing is hot."""
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    out = image
    for k in range(image.shape[0]):
        ch = image[k]
        grid = ch[::2, ::2]
        if grid.shape[1] < 2 or np.ptp(grid) == 0:
            continue
        sd = _noise_sd(grid)
        level = float(np.median(grid))
        near = ndi.maximum_filter(ch, footprint=ring, mode="nearest")
        hot = (ch - near > HOT_SDS * max(sd, 1e-6)) & (ch - level > 2 * np.maximum(near - level, 0))
        if hot.any():
            if out is image:
                out = image.copy()
            out[k][hot] = near[hot]
    return out


#: a field's background is read over blocks this many nuclei wide (gaps between cells in each)
BACKGROUND_BLOCK_NUCLEI = 10


def flatten_background(image: np.ndarray, nucleus_px: float | None) -> np.ndarray:
    """(C, H, W) with each channel's slowly varying background levelled to its median.

    The intensity anchors are one pair per channel for the whole image; a field whose
    background is uneven (vignetting, the tiles of a stitched mosaic at different offsets)
    then gets one reading of "background" that is wrong in part of it: a 4 x 4 mosaic with
    tile offsets of 0-300 counts called 22 of 35 CTCs, 35 once levelled. A flat field is left
    as it was, up to the noise of a low percentile."""
    d = nucleus_px if nucleus_px else 12.0
    block = int(np.clip(BACKGROUND_BLOCK_NUCLEI * d, 32, 512))
    c, h, w = image.shape
    if min(h, w) < 3 * block:  # too few blocks to tell background from a cell
        return image
    out = np.empty(image.shape, np.float32)
    for k in range(c):
        if np.ptp(image[k, ::8, ::8]) == 0 and np.ptp(image[k]) == 0:
            out[k] = image[k]  # an absent channel (zeros) or a constant one: nothing to level
            continue
        bg = block_background(image[k], block, 10)
        out[k] = image[k] - (bg - np.median(bg[::8, ::8]))
    return out


#: CD45 light seen in the CK channel below this share of it is left alone (filter sets leak ~1 %)
MIN_BLEED = 0.02
#: ... and a share above this is no bleed-through (a CK+ CD45+ population, or a channel mix-up)
MAX_BLEED = 0.5


def bleed_share(image: np.ndarray, src: int, dst: int) -> float:
    """The share of channel ``src``'s signal that channel ``dst`` shows where ``src`` is bright
    (:func:`readable_bleed_share`); 0.0 when there are too few such pixels to read it."""
    share = readable_bleed_share(image, src, dst)
    return 0.0 if share is None else share


def readable_bleed_share(image: np.ndarray, src: int, dst: int) -> float | None:
    """The share of channel ``src``'s signal that channel ``dst`` shows where ``src`` is bright.

    Read over the pixels where ``src`` stands well out of its noise (8 robust SDs or more; the
    brightest quarter of them when there are enough): the median of ``dst``'s excess over ``src``'s
    there. Where ``dst`` holds nothing of ``src`` it is ~0 (noise averages out); None when there
    are too few such pixels (a thumbnail without a clearly CD45-bright cell)."""
    step = max(1, int(np.sqrt(image.shape[1] * image.shape[2] / 250_000)))
    grid = image[src, ::step, ::step]
    sd = _noise_sd(grid)
    a, b = grid.ravel(), image[dst, ::step, ::step].ravel()
    # saturated pixels say nothing about the share (the clipped source shrinks the denominator):
    # with 8 % of CD45 clipped the share read 0.0, with 2 % 0.255 for 0.1
    unclipped = (a < a.max()) & (b < b.max())
    a = a - np.median(a)
    b = b - np.median(b)
    clear = unclipped & (a > 8 * max(sd, 1e-6))
    if np.count_nonzero(clear) < 200:
        return None
    bright = clear & (a >= np.percentile(a[clear], 75)) if np.count_nonzero(clear) >= 800 else clear
    return float(np.median(b[bright] / a[bright]))


def compensate_bleed(image: np.ndarray, channels: Sequence[str], share: float | None = None) -> np.ndarray:
    """A field with CD45's bleed-through taken out of its CK channel (``channels``: ``image``'s;
    ``share``: the share to take out, read from the image itself when None; galleries pass the
    share of their whole set, :mod:`classifier.bleed`).

    CK is anchored at its brightest objects (:func:`_normalise`); in a field without a CK+ cell
    those are the leukocytes whose CD45 leaks into the CK filter, stretched to a CTC's CK: 5 / 10 /
    20 % bleed in a CTC-free 400-cell field gave 9 / 19 / 32 CTC calls (the domain check saw
    nothing wrong). The share is read from the field itself (:func:`bleed_share`) and subtracted,
    as cytometers compensate; CTCs are CD45-negative and keep their CK. The other direction
    (CK into CD45) and DAPI into CK cost no calls there and are left alone."""
    names = list(channels)
    if "CD45" not in names or "CK" not in names:
        return image
    src, dst = names.index("CD45"), names.index("CK")
    if share is None:
        share = bleed_share(image, src, dst)
    if not MIN_BLEED <= share <= MAX_BLEED:
        return image
    level = np.median(image[src, ::4, ::4])
    out = image.copy()
    out[dst] -= np.float32(share) * np.maximum(image[src] - level, 0.0)
    return out


def prepare_centres(setup: ImageSetup, pts: Sequence[tuple[float, float]], contract: PreprocessContract
                    ) -> Prepared:
    """The per-event half of :func:`prepare_image`: a crop and masks at each (y, x).

    Each event depends only on ``setup`` and its own position, so the events of one
    image may be split across processes and concatenated in order."""
    crops, nucs, cells = [], [], []
    for y, x in pts:
        crop = crop_at(setup.norm, y, x, setup.px_um, contract)
        nuc, cell = masks(crop, setup.thresholds, contract.um_per_px)
        crops.append(crop)
        nucs.append(nuc)
        cells.append(cell)
    s = contract.crop_px
    n = len(pts)
    return Prepared(
        np.stack(crops) if n else np.zeros((0, len(contract.channels), s, s), np.float32),
        np.stack(nucs) if n else np.zeros((0, s, s), bool),
        np.stack(cells) if n else np.zeros((0, s, s), bool),
        np.array([p[1] for p in pts], float),
        np.array([p[0] for p in pts], float),
        np.full(n, setup.px_um),
        [setup.scale_source] * n,
        np.full(n, setup.window is not None),
    )


def prepare_image(
    image: np.ndarray,
    channels: Sequence[str],
    contract: PreprocessContract,
    pixel_size_um: float | None = None,
    centres: Sequence[tuple[float, float]] | None = None,
    source: str = "image",
) -> Prepared:
    """Prepare the events of one image.

    ``centres`` None: an event thumbnail, the event is the object at the centre.
    Otherwise one event per (y, x) (cells of a field image).
    """
    setup = setup_image(image, channels, contract, pixel_size_um, source, field=centres is not None)
    pts = [centre_object(setup.norm.shape[1:])] if centres is None else list(centres)
    return prepare_centres(setup, pts, contract)
