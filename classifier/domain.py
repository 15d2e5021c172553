"""An honest domain check: do these images look like what the model was validated on?

The shipped weights were trained on synthetic events and validated on real 8-bit,
4-channel (DAPI, CK, AF, CD45) gallery thumbnails of ~160 px, the event at the centre
among 10-40 leukocytes, at ~0.35-0.47 µm per pixel (ctc-dev). Real data unlike that
(other exports, RGB composites, other magnifications, field images from other
microscopes) can fail *silently*: the calls look as confident as ever. This module says
so, in sentences a lab scientist understands::

    {"status": "in_domain" | "shifted", "score": 0.0..1.0, "reasons": ["..."]}

Two kinds of evidence, combined into one score:

1. **Image-level rules** (:func:`image_signals`, :func:`image_findings`): how the image
   was rendered (AF channel present, RGB composite or JPEG, bit depth, used grey range,
   saturation, mid-tones after normalisation), its scale (pixel size and where it came
   from, frame width in µm) and its content (nuclei in the frame, how much of the frame
   the centre object covers). Each finding has a *severity* in [0, 1] and a reason.
2. **Attribute novelty** (:class:`Reference`): a Mahalanobis-type distance of each event's
   texture/fluorescence attributes (``classifier.features``) to their distribution over
   synthetic events rendered like the validated domain, stored beside the weights in
   ``NAME.domain.json`` with the weights' sha256 (``python -m classifier
   domain-calibrate``). Stats for other weights are not used: the check falls back to the
   image rules and says so.

An image's score is ``1 - prod(1 - severity)`` over its findings; it is ``shifted`` from
:data:`THRESHOLD`. A folder/upload's score is the larger of the mean image score and the
severity of its share of novel events; plain-language warnings (e.g. an implausible
object count in a field) make it ``shifted``. Calibration and rates: docs/model-card.md.

Cheap by design (a 1,000-event gallery costs ~0.3 s here): the image rules work on a point
sample of 40 x 40 px (the DAPI mid-tone on up to 96 x 96), the novelty on attributes the engine
computed anyway; only the nuclei's edge width is read at full resolution, on the central 256 px of
at most :data:`EDGE_SAMPLE` thumbnails of a set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from classifier.preprocess import ANALYSIS_FRAME_UM, analysis_frame_px, analysis_side, fill_border
from classifier.segmentation import NUCLEUS_DIAMETER_UM

if TYPE_CHECKING:
    from classifier.decoders import FileForm

try:
    from classifier.channel_names import canonical as _canonical
except ImportError:  # pragma: no cover
    def _canonical(name: str) -> str | None:
        return name.strip().upper() or None

#: an image (and a folder) is ``shifted`` from this score on
THRESHOLD = 0.5
#: version of the reference-statistics format (``NAME.domain.json``)
REFERENCE_FORMAT = 1

# The validated domain (ctc-dev: 18 events; see docs/model-card.md, "Domain check").
VALIDATED_CHANNELS = ("DAPI", "CK", "AF", "CD45")
VALIDATED_PX_UM = (0.33, 0.48)  # ctc-dev inferred 0.35-0.47 µm/px
COARSE_PX_UM = (1.0, 1.5)  # pixel sizes from which the rescaled image has lost the nuclei's detail
# ctc-dev 160 px x 0.35-0.47 = 56-75 µm; 240 px crops of it (93 µm) held. A wider event frame is
# analysed on its central ANALYSIS_FRAME_UM (classifier.preprocess), and still named here: the
# window was checked on emulated wide exports only
VALIDATED_FRAME_UM = (54.0, ANALYSIS_FRAME_UM)
#: an event frame this wide (µm) is more likely a whole field: the wide-framing reason says so
FIELD_LIKE_FRAME_UM = 200.0
VALIDATED_NUCLEI = (8, 70)  # ctc-dev 10-41 nuclei per 160 px frame
CK_POSITIVE = 0.3  # normalised CK over a nucleus above which it counts as CK-bright
# a gallery whose frames have the channel named CK bright over most of their nuclei has its channel
# names wrong: blood cells are CK-negative. Median over frames holding >= 8 nuclei: ctc-dev 0.08, its
# renderings <= 0.12, synthetic in-domain sets <= 0.06; ctc-dev named with CK and AF or CK and CD45
# swapped 0.70-1.00 (a helper's probe: 6-7 of 7 CTCs missed there, in_domain)
CK_EVERYWHERE = (0.3, 0.45)
# ... and one whose CK-bright events are nearly all bright in the channel named CD45 too: CTCs are
# CD45-negative. Share of CK+ centre objects with normalised CD45 > 0.3: ctc-dev 0.21 (its renderings
# 0.13-0.36), synthetic sets 0.04-0.48 (display gamma 0.6 the highest); ctc-dev named with AF and CD45
# swapped (the AF plane is a faint copy of DAPI, so it is bright at every nucleus) 0.93
CK_EVENTS_CD45 = (0.65, 0.8)
#: in a frame whose CK span is under CK_SIGNAL_NOISE_SDS pixel-noise SDs (:func:`pixel_noise`; no
#: CK-bright object, only noise and faint nonspecific CK), a nucleus counts as CK-bright only this many
#: noise SDs over the background too. Median share: synthetic wide frames without AF 0.58 -> 0.18;
#: ctc-dev as named 0.077 -> 0.077, named with CK and AF swapped 1.00 -> 1.00, CK and CD45 0.70 -> 0.70;
#: synthetic named with CK and AF swapped 0.89 -> 0.76 (0.51 with the noise rule in every frame, as
#: first shipped). Eleventh session, 2026-12-04
CK_POSITIVE_NOISE_SDS = 3.0
CK_SIGNAL_NOISE_SDS = 5.0
MIN_IMAGES_FOR_MARKERS = 5
#: the median share of a gallery's bright DAPI pixels (at least half the range) clipped at its top
#: (ctc-dev 0.000, per image <= 0.001; synthetic in-domain 0.003): an overexposed nuclear stain.
#: ctc-dev with DAPI x1.5 reads 0.12 (BA 0.883, one CTC lost, nothing else said), x2 0.38 (0.792)
NUCLEI_SATURATED = (0.05, 0.10)
#: how wide the nuclei's edges are against the nuclei themselves (the SD of a blurred step over the
#: median nucleus's diameter, :func:`nuclear_edge`; median over a set). The pixel size a lab gives or
#: the one inferred does not enter it, though magnification moves it (ctc-dev at 0.75x: 0.108, at 2x:
#: 0.092; see edge_blur for coarse pixels): ctc-dev 0.096 (its images 0.089-0.101, quartiles),
#: synthetic in-domain sets of 120 events 0.093-0.103 over five seeds and renderings; ctc-dev blurred
#: by 1 / 1.5 / 2 px reads 0.107 / 0.116 / 0.127 (BA 0.955 / 0.864 / 0.818), with pixel noise of SD 10
#: (8-bit) 0.104 / 0.112 / 0.119; the synthetic 2 px blur shift 0.126-0.130 (BA 0.881, in_domain until
#: this rule; model card)
VALIDATED_EDGE = 0.096
#: the edge rule's severity ramp over the median's excess beyond VALIDATED_EDGE and its own sampling
#: error (TONE_SIGNIFICANCE standard errors, as for the tone curve): shifted from 0.010 past both
EDGE_RAMP = (0.006, 0.014)
#: edges narrower than this (px) are set by the pixels, not the optics: ctc-dev at 0.5 / 0.75 of its
#: size reads 0.134 / 0.108 at 1.07 / 1.28 px (BA 1.000 / 0.955); coarse pixels are the pixel-size rule's
EDGE_MIN_PX = 1.4
#: the edges are measured at full resolution on at most this many images of a set, spread evenly ...
EDGE_SAMPLE = 48
#: ... and the rule speaks from this many measured images on
MIN_IMAGES_FOR_EDGES = 8
#: the largest nucleus of a validated thumbnail covers a small part of the frame
MAX_NUCLEUS_COVER = 0.06
#: median over a folder of :attr:`ImageSignals.midtone`: between ctc-dev's 0.594 (its CTCs 0.597,
#: the rest 0.591; within 0.011 when the content is moved by 1-3 px) and the synthetic training
#: renders' 0.635-0.667 (30-event sets), so that neither reads a shift. Display gamma 0.6 / 0.75 /
#: 1.33 / 1.6 takes ctc-dev to 0.71 / 0.67 / 0.50 / 0.44 (the calls moved at 0.6 and 1.6); a set's
#: median is judged from this many images on
VALIDATED_MIDTONE = 0.61
MIN_IMAGES_FOR_TONE = 8
#: a set's median mid-tone counts as moved only this many standard errors away: ctc-dev's images
#: spread 0.14 around it (SD), so 8-10 of its own events drawn at random read 0.10 off in 4-6 %
TONE_SIGNIFICANCE = 2.5
#: the tone rule's severity ramp over |median mid-tone - validated|: 0 at the first, 1 at the
#: second; its midpoint (shifted) is where classifier.tone re-maps, so a re-mapped set reads shifted
TONE_RAMP = (0.05, 0.11)
#: ... and from this severity on (0.065 off) it is said: the synthetic renders read up to 0.057 off
TONE_SAY = 0.25


def tone_midtones(signals: Sequence[ImageSignals]) -> list[float]:
    """The mid-tones a set's tone curve is read from: 8-bit display renders (raw counts are linear)
    framed like the validated thumbnails (where one cell fills the frame its own signal is the bulk of
    the pixels, whatever the curve), with a DAPI plane that is not flat. The domain check and
    classifier.tone read the same ones, so that a re-mapped set reads shifted."""
    return [s.midtone for s in signals if s.bit_depth == "8-bit" and s.nucleus_cover <= MAX_NUCLEUS_COVER
            and np.isfinite(s.midtone)]


def tone_shift(midtones: Sequence[float]) -> float:
    """How far a set's median mid-tone lies from :data:`VALIDATED_MIDTONE`, or 0.0 when the set is
    too small to tell or the distance is within its own sampling error (the standard error of a
    median, 1.25 SD / sqrt(n)). One reading for the domain check and the tone re-mapping alike."""
    m = np.asarray(midtones, float)
    if m.size < MIN_IMAGES_FOR_TONE:
        return 0.0
    shift = float(np.median(m)) - VALIDATED_MIDTONE
    se = 1.2533 * float(m.std(ddof=1)) / np.sqrt(m.size)
    return shift if abs(shift) >= TONE_SIGNIFICANCE * se else 0.0
#: how the tone rule's reason begins (classifier.tone replaces it when it re-mapped the curve)
TONE_REASON = "the brightness curve differs from the validated images"
#: a leukocyte-sized cell (9 µm) takes ~64 µm²: more objects than this per µm² cannot be cells
MIN_UM2_PER_OBJECT = 40.0

_COMPOSITE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LOSSY_SUFFIXES = (".jpg", ".jpeg")


# --- per-image signals ------------------------------------------------------------------------------


@dataclass
class ImageSignals:
    """What one input image looks like, in numbers (all cheap to compute)."""

    source: str
    height: int
    width: int
    channels: list[str]
    af_present: bool
    composite: bool  # an RGB composite (a colour picture), not separate fluorescence channels
    lossy: bool  # JPEG (a JPEG file, or JPEG / WebP compression inside a TIFF)
    bit_depth: str  # "8-bit" | "12-bit" | "16-bit" | "32-bit" | "signed integer" | "float"
    grey_range: float  # used fraction of the bit depth's range (DAPI, CK, CD45; min over them)
    saturated: float  # largest fraction of pixels at the top of the range, over channels
    midtone: float  # normalised 90th percentile of DAPI (events; fields, and events without a channel named DAPI:
    #                 median over DAPI/CK/CD45 on the grid): the tone curve
    n_nuclei: int  # DAPI objects in the frame
    nucleus_cover: float  # fraction of the frame one (median) nucleus covers: large when the cell fills the frame
    px_um: float | None = None  # pixel size used (given, from metadata, or inferred)
    scale_source: str = "unknown"  # "given" | "estimated" | "default"
    n_objects: int | None = None  # field images: segmented objects
    novel_fraction: float | None = None  # share of this image's events outside the attribute range
    fill: float = 0.0  # share of the frame that is constant fill at its border (padding), measured without it
    ck_positive_share: float | None = None  # share of the frame's nuclei with the channel named CK over them
    centre_ck: float | None = None  # normalised CK over the nucleus at the frame's centre (the event)
    centre_cd45: float | None = None  # ... and CD45
    nuclei_saturated: float | None = None  # share of the DAPI plane's bright pixels at the top of its range
    edge_px: float | None = None  # width of the nuclei's edges (px, :func:`nuclear_edge`; a sample of events)
    edge_nucleus_px: float | None = None  # ... and the median nucleus's diameter (px) it is measured against
    scene: tuple[int, int] | None = None  # (height, width) inside any border fill: what the frame shows
    windowed: bool = False  # an event analysed on its frame's central ANALYSIS_FRAME_UM (preprocess.analysis_side)

    def _side_um(self, side: Callable[[int, int], int]) -> float | None:
        h, w = self.scene or (self.height, self.width)
        return None if self.px_um is None else float(side(h, w) * self.px_um)

    @property
    def frame_um(self) -> float | None:
        """The shorter side of what the frame shows (padding left out), in µm."""
        return self._side_um(min)

    @property
    def frame_long_um(self) -> float | None:
        """... and the longer side: what the analysis window is cut by."""
        return self._side_um(max)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["frame_um"] = self.frame_um
        d["frame_long_um"] = self.frame_long_um
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


_DEPTH_TOPS = ((255.0, "8-bit"), (4095.0, "12-bit"), (65535.0, "16-bit"), (4294967295.0, "32-bit"))
_DEPTH_TOP = {d: t for t, d in _DEPTH_TOPS}


def image_signals(image: np.ndarray, channels: Sequence[str], source: str = "image",
                  px_um: float | None = None, scale_source: str = "unknown") -> ImageSignals:
    """The rendering, scale and content signals of one (C, H, W) image as decoded."""
    return image_signals_batch([image], [channels], [source], [px_um], [scale_source])[0]


def image_signals_batch(images: Sequence[np.ndarray], channels: Sequence[Sequence[str]], sources: Sequence[str],
                        px_um: Sequence[float | None] | None = None, scale_sources: Sequence[str] | None = None,
                        chunk: int = 128, kind: str = "events",
                        forms: Sequence[FileForm | None] | None = None, edges: bool = True,
                        windowed: Sequence[bool] | None = None) -> list[ImageSignals]:
    """:func:`image_signals` of many images, measured together.

    Event thumbnails are point-sampled on a fixed 40 x 40 grid (their DAPI mid-tone and clipped share
    are read densely instead, on up to 96 x 96 px: see :func:`_nuclear_midtone`; every other statistic is
    about objects of a few px at that scale; one full-resolution pass over a 1,000-event
    gallery, 400 MB of floats, would cost more than the whole check), so a gallery of any
    mix of sizes is a few stacks. Field images are block-averaged to at most 512 px instead,
    one at a time: a point sample that coarse would miss most nuclei of a large field.

    ``forms``: how each file stored its image (:class:`classifier.decoders.FileForm`), where the
    values cannot tell: an RGB composite in a TIFF, JPEG compression inside a TIFF, a 16-bit file
    whose values stay under 256. Without it (arrays) the file name's suffix and the values decide.
    ``edges``: measure the nuclei's edge width (:func:`nuclear_edge`, full resolution, on an even
    sample of :data:`EDGE_SAMPLE` thumbnails); off for callers that do not read it.
    ``windowed``: whether the preprocessing analysed each image on its central window
    (``ImageSetup.window``); the check then reports what was done. Without it (images measured
    on their own) the same rule, :func:`classifier.preprocess.analysis_side`, is applied here."""
    n = len(images)
    if windowed is not None and len(windowed) != n:
        raise ValueError(f"{len(windowed)} window flags for {n} images")
    if forms is not None and len(forms) != n:
        raise ValueError(f"{len(forms)} file forms for {n} images")
    file_forms = list(forms) if forms is not None else [None] * n
    pxs = list(px_um) if px_um is not None else [None] * n
    how = list(scale_sources) if scale_sources is not None else ["unknown"] * n
    out: list[ImageSignals | None] = [None] * n
    # the edge width needs full resolution: measured on a sample of the set (its median is what counts)
    edge_sample = (set(np.linspace(0, n - 1, min(n, EDGE_SAMPLE)).round().astype(int).tolist())
                   if n and edges else set())
    groups: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        key = (np.shape(img)[0] if np.ndim(img) == 3 else 1, tuple(channels[i]))
        groups.setdefault(key if kind == "events" else (i, *key), []).append(i)
    for key, idx in groups.items():
        chans = list(key[-1])
        for s in range(0, len(idx), chunk):
            part = idx[s:s + chunk]
            full = [_as_chw(images[i]) for i in part]
            # measured inside any constant border fill (padding): black padding would pass for a dark
            # background and pull the mid-tones (and with them the tone curve, classifier.tone)
            borders = [fill_border(a) for a in full]
            arrs = [_inside(a, b) for a, b in zip(full, borders, strict=True)]
            if kind == "events":
                x = raw = np.stack([_grid(a, _GRID) for a in arrs])
            else:  # averaged for the objects, point-sampled for the rendering (bit depth, saturation)
                x = _block_mean(arrs[0], max(1, -(-max(arrs[0].shape[1:]) // 512)))[None]
                raw = _grid(arrs[0], 256)[None]
            hws = [a.shape[1:] for a in full]  # the frame as given (its scale, its framing)
            ck = _channel_index(chans, "CK")
            noise = (np.array([pixel_noise(a[ck]) if ck < a.shape[0] else 0.0 for a in arrs])
                     if kind == "events" and ck is not None else None)
            sigs = _signals_stack(x, chans, [sources[i] for i in part], hws, raw, [file_forms[i] for i in part],
                                  noise)
            af = _channel_index(chans, "AF")
            dapi = _channel_index(chans, "DAPI")
            for i, sig, a, inner in zip(part, sigs, full, arrs, strict=True):
                if kind == "events" and dapi is not None and dapi < inner.shape[0]:
                    dense = _dense(inner[dapi])
                    mid = _nuclear_midtone(dense)
                    if np.isfinite(mid):  # a flat DAPI plane keeps the grid reading (never a NaN in a report)
                        sig.midtone = mid
                    sig.nuclei_saturated = _clipped_share(dense, _DEPTH_TOP.get(sig.bit_depth))
                    if i in edge_sample:
                        edge = nuclear_edge(inner[dapi])
                        if edge is not None:
                            sig.edge_px, sig.edge_nucleus_px = edge
                if af is not None and af < inner.shape[0]:
                    # a blank AF plane (an export that writes the channel it lacks as zeros) is no AF:
                    # the model then sees exactly what it sees without one
                    plane = inner[af]
                    sig.af_present = bool(plane.size) and bool(plane.max() > plane.min())
                sig.px_um = None if pxs[i] is None else float(pxs[i])
                sig.scale_source = how[i]
                sig.fill = 1.0 - inner.shape[1] * inner.shape[2] / float(a.shape[1] * a.shape[2])
                sig.scene = (int(inner.shape[1]), int(inner.shape[2]))
                if windowed is not None:  # what the preprocessing did
                    sig.windowed = kind == "events" and bool(windowed[i])
                else:  # the same rule the engine's preprocessing cuts the window by, on the same scene
                    sig.windowed = (kind == "events" and sig.px_um is not None
                                    and analysis_side(sig.scene, sig.px_um, sig.scale_source) is not None)
                out[i] = sig
    return [o for o in out if o is not None]


_GRID = 40
#: the nuclear mid-tone is read on at most this many px a side (a 160 px thumbnail: every other px)
_MIDTONE_GRID = 96


def pixel_noise(plane: np.ndarray, rows: int = 24, width: int = 512) -> float:
    """The pixel noise SD of a plane: the robust spread (MAD) of neighbouring pixels' differences
    along ``rows`` rows spread over the frame (its central ``width`` px): structure changes little
    from one pixel to the next, noise does, and most of those pixels are background. 0 for a plane
    too small to read."""
    h, w = plane.shape
    x0 = max(0, (w - width) // 2)
    q = np.asarray(plane[:: max(1, h // rows), x0:x0 + width], np.float32)
    if q.shape[1] < 2 or not q.size:
        return 0.0
    d = (q[:, 1:] - q[:, :-1]).ravel()
    d = d[np.isfinite(d)]
    if not d.size:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _dense(plane: np.ndarray) -> np.ndarray:
    """A thumbnail plane's pixels inside its outermost lines (a line along the frame's edge is the
    export's), on up to :data:`_MIDTONE_GRID` px a side."""
    h, w = plane.shape
    inner = plane[1:-1, 1:-1] if min(h, w) > 8 else plane
    step = max(1, -(-max(inner.shape) // _MIDTONE_GRID))
    return np.asarray(inner[::step, ::step], np.float32).ravel()


#: the edge width is read on at most this many px a side of a thumbnail's centre (a whole field sent
#: as an event must not cost seconds; nuclei of any size give a 256 px crop dozens of outlines)
_EDGE_CROP = 256
#: the plane is smoothed by a Gaussian of this SD (px) before the slopes are read (pixel noise steepens
#: raw slopes and hid a 2 px blur), and that smoothing is taken out of the result again
_EDGE_SMOOTH = 1.0


def nuclear_edge(plane: np.ndarray) -> tuple[float, float] | None:
    """How wide the nuclei's edges are in a thumbnail's DAPI plane (full resolution, its central
    :data:`_EDGE_CROP` px): the SD (px) of the Gaussian that would blur a step of the nuclei's height
    into the steepest slopes found along their outlines (height / (sqrt(2 pi) x the 75th percentile of
    the outline's local slope maximum), read on a copy smoothed by :data:`_EDGE_SMOOTH` px and that
    smoothing taken out in quadrature), and the median nucleus's equivalent diameter (px) to measure
    it against. Out-of-focus images and optics that resolve less widen the edges; intensity scale,
    gamma within reason and the export's bit depth do not. None when the plane is not finite or holds
    too few nuclear pixels (Otsu on the smoothed copy) to tell."""
    d = np.asarray(plane, np.float32)
    h, w = d.shape
    y0, x0 = max(0, (h - _EDGE_CROP) // 2), max(0, (w - _EDGE_CROP) // 2)
    d = d[y0:y0 + _EDGE_CROP, x0:x0 + _EDGE_CROP]
    if min(d.shape) < 16 or not np.isfinite(d).all():
        return None
    sm = ndi.gaussian_filter(d, _EDGE_SMOOTH)
    sample = sm[::2, ::2]
    if float(sample.max()) <= float(sample.min()):
        return None
    from skimage.filters import threshold_otsu

    nuclear = ndi.binary_opening(sm > threshold_otsu(sample))
    inner = ndi.binary_erosion(nuclear, iterations=2)
    outer = ~ndi.binary_dilation(nuclear, iterations=3)
    outline = nuclear & ~ndi.binary_erosion(nuclear)
    if inner.sum() < 20 or outline.sum() < 20 or outer.sum() < 20:
        return None
    slope = np.hypot(ndi.sobel(sm, 0), ndi.sobel(sm, 1)) / 8.0  # Sobel's weights sum to 8 per px of step
    steep = float(np.percentile(ndi.maximum_filter(slope, 3)[outline], 75))
    height = float(np.median(d[inner]) - np.median(d[outer]))
    if steep <= 0 or height <= 0:
        return None
    lab, _ = ndi.label(nuclear)
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas >= 9]
    if not areas.size:
        return None
    width = height / (np.sqrt(2 * np.pi) * steep)
    return float(np.sqrt(max(width ** 2 - _EDGE_SMOOTH ** 2, 0.0))), float(2 * np.sqrt(np.median(areas) / np.pi))


def edge_blur(signals: Sequence[ImageSignals]) -> tuple[float, float | None, int]:
    """The edge rule: (severity, the set's median edge width over its nuclei's diameter, or None, and
    the number of images measured). Only images at validated or finer pixel sizes count (coarser
    pixels blur the edges themselves, which is the pixel-size rule's matter), a set's edges count as
    wider than validated only beyond their own sampling error, and only when they span enough pixels
    for the optics, not the pixels, to set them (:data:`EDGE_MIN_PX`)."""
    pairs = [(s.edge_px, s.edge_nucleus_px) for s in signals if s.edge_px is not None and s.edge_nucleus_px
             and (s.px_um is None or s.px_um <= VALIDATED_PX_UM[1])]
    if len(pairs) < MIN_IMAGES_FOR_EDGES:
        return 0.0, None, len(pairs)
    px = np.array([p for p, _ in pairs])
    rel = px / np.array([d for _, d in pairs])
    med = float(np.median(rel))
    if float(np.median(px)) < EDGE_MIN_PX:
        return 0.0, med, len(pairs)
    se = 1.25 * 1.4826 * float(np.median(np.abs(rel - med))) / np.sqrt(len(rel))
    return _ramp(med - VALIDATED_EDGE - TONE_SIGNIFICANCE * se, *EDGE_RAMP), med, len(pairs)


def _clipped_share(v: np.ndarray, top: float | None) -> float | None:
    """The share of a plane's bright pixels (``v``: :func:`_dense`; at least half of ``top``) at ``top``:
    a stain clipped by the camera or the export; None for values without a fixed top (float, signed)
    or no bright pixel."""
    if top is None:
        return None
    bright = v >= 0.5 * top
    return float((v[bright] >= top).mean()) if bright.sum() >= 10 else None


def _nuclear_midtone(v: np.ndarray) -> float:
    """The normalised 90th percentile of a thumbnail's DAPI plane (``v``: :func:`_dense`), read densely
    inside its outermost lines (NaN when the plane is flat). Every event has a nucleus, so this
    follows the tone curve and not what the event is; the median over DAPI, CK and CD45 on the 40 px
    grid did not: CK-negative frames read 0.65 and
    CTC frames 0.54 on ctc-dev, so a set of leukocytes alone read "brighter" and was re-mapped, and
    its ~400 samples moved by up to 0.5 when the content moved by 1 px (a helper's probe)."""
    p20, p90, p995 = (float(np.partition(v, k)[k]) for k in (int(round(q * (v.size - 1))) for q in (0.2, 0.9, 0.995)))
    if p995 <= p20:
        return float("nan")  # a flat plane (a blank frame, an export's black point) tells no curve
    return float(np.clip((p90 - p20) / (p995 - p20), -0.5, 1.5))


def _marker_names(channels: Sequence[str]) -> list[str]:
    """Canonical marker names (unknown names upper-cased), in channel order."""
    return [(_canonical(ch) or str(ch).strip().upper()) for ch in channels]


def _channel_index(channels: Sequence[str], name: str) -> int | None:
    names = _marker_names(channels)
    return names.index(name) if name in names else None


def _as_chw(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, np.float32)
    return a[None] if a.ndim == 2 else a


def _inside(a: np.ndarray, border: tuple[int, int, int, int]) -> np.ndarray:
    """``a`` (C, H, W) without ``border`` (top, bottom, left, right) lines; ``a`` itself when there are none."""
    top, bottom, left, right = border
    if not (top or bottom or left or right):
        return a
    return a[:, top:a.shape[1] - bottom, left:a.shape[2] - right]


def _grid(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-pixel sample of (C, H, W) on a ``size`` x ``size`` grid spanning the image."""
    return a[:, _grid_index(a.shape[1], size)][:, :, _grid_index(a.shape[2], size)]


@lru_cache(maxsize=256)
def _grid_index(n: int, size: int) -> np.ndarray:
    return np.linspace(0, n - 1, size).round().astype(np.intp)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return a
    c, h, w = a.shape
    h2, w2 = h // f * f, w // f * f
    return a[:, :h2, :w2].reshape(c, h2 // f, f, w2 // f, f).mean(axis=(2, 4))


def _signals_stack(x: np.ndarray, channels: list[str], sources: list[str], hws: Sequence[tuple[int, int]],
                   raw: np.ndarray, forms: Sequence[FileForm | None], ck_noise: np.ndarray | None = None
                   ) -> list[ImageSignals]:
    """Signals of a stack of sampled images (N, C, h, w); ``hws``: each image's full size;
    ``raw``: point samples of the decoded values (for bit depth, range and saturation); ``ck_noise``:
    each image's pixel noise SD in the channel named CK (:func:`pixel_noise`; None: not measured)."""
    n, c = x.shape[:2]
    ck_noise = np.zeros(n) if ck_noise is None else np.asarray(ck_noise, float)
    names = _marker_names(channels)
    idx = {nm: i for i, nm in enumerate(names)}
    main = [idx[nm] for nm in ("DAPI", "CK", "CD45") if nm in idx and idx[nm] < c] or list(range(c))
    flat = raw.reshape(n, c, -1)
    mn, mx = flat.min(axis=2), flat.max(axis=2)  # (n, c)
    half = raw[:, :, ::2, ::2]
    integral = np.all(half == np.round(half), axis=(1, 2, 3))
    # negative whole numbers: counts with the background already subtracted (int16 exports)
    integer = integral & (mn.min(axis=1) >= 0)
    top_all = mx.max(axis=1)
    tops = np.where(top_all <= 255, 255.0, np.where(top_all <= 4095, 4095.0,
                                                     np.where(top_all <= 65535, 65535.0, 4294967295.0)))
    # a file of more than 8 bits whose values stay under 256 is a dim camera image, not a display
    # render: its range is judged as 12-bit (where cameras clip), never as an 8-bit stretch
    wide = np.array([f is not None and (f.bits or 0) > 8 for f in forms])
    tops = np.where(wide & (tops == 255.0), 4095.0, tops)
    tops = np.where(integer, tops, np.maximum(top_all, 1e-9))
    grey = ((mx - mn)[:, main] / tops[:, None]).min(axis=1)
    sat = (half >= tops[:, None, None, None]).mean(axis=(2, 3)).max(axis=1)
    small = x
    hs, ws = small.shape[2:]
    # intensity levels from every other sampled pixel (~24 px square): one single-rank partial sort each
    # (numpy's multi-rank partition is several times slower on many short rows)
    rows = np.ascontiguousarray(small[:, :, ::2, ::2]).reshape(n * c, -1)
    # p99.5: the brightest objects, not a hot pixel
    p20, p90, p995 = (np.partition(rows, k, axis=1)[:, k].reshape(n, c)
                      for k in (int(round(q * (rows.shape[1] - 1))) for q in (0.2, 0.9, 0.995)))
    span = np.where(p995 - p20 > 0, p995 - p20, 1.0)
    # mid-tones: where the bulk of the non-background signal lies after normalisation
    midtone = np.median(np.clip((p90 - p20) / span, -0.5, 1.5)[:, main], axis=1)
    nuclei = np.zeros(n, int)
    largest = np.zeros(n)
    ck_share = np.full(n, np.nan)
    centre_ck, centre_cd45 = np.full(n, np.nan), np.full(n, np.nan)
    if "DAPI" in idx:
        d = idx["DAPI"]
        fg = small[:, d] > (p20[:, d] + 0.3 * span[:, d])[:, None, None]  # normalised DAPI > 0.3
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndi.generate_binary_structure(2, 1)  # never connect two images
        lab, nl = ndi.label(fg, structure)
        if nl:
            areas = np.bincount(lab.ravel(), minlength=nl + 1)
            owner = np.zeros(nl + 1, int)
            owner[lab.ravel()] = np.repeat(np.arange(n), hs * ws)
            real = np.flatnonzero(areas >= 2)
            real = real[real > 0]
            nuclei = np.bincount(owner[real], minlength=n)
            # the typical (median) nucleus of each image, robust to a few merged neighbours
            order = np.lexsort((areas[real], owner[real]))
            starts = np.r_[0, np.cumsum(nuclei)[:-1]]
            has = nuclei > 0
            mid = areas[real][order][(starts + nuclei // 2)[has]]
            largest[has] = mid / float(hs * ws)
            if "CK" in idx and real.size:
                # the share of nuclei with CK over them (normalised CK > 0.3 on average): blood cells
                # are CK-negative, so a CK channel bright at most of a frame's nuclei is another marker
                k = idx["CK"]
                over = np.asarray(ndi.mean(small[:, k] - p20[:, k, None, None], lab, real))  # CK over bg
                # ... and clear of the pixel noise: a frame with no CK-bright object has a span of a few
                # grey levels, and faint nonspecific CK at every leukocyte then read as CK-bright
                noise = np.maximum(np.nan_to_num(ck_noise, nan=0.0),
                                   np.where(integral, 0.5, 1e-3 * span[:, k]))[owner[real]]
                # (a frame whose CK does reach well over its noise keeps the plain reading: the faint
                # AF or CD45 plane named CK stays CK-bright at every nucleus)
                pos = (over / span[owner[real], k] > CK_POSITIVE) & (
                    (over > CK_POSITIVE_NOISE_SDS * noise) | (span[owner[real], k] >= CK_SIGNAL_NOISE_SDS * noise))
                n_pos = np.bincount(owner[real], weights=pos.astype(float), minlength=n)
                ck_share = np.where(nuclei > 0, n_pos / np.maximum(nuclei, 1), np.nan)
            # the event: the object at the frame's centre (or nearest to it, within 2 grid px)
            cy, cx = hs // 2, ws // 2
            win = lab[:, max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3]
            for k in range(n):
                ids = win[k][win[k] > 0]
                if not ids.size:
                    continue
                obj = lab[k] == np.bincount(ids).argmax()
                for name, store in (("CK", centre_ck), ("CD45", centre_cd45)):
                    if name in idx:
                        c = idx[name]
                        store[k] = float(np.clip((small[k, c][obj] - p20[k, c]) / span[k, c], 0, None).mean())
    out = []
    for k in range(n):
        suffix = Path(str(sources[k]).split("#")[0]).suffix.lower()
        form = forms[k]
        depth = ("float" if not integral[k] else "signed integer" if not integer[k]
                 else dict((t, d) for t, d in _DEPTH_TOPS)[float(tops[k])])
        out.append(ImageSignals(
            source=str(sources[k]), height=int(hws[k][0]), width=int(hws[k][1]), channels=names, af_present="AF" in idx,
            # a PNG/JPEG with more than three channels is greyscale files stacked one per channel (an RGB
            # composite holds three colours at most): lossless PNGs of that kind are the validated signal
            composite=(form.colour if form is not None else suffix in _COMPOSITE_SUFFIXES) and len(names) <= 3,
            lossy=form.lossy if form is not None else suffix in _LOSSY_SUFFIXES,
            bit_depth=depth,
            grey_range=float(grey[k]) if integer[k] else 1.0, saturated=float(sat[k]) if integer[k] else 0.0,
            midtone=float(midtone[k]), n_nuclei=int(nuclei[k]), nucleus_cover=float(largest[k]),
            ck_positive_share=None if np.isnan(ck_share[k]) else float(ck_share[k]),
            centre_ck=None if np.isnan(centre_ck[k]) else float(centre_ck[k]),
            centre_cd45=None if np.isnan(centre_cd45[k]) else float(centre_cd45[k])))
    return out


# --- findings: severities and reasons -------------------------------------------------------------------


@dataclass
class Finding:
    """One reason an image differs from the validated domain."""

    key: str  # stable identifier, for counting over a folder
    severity: float  # 0..1; one finding at >= THRESHOLD makes the image shifted
    reason: str  # a plain sentence
    #: the measured value the sentence quotes, and its unit, where images differ in degree: a folder's
    #: report then gives their range, not only the strongest case's number
    value: float | None = None
    unit: str = ""


def _num(x: float) -> str:
    """A measured value for a reason: 3 significant digits (0.031, 1.34, 446)."""
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _ramp(x: float, start: float, full: float) -> float:
    """0 at ``start``, 1 at ``full`` (either direction), linear between."""
    if full == start:
        return float(x >= full)
    return min(1.0, max(0.0, (x - start) / (full - start)))


def image_findings(s: ImageSignals, ref: Reference | None = None, kind: str = "events") -> list[Finding]:
    """What differs in image ``s`` from the validated domain, each with a severity."""
    out: list[Finding] = []
    if s.composite:
        out.append(Finding("composite", 0.6, "RGB composite (a colour picture: PNG, JPEG or RGB TIFF): the model was "
                                             "validated on separate fluorescence channels, and colour rendering "
                                             "changes intensities"))
    if s.lossy:  # a composite or per-channel files, and inside a TIFF too
        out.append(Finding("jpeg", 0.3, "JPEG compression: lossy blocks change texture and dim signals"))
    if not s.af_present:
        out.append(Finding("no_af", 0.6, "no AF channel: the model was validated on 4-channel images "
                                         "(DAPI, CK, AF, CD45)"))
    if s.bit_depth != "8-bit":
        # the decoded values are judged, not the file type: a dim 16-bit file whose values stay under
        # 4,096 is a 12-bit range of values, and said so rather than called a 12-bit file
        what = "values within a 12-bit range (0-4,095)" if s.bit_depth == "12-bit" else f"{s.bit_depth} input"
        # one line per kind of depth: float files and 16-bit files are not one finding
        out.append(Finding(f"bit_depth:{s.bit_depth}", 0.1, f"{what}: the model was validated on 8-bit display "
                                             "renders (intensities are normalised, so this alone is minor)"))
    if s.bit_depth == "8-bit" and s.grey_range < 0.45:
        out.append(Finding("grey_range", _ramp(s.grey_range, 0.45, 0.3),
                           f"low contrast: the markers use only {s.grey_range:.0%} of the {s.bit_depth} range "
                           "(validated renders use nearly all of it)"))
    if s.fill > 0:
        # the fill is left out of every measurement and is background to the model, so this alone
        # is minor; the reviewer should still know the frame holds less of the scene than it seems
        out.append(Finding("padded", 0.15, f"padded frame: {s.fill:.0%} of it is constant (e.g. black) fill at the "
                                           "border (padding, or a cell at the scan edge), measured without it"))
    if s.saturated > 0.05:
        out.append(Finding("saturated", _ramp(s.saturated, 0.05, 0.2),
                           f"{s.saturated:.0%} of the pixels of a channel are saturated (clipped at the top)"))
    if kind == "events":
        single = s.n_nuclei <= 3
        if s.nucleus_cover > MAX_NUCLEUS_COVER:
            out.append(Finding("fills_frame", _ramp(s.nucleus_cover, MAX_NUCLEUS_COVER, 2 * MAX_NUCLEUS_COVER),
                               f"the cell fills the frame (a nucleus covers {s.nucleus_cover:.0%} of it; "
                               "validated thumbnails show "
                               "the event among leukocytes)"))
        if single and s.scale_source == "estimated":
            out.append(Finding("single_nucleus_scale", 0.6,
                               f"{s.n_nuclei or 'no'} nucle{'us' if s.n_nuclei == 1 else 'i'} in the frame: "
                               "scale inferred from a single nucleus is unreliable (give the pixel size)"))
        elif not VALIDATED_NUCLEI[0] <= s.n_nuclei <= VALIDATED_NUCLEI[1]:
            out.append(Finding("nuclei_count", 0.3,
                               f"{s.n_nuclei} nucle{'us' if s.n_nuclei == 1 else 'i'} in the frame: validated "
                               f"thumbnails hold {VALIDATED_NUCLEI[0]}-{VALIDATED_NUCLEI[1]}",
                               float(s.n_nuclei), "nuclei"))
        fu, long_um = s.frame_um, s.frame_long_um
        if fu is not None and fu < VALIDATED_FRAME_UM[0]:
            out.append(Finding("tight_frame", _ramp(fu, VALIDATED_FRAME_UM[0], 44.0) * 0.6,
                               f"tight framing: {fu:.0f} µm across, validated {VALIDATED_FRAME_UM[0]:.0f}-"
                               f"{VALIDATED_FRAME_UM[1]:.0f} µm (fewer cells to normalise against)", fu, "µm"))
        # not "else": a strip can be tight one way and wide the other (and then cut to the window);
        # wide is the width the preprocessing cuts by, in whole pixels (classifier.preprocess)
        if long_um is not None and s.px_um and max(s.scene or (s.height, s.width)) > analysis_frame_px(s.px_um):
            # a frame of many event widths is more likely a whole field sent as an event gallery,
            # where only the cell at its centre would be classified
            field_hint = ("; if these are whole fields, upload them as fields (kind=field) so that every "
                          "cell is found" if long_um > FIELD_LIKE_FRAME_UM else "")
            window = f"; the event was analysed on the central {ANALYSIS_FRAME_UM:.0f} µm" if s.windowed else ""
            out.append(Finding("wide_frame", 0.2 + 0.4 * _ramp(long_um, VALIDATED_FRAME_UM[1], 125.0),
                               f"wide framing: {long_um:.0f} µm across, validated {VALIDATED_FRAME_UM[0]:.0f}-"
                               f"{VALIDATED_FRAME_UM[1]:.0f} µm (more neighbouring cells{window}){field_hint}",
                               long_um, "µm"))
    if s.px_um is not None and not VALIDATED_PX_UM[0] <= s.px_um <= VALIDATED_PX_UM[1]:
        # "given" is the caller's value or the file's own calibration (OME, ImageJ, TIFF resolution),
        # which some exports write wrongly: the reason says which to check
        how = {"given": "given, or from the file's calibration", "estimated": "inferred from nuclei",
               "default": "assumed"}.get(s.scale_source, "")
        # rescaling holds to ~0.83 µm (ctc-dev at half size: BA 0.955); coarser, a nucleus is a few
        # pixels and its texture is gone (ctc-dev's events as 40 px thumbnails, 1.66 µm: BA 0.79)
        coarse = _ramp(s.px_um, COARSE_PX_UM[0], COARSE_PX_UM[1])
        few_px = f"; a nucleus is only ~{NUCLEUS_DIAMETER_UM / s.px_um:.0f} px across" if coarse > 0 else ""
        # a given value is echoed to 4 significant digits (0.645, not 0.65: the lab compares it with its
        # records; more would echo the rounding noise of TIFF resolution tags)
        shown = f"{s.px_um:.4g}" if s.scale_source == "given" else f"{s.px_um:.2f}"
        out.append(Finding("pixel_size", 0.15 + 0.45 * coarse,
                           f"pixel size {shown} µm ({how}) outside the validated {VALIDATED_PX_UM[0]:.2f}-"
                           f"{VALIDATED_PX_UM[1]:.2f} µm: images are rescaled, calls were checked at one scale"
                           + few_px, s.px_um, "µm/px"))
    if kind == "field" and s.n_objects is not None:
        out += field_findings(s)
    if s.novel_fraction is not None and s.novel_fraction > 0:
        sev = 0.35 if kind == "events" else _ramp(s.novel_fraction, 0.1, 0.5)
        out.append(Finding("novel", sev, "the event's attributes lie outside the validated range"
                           if kind == "events" else f"{s.novel_fraction:.0%} of the objects' attributes lie "
                                                    "outside the validated range"))
    return out


def field_findings(s: ImageSignals) -> list[Finding]:
    """Plausibility of a field image's object count (never silently counted)."""
    n = int(s.n_objects or 0)
    out: list[Finding] = []
    px = s.px_um if s.px_um else None
    area_um2 = s.height * s.width * px * px if px else None
    implausible = False
    if area_um2 is not None and n > 0 and area_um2 / n < MIN_UM2_PER_OBJECT:
        implausible = True
    if n > max(50, 8 * max(s.n_nuclei, 1) * max(1.0, (s.height * s.width) / 48.0**2 / 400.0)):
        implausible = True
    if implausible:
        out.append(Finding("field_count", 1.0, implausible_count_message(s.source, n, s.height, s.width,
                                                                         s.n_nuclei)))
    return out


#: a field image with at least this many cells ...
CTC_SHARE_MIN_CELLS = 20
#: ... and more than this share of them called CTC is not blood as it is: in an enriched sample CTCs
#: are a few cells among many leukocytes (synthetic fields 5-10 %); swapped channels called 20 of
#: 25 and 105 of 120 cells CTC (80-88 %). Half leaves room for a CTC cluster or a spiked control
#: sample without calling it a channel mistake
CTC_SHARE_MAX = 0.5


def implausible_ctc_share(source: str, n_ctc: int, n_cells: int) -> str | None:
    """A plain-language warning when most of a field's cells are called CTC, else None."""
    if n_cells < CTC_SHARE_MIN_CELLS or n_ctc <= CTC_SHARE_MAX * n_cells:
        return None
    return (f"{source}: {n_ctc} of {n_cells} cells called CTC ({n_ctc / n_cells:.0%}); in blood CTCs are a few "
            "cells among many leukocytes, so the channels are probably not what they were named (check the "
            "channel order, CK and CD45 above all) or the markers' background differs across the image.")


def implausible_count_message(source: str, n: int, h: int, w: int, nuclei: int | None = None) -> str:
    extra = f" for about {nuclei} nuclei" if nuclei else ""
    return (f"field {source}: {n:,} objects{extra} in a {w}x{h} frame is implausible: check the "
            "pixel size and channels before trusting the count")


def score_of(findings: Sequence[Finding]) -> float:
    """``1 - prod(1 - severity)``: independent pieces of evidence add up, never past 1."""
    keep = 1.0
    for f in findings:
        keep *= 1.0 - min(1.0, max(0.0, float(f.severity)))
    return 1.0 - keep


# --- reference statistics (attribute novelty) ----------------------------------------------------------


@dataclass
class Reference:
    """Attribute distribution of in-domain synthetic events, for the weights it names."""

    weights_sha256: str
    feature_names: list[str]
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,) robust spread per attribute
    components: np.ndarray  # (K, F) principal axes of the standardised attributes
    eigvals: np.ndarray  # (K,)
    resid_var: float  # mean variance per dimension left outside the K axes
    cutoff: float  # distance above which an event is "outside the validated range"
    expected_novel: float  # share of in-domain events above the cutoff
    midtone: tuple[float, float]  # validated range of ImageSignals.midtone
    calibration: dict = field(default_factory=dict)
    path: str = ""
    #: the same statistics of the cells of synthetic *fields* (mostly leukocytes, 0.35-0.70 µm/px),
    #: against which a field upload's cells are judged: a field is not a gallery of candidates
    for_fields: Reference | None = None

    @classmethod
    def fit(cls, feats: np.ndarray, names: Sequence[str], sha: str, midtones: np.ndarray, k: int = 24,
            quantile: float = 0.995, seed: int = 0, groups: np.ndarray | None = None) -> Reference:
        """Fit on in-domain attributes. The novelty cutoff is the ``quantile`` of distances of
        events *left out* of the fit (a third of them, fitted on the rest): in-sample distances
        are smaller, and a cutoff from them alarms on new in-domain data. ``groups`` (one id per
        event, e.g. its field): whole groups are left out, so that the cutoff holds the spread
        between groups (a new field's rendering and density), not only within them."""
        x = np.asarray(feats, np.float64)
        mid = (float(np.quantile(midtones, 0.005)) - 0.03, float(np.quantile(midtones, 0.995)) + 0.03)
        rng = np.random.default_rng(seed)
        if groups is None:
            order = rng.permutation(len(x))
            cut = max(1, len(x) // 3)
            held, rest = order[:cut], order[cut:]
        else:
            ids = np.unique(groups)
            out = rng.permutation(ids)[: max(1, len(ids) // 3)]
            mask = np.isin(groups, out)
            held, rest = np.flatnonzero(mask), np.flatnonzero(~mask)
        probe = cls._fit_stats(x[rest], list(names), sha, k, mid)
        ref = cls._fit_stats(x, list(names), sha, k, mid)
        d_held = probe.distance(x[held])
        ref.cutoff = float(np.quantile(d_held, quantile))
        ref.expected_novel = float((ref.distance(x) > ref.cutoff).mean())
        return ref

    @classmethod
    def _fit_stats(cls, x: np.ndarray, names: list[str], sha: str, k: int, midtone: tuple[float, float]
                   ) -> Reference:
        mean = np.median(x, axis=0)
        # robust spread, but never far below the plain one: near-discrete attributes (fragment
        # counts, has_nucleus) have a MAD of 0 and would make any other value "infinitely" novel
        sd = x.std(axis=0)
        scale = np.maximum(1.4826 * np.median(np.abs(x - mean), axis=0), 0.25 * sd)
        scale = np.where(scale > 1e-6, scale, 1.0)
        z = np.clip((x - mean) / scale, -50, 50)
        zc = z - z.mean(axis=0)
        cov = zc.T @ zc / max(len(z) - 1, 1)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
        k = int(min(k, len(vals)))
        # shrinkage: a few hundred events cannot pin down the smallest directions of 86 attributes
        floor = 0.05 * float(max(vals.mean(), 1e-6))
        vals = np.maximum(vals, floor)
        resid = float(max(vals[k:].mean() if len(vals) > k else floor, floor))
        return cls(sha, names, mean, scale, vecs[:, :k].T.copy(), vals[:k], resid, np.inf, 0.0, midtone)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """Root mean squared whitened distance per event (~1 in domain)."""
        x = np.asarray(feats, np.float64)
        if x.size == 0:
            return np.zeros(0)
        z = np.clip((x - self.mean) / self.scale, -50, 50)
        proj = z @ self.components.T
        resid = (z * z).sum(axis=1) - (proj * proj).sum(axis=1)
        d2 = (proj * proj / self.eigvals).sum(axis=1) + np.maximum(resid, 0.0) / self.resid_var
        return np.sqrt(d2 / z.shape[1])

    def novel(self, feats: np.ndarray) -> np.ndarray:
        return self.distance(feats) > self.cutoff

    def to_dict(self) -> dict:
        return {
            "format": REFERENCE_FORMAT,
            "weights_sha256": self.weights_sha256,
            "feature_names": list(self.feature_names),
            "mean": _rl(self.mean), "scale": _rl(self.scale),
            "components": [_rl(r, 5) for r in self.components], "eigvals": _rl(self.eigvals),
            "resid_var": self.resid_var, "cutoff": self.cutoff, "expected_novel": self.expected_novel,
            "midtone": list(self.midtone), "threshold": THRESHOLD, "calibration": self.calibration,
            **({"field": self.for_fields.to_dict()} if self.for_fields is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, path: str = "") -> Reference:
        ref = cls(str(d["weights_sha256"]), list(d["feature_names"]), np.array(d["mean"], float),
                  np.array(d["scale"], float), np.array(d["components"], float), np.array(d["eigvals"], float),
                  float(d["resid_var"]), float(d["cutoff"]), float(d["expected_novel"]),
                  (float(d["midtone"][0]), float(d["midtone"][1])), dict(d.get("calibration", {})), path)
        if d.get("field"):
            try:  # unreadable field statistics cost the fields their own reference, not the thumbnails theirs
                ref.for_fields = cls.from_dict(d["field"], path)
            except (KeyError, TypeError, ValueError, IndexError):
                ref.for_fields = None
        return ref


def _rl(a: np.ndarray, nd: int = 6) -> list[float]:
    return [round(float(v), nd) for v in np.asarray(a).ravel()]


def reference_path(weights: str | Path) -> Path:
    """``NAME.domain.json`` beside ``NAME.pt``."""
    p = Path(weights)
    return p.with_name(p.stem + ".domain.json")


@dataclass
class ReferenceLookup:
    """The reference for some weights, or why there is none (said in ``reasons``)."""

    reference: Reference | None
    note: str | None  # None when the reference was found and matches


def load_reference(weights: str | Path | None, sha256: str | None, feature_names: Sequence[str] | None = None
                   ) -> ReferenceLookup:
    """Read the reference statistics beside ``weights``; never raises.

    They are used only when computed for exactly these weights (sha256) and attributes;
    otherwise the check runs on the image rules alone and the note says why."""
    from classifier.weights import DEFAULT_WEIGHTS

    path = reference_path(weights if weights else DEFAULT_WEIGHTS)
    fallback = "; only the image-level rules were applied (run python -m classifier domain-calibrate)"
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return ReferenceLookup(None, f"no reference statistics for these weights ({path.name} missing){fallback}")
    except (OSError, ValueError) as err:
        return ReferenceLookup(None, f"reference statistics unreadable ({path.name}: {err}){fallback}")
    try:
        ref = Reference.from_dict(d, str(path))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return ReferenceLookup(None, f"reference statistics unreadable ({path.name}: {err}){fallback}")
    if not sha256 or ref.weights_sha256 != sha256:
        return ReferenceLookup(None, f"reference statistics were computed for other weights "
                                     f"(sha256 {ref.weights_sha256[:8]}, loaded {str(sha256 or 'unknown')[:8]})"
                                     f"{fallback}")
    if feature_names is not None and list(feature_names) != ref.feature_names:
        return ReferenceLookup(None, f"reference statistics describe other attributes{fallback}")
    return ReferenceLookup(ref, None)


def field_lookup(lookup: ReferenceLookup | None) -> ReferenceLookup | None:
    """The reference a field upload's cells are judged against: the field statistics where the
    reference holds them; else the event thumbnails' (as before there were any), and the note says so."""
    ref = lookup.reference if lookup is not None else None
    if ref is None or ref.for_fields is None:
        if ref is not None:
            return ReferenceLookup(ref, "the reference statistics hold no field cells (rerun python -m classifier "
                                        "domain-calibrate): the cells were judged against event thumbnails")
        return lookup
    return ReferenceLookup(ref.for_fields, None)


# --- the check ---------------------------------------------------------------------------------------------


@dataclass
class DomainReport:
    """The folder/upload-level check, plus each image's own."""

    status: str
    score: float
    reasons: list[str]
    images: list[dict] = field(default_factory=list)  # per image: source, status, score, reasons

    def as_dict(self) -> dict:
        """The contract object: ``{"status", "score", "reasons"}``."""
        return {"status": self.status, "score": round(self.score, 3), "reasons": list(self.reasons)}


def check(signals: Sequence[ImageSignals], feats: np.ndarray | None = None, event_image: Sequence[int] | None = None,
          lookup: ReferenceLookup | None = None, warnings: Sequence[str] = (), kind: str = "events") -> DomainReport:
    """The domain check of one upload/folder.

    ``signals``: one per input image; ``feats`` (N, F) the events' attributes with
    ``event_image[i]`` the index in ``signals`` of event ``i``'s image; ``warnings``:
    plain-language problems found elsewhere (e.g. ``AnalysisResult.warnings``), which
    make the result ``shifted`` and are repeated in its reasons."""
    ref = lookup.reference if lookup is not None else None
    n_img = len(signals)
    novel_frac = None
    if ref is not None and feats is not None and len(feats):
        nov = ref.novel(feats)
        idx = np.asarray(event_image if event_image is not None else np.arange(len(feats)), int)
        counts = np.bincount(idx, minlength=n_img).astype(float)
        hits = np.bincount(idx, weights=nov.astype(float), minlength=n_img)
        for k, s in enumerate(signals):
            s.novel_fraction = float(hits[k] / counts[k]) if counts[k] else None
        novel_frac = float(nov.mean())
    per_image: list[dict] = []
    scores = np.zeros(n_img)
    tally: dict[str, list[Finding]] = {}
    for k, s in enumerate(signals):
        fs = image_findings(s, ref, kind)
        scores[k] = score_of(fs)
        for f in fs:
            tally.setdefault(f.key, []).append(f)
        per_image.append({"source": s.source, "status": "shifted" if scores[k] >= THRESHOLD else "in_domain",
                          "score": round(float(scores[k]), 3), "reasons": [f.reason for f in fs]})
    mean_score = float(scores.mean()) if n_img else 0.0
    shifted_share = float((scores >= THRESHOLD).mean()) if n_img else 0.0
    nov_sev = 0.0
    if novel_frac is not None:
        # a few novel events are expected (the reference's own tail); a large share is not
        nov_sev = _ramp(novel_frac, max(0.1, 2 * ref.expected_novel), 0.4)  # type: ignore[union-attr]
    # an implausible field (or a warning from elsewhere) means the count itself cannot be trusted
    # folder-level evidence: a fifth of the images shifted on their own is not chance (in-domain
    # sets: 0-6 %); a tone curve moved as a whole shows in the median of the images' mid-tones
    share_sev = 0.5 * _ramp(shifted_share, 0.1, 0.2) + 0.5 * _ramp(shifted_share, 0.2, 0.6)
    # 8-bit display renders only: there the tone curve is a rendering choice (raw counts are linear)
    # event thumbnails only: a field's mid-tones are its content (how many cells, how bright)
    moved = tone_shift(tone_midtones(signals)) if kind == "events" else 0.0
    tone_sev = _ramp(abs(moved), *TONE_RAMP)
    cks = [s.ck_positive_share for s in signals
           if s.ck_positive_share is not None and s.n_nuclei >= VALIDATED_NUCLEI[0]] if kind == "events" else []
    ck_median = float(np.median(cks)) if len(cks) >= MIN_IMAGES_FOR_MARKERS else 0.0
    ck_sev = _ramp(ck_median, *CK_EVERYWHERE)
    # frames the cell does not fill only (as the tone rule reads them): each plane is normalised on its own
    # frame, and where one cell fills it every marker it carries reaches the top of its own range (the
    # generator's tight RGB composites read CK-bright and CD45-bright at the event in every channel order,
    # the right one included); a tight frame with a few neighbours still has a background to judge by
    ck_events = [s for s in signals if kind == "events" and s.centre_ck is not None and s.centre_ck > CK_POSITIVE
                 and s.centre_cd45 is not None and s.nucleus_cover <= MAX_NUCLEUS_COVER]
    both = sum(s.centre_cd45 > CK_POSITIVE for s in ck_events)  # type: ignore[operator]
    # a dozen CK-bright events at least: 4 of 5 happens by chance in small in-domain sets (review)
    both_share = both / len(ck_events) if len(ck_events) >= 12 else 0.0
    both_sev = _ramp(both_share, *CK_EVENTS_CD45)
    clipped = [s.nuclei_saturated for s in signals if s.nuclei_saturated is not None]
    clipped_median = float(np.median(clipped)) if len(clipped) >= MIN_IMAGES_FOR_MARKERS else 0.0
    clip_sev = _ramp(clipped_median, *NUCLEI_SATURATED)
    edge_sev, edge_rel, n_edges = edge_blur(signals) if kind == "events" else (0.0, None, 0)
    score = 1.0 - ((1.0 - mean_score) * (1.0 - nov_sev) * (1.0 - share_sev) * (1.0 - tone_sev) * (1.0 - ck_sev)
                   * (1.0 - both_sev) * (1.0 - clip_sev) * (1.0 - edge_sev))
    if warnings or "field_count" in tally:  # an implausible count cannot be trusted at all
        score = 1.0
    reasons: list[str] = list(warnings)
    if clip_sev > 0:
        reasons.append(f"the nuclear stain (DAPI) is clipped at the top of its range in most images (median "
                       f"{clipped_median:.0%} of its bright pixels, {len(clipped)} images): overexposed nuclei lose "
                       "the shape and texture the model reads")
    if edge_sev > 0:
        measured = f"{n_edges} images" if n_edges == n_img else f"{n_edges} of {n_img} images"
        reasons.append(f"the nuclei (DAPI) look out of focus: their edges are {edge_rel / VALIDATED_EDGE:.2f}x as "
                       f"wide as in the validated images (measured on {measured}), and blur removes the texture "
                       "the calls rely on; check the scanner's focus, the DAPI channel's especially, and rescan, "
                       "or review every call")
    if ck_sev > 0:
        reasons.append(f"the channel named CK is bright over most nuclei (median {ck_median:.0%} of a frame's "
                       f"nuclei, {len(cks)} frames; blood cells are CK-negative): the channel names probably do "
                       "not match the image planes; check the channel order")
    if both_sev > 0:
        # the likely swap: AF (a faint copy of DAPI, bright at every nucleus) named CD45, where there is an AF
        has_af = any(s.af_present for s in ck_events)
        guess = " (AF and CD45 swapped?)" if has_af else ""
        reasons.append(f"the CK-bright events are bright in the channel named CD45 too ({both} of {len(ck_events)}; "
                       f"CTCs are CD45-negative): the channel names probably do not match the image planes{guess}; "
                       "check the channel order")
    if (kind == "events" and n_img >= MIN_IMAGES_FOR_MARKERS and len(cks) < MIN_IMAGES_FOR_MARKERS
            and len(ck_events) < 12):
        # neither channel-order rule had what it needs (frames with neighbours for the first, a dozen
        # CK-bright events in frames the cell does not fill for the second): say so, rather than let
        # silence pass for a checked order, and for colour files how their planes are named
        rgb = (" An RGB composite's planes are red, green, blue in that order (e.g. CK,CD45,DAPI when red is CK)."
               if any(s.composite for s in signals) else "")
        reasons.append("the channel order could not be checked: too few frames with neighbouring cells "
                       f"(under {VALIDATED_NUCLEI[0]} nuclei) and too few CK-bright events in frames the cell "
                       f"does not fill to compare the markers against.{rgb}")
    # folder-level reasons: each finding seen in a noticeable share of images, strongest first
    ranked = sorted(tally.items(), key=lambda kv: -sum(f.severity for f in kv[1]))
    for key, fs in ranked:
        share = len(fs) / max(n_img, 1)
        if key == "novel" or max(f.severity for f in fs) < 0.1 or (share < 0.1 and len(fs) < 3):
            continue
        # where the images differ in degree (pixel sizes 0.60-1.99 µm), the strongest case speaks for
        # the rest (of equally strong ones, the one nearest the median value), and the count says so;
        # where the finding quotes a measured value, the range and median of all of them follow, so
        # that 2 coarse images do not pass for 40 (a new user's tight composites read "1.34 µm ...
        # 40 of 40" while 38 were inferred at 0.03-0.23 µm)
        top = max(f.severity for f in fs)
        strongest = [f for f in fs if f.severity == top]
        values = [f.value for f in fs if f.value is not None]
        ranged = len(values) == len(fs) and min(values) != max(values)
        if ranged and len(strongest) > 1:
            median = float(np.median(values))
            strongest.sort(key=lambda f: abs(f.value - median))  # type: ignore[operator]
        sentence = strongest[0].reason
        worst = ("" if len({f.reason for f in fs}) == 1 else
                 "; the strongest shown" if len(strongest) < len(fs) else "; a typical one shown")
        if ranged:
            worst += f"; {fs[0].unit} {_num(min(values))}-{_num(max(values))}, median {_num(float(np.median(values)))}"
        reasons.append(sentence if n_img == 1 else f"{sentence} ({len(fs)} of {n_img} images{worst})")
        if key == "field_count":
            reasons.extend(f.reason for f in fs[1:4])
    if novel_frac is not None and (nov_sev > 0 or novel_frac >= 0.1):
        reasons.append(f"{novel_frac:.0%} of events lie outside the validated range of attributes "
                       f"(expected about {ref.expected_novel:.0%})")  # type: ignore[union-attr]
    if 0 < shifted_share < 1 and n_img > 1 and shifted_share >= 0.1:
        reasons.append(f"{shifted_share:.0%} of the images differ from the validated domain on their own")
    if tone_sev >= TONE_SAY:
        tone = "brighter" if moved > 0 else "darker"
        reasons.append(f"{TONE_REASON} ({tone} mid-tones: median "
                       f"{VALIDATED_MIDTONE + moved:.2f} after normalisation, validated {VALIDATED_MIDTONE:.2f}): "
                       "a display gamma or another stretch changes what the model sees")
    if lookup is not None and lookup.note:
        reasons.append(lookup.note)
    status = "shifted" if score >= THRESHOLD else "in_domain"
    return DomainReport(status, float(min(1.0, score)), reasons, per_image)


def check_analysis(items: Sequence[tuple[str, np.ndarray, list[str], float | None]], events_per_image: Sequence[int],
                   px_um: np.ndarray, scale_source: Sequence[str], feats: np.ndarray, kind: str,
                   lookup: ReferenceLookup | None, warnings: Sequence[str] = (),
                   forms: Sequence[FileForm | None] | None = None, windowed: np.ndarray | None = None) -> dict:
    """The engine's call: ``items`` as ``Classifier._analyse`` got them, how many events
    each image gave (in order), and the prepared events' pixel sizes, attributes and (``windowed``,
    ``Prepared.windowed``) whether each was analysed on its frame's central window.
    Returns the contract object; never raises (a failure is reported as ``shifted``)."""
    try:
        counts = np.asarray(events_per_image, int)
        starts = np.r_[0, np.cumsum(counts)[:-1]] if len(counts) else np.zeros(0, int)
        pxs: list[float | None] = []
        how: list[str] = []
        cut: list[bool] = []
        for k, (_name, _img, _chans, given) in enumerate(items):
            if counts[k] > 0:
                pxs.append(float(px_um[starts[k]]))
                how.append(str(scale_source[starts[k]]))
                cut.append(bool(windowed[starts[k]]) if windowed is not None else False)
            else:
                pxs.append(given)
                how.append("given" if given is not None else "unknown")
                cut.append(False)
        sigs = image_signals_batch([it[1] for it in items], [it[2] for it in items], [it[0] for it in items],
                                   pxs, how, kind=kind, forms=forms, windowed=cut if windowed is not None else None)
        if kind == "field":
            for s, n in zip(sigs, counts, strict=True):
                s.n_objects = int(n)
            lookup = field_lookup(lookup)
        owner = np.repeat(np.arange(len(items)), counts)
        return check(sigs, feats, owner, lookup, warnings, kind).as_dict()
    except Exception as err:  # noqa: BLE001 - the check must never cost the lab its result
        return fallback_report(f"{type(err).__name__}: {err}")


def check_folder(folder: Path, channels: Sequence[str], contract, feats: np.ndarray,  # noqa: ANN001
                 pixel_size_um: float | None, lookup: ReferenceLookup | None) -> DomainReport:
    """The check of a labelled folder (``evaluate``): its images in ``labels.csv`` order,
    ``feats`` the attributes ``classifier.data.folder`` computed for them (same order)."""
    from classifier.data import load_input, read_labels
    from classifier.preprocess import setup_image

    images, chans, names, pxs, how, forms = [], [], [], [], [], []
    cut: list[bool] = []
    for it in read_labels(Path(folder)):
        inp = load_input(Path(folder) / it.file, channels)
        given = pixel_size_um if pixel_size_um is not None else inp.pixel_size_um
        setup = setup_image(inp.image, inp.channels, contract, given, it.file)
        images.append(inp.image)
        chans.append(list(inp.channels))
        names.append(it.file)
        pxs.append(setup.px_um)
        how.append(setup.scale_source)
        cut.append(setup.window is not None)
        forms.append(inp.form)
    sigs = image_signals_batch(images, chans, names, pxs, how, forms=forms, windowed=cut)
    return check(sigs, feats, list(range(len(sigs))), lookup)


def fallback_report(reason: str) -> dict:
    """What to store when the check itself could not run (it never blocks a result)."""
    return {"status": "shifted", "score": 1.0, "reasons": [f"the domain check could not run: {reason}"]}


# --- calibration on synthetic shifts ------------------------------------------------------------------------

#: synthetic renderings of the calibration, by name: how each differs from the validated domain.
#: ``in_domain*`` must stay in_domain (false alarms); the others are shifts.
SHIFTS: dict[str, str] = {
    "in_domain": "160 px, 4 channels with AF, 8-bit stretch (gamma 0.6-0.8), 0.35-0.45 µm/px (held-out seed)",
    "in_domain_raw16": "the same scenes as raw 16-bit camera counts",
    "in_domain_0.2um": "the same framing at 0.18-0.22 µm/px (2x magnification)",
    "no_af": "AF channel absent",
    "wide_neighbours_no_af": "~200-240 px, dense leukocytes around the event, no AF (another export)",
    "rgb_png": "RGB composite R=CK G=CD45 B=DAPI, PNG",
    "rgb_jpeg_fills_frame": "RGB composite JPEG q80 at ~0.1 µm/px: the cell fills the frame",
    "gamma_0.6": "display gamma 0.6",
    "gamma_1.6": "display gamma 1.6",
    "low_contrast": "8-bit x/3 + 20 (flat stretch)",
    "blur": "defocus: Gaussian blur sigma 2 px",
}


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.float32)


def _jpeg_roundtrip(rgb: np.ndarray, quality: int | None) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(np.moveaxis(rgb, 0, -1).astype(np.uint8), "RGB")
    if quality is None:
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=quality)
    return np.moveaxis(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), -1, 0).astype(np.float32)


def synthetic_set(name: str, n: int, seed: int) -> tuple[list[np.ndarray], list[list[str]], list[str], np.ndarray]:
    """``n`` synthetic events of rendering ``name`` (see :data:`SHIFTS`): images as a
    reader decodes them, their channel names, file names (the suffix tells a composite)
    and is_ctc labels. Event ``i`` depends only on (seed, name, i)."""
    from classifier.synth.events import EventSpec, make_event, sample_category

    images: list[np.ndarray] = []
    chans: list[list[str]] = []
    names: list[str] = []
    labels = []
    key = sum(ord(ch) * (k + 1) for k, ch in enumerate(name))
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key, i)))
        cat = sample_category(rng)
        px = float(rng.uniform(0.35, 0.45))
        size = 160
        if name == "in_domain_0.2um":
            px = float(rng.uniform(0.18, 0.22))
            size = int(round(160 * 0.4 / px))
        elif name == "wide_neighbours_no_af":
            size = int(rng.integers(200, 241))
        elif name == "rgb_jpeg_fills_frame":
            px, size = float(rng.uniform(0.08, 0.12)), 200
        spec = EventSpec.random(rng, cat, px, size)
        spec.optics.rendering = "raw16" if name == "in_domain_raw16" else "stretch8"
        # ctc-dev's display renders are brighter in the mid-tones than the generator's average
        # stretch: gamma 0.6-0.8 brings the synthetic renders near ctc-dev (DAPI mid-tone 0.64 / 0.59)
        spec.optics.gamma = float(rng.uniform(0.6, 0.8))
        # ctc-dev's 160 px frames hold 10-40 nuclei: leukocyte coverage 0.25-0.7 (the generator's own 0.1-0.75
        # also draws near-empty frames, which are not what the model was validated on)
        spec.coverage = float(rng.uniform(0.55, 0.75) if name == "wide_neighbours_no_af" else rng.uniform(0.25, 0.7))
        img, info = make_event(rng, spec=spec)
        c = ["DAPI", "CK", "AF", "CD45"]
        suffix = ".tif"
        if spec.optics.rendering == "stretch8":
            img = _u8(img)
        if name in ("no_af", "wide_neighbours_no_af"):
            img, c = img[[0, 1, 3]], ["DAPI", "CK", "CD45"]
        elif name == "rgb_png":
            img, c, suffix = _jpeg_roundtrip(img[[1, 3, 0]], None), ["CK", "CD45", "DAPI"], ".png"
        elif name == "rgb_jpeg_fills_frame":
            img, c, suffix = _jpeg_roundtrip(img[[1, 3, 0]], 80), ["CK", "CD45", "DAPI"], ".jpg"
        elif name.startswith("gamma_"):
            img = _u8(255.0 * (img / 255.0) ** float(name.split("_")[1]))
        elif name == "low_contrast":
            img = _u8(img / 3.0 + 20.0)
        elif name == "blur":
            img = _u8(ndi.gaussian_filter(img, (0, 2.0, 2.0)))
        images.append(img.astype(np.float32))
        chans.append(c)
        names.append(f"{name}{i:04d}{suffix}")
        labels.append(int(info["is_ctc"]))
    return images, chans, names, np.array(labels, np.int64)


def prepare_set(images: Sequence[np.ndarray], chans: Sequence[Sequence[str]], names: Sequence[str], contract,  # noqa: ANN001
                pixel_size_um: float | None = None):  # noqa: ANN201 - (Prepared, features, signals)
    """Preprocess and measure a set of event images as the engine does."""
    from classifier import harmonise
    from classifier.data import featurise
    from classifier.preprocess import Prepared, prepare_image

    # the engine corrects a set before classifying (tone curve, CD45 bleed: classifier.harmonise);
    # the signals are of the images as given, as the engine's check judges the upload
    corr = harmonise.measure(images, chans, names)
    preps = [prepare_image(corr.apply(img, list(c)), list(c), contract, pixel_size_um, source=nm)
             for img, c, nm in zip(images, chans, names, strict=True)]
    prep = Prepared.concat(preps, contract)
    feats = featurise(prep, contract)
    sigs = image_signals_batch(images, chans, names, list(prep.px_um), list(prep.scale_source),
                               windowed=list(prep.windowed_flags()))
    return prep, feats, sigs


def calibrate(weights: str | Path | None = None, n_reference: int = 600, n_per_shift: int = 80, seed: int = 7,
              progress: bool = True) -> dict:
    """Fit the reference on in-domain synthetic renders, measure every shift of
    :data:`SHIFTS` (false alarms, detection, and the model's accuracy there), write
    ``NAME.domain.json`` beside the weights and return its content."""
    import sys
    import time

    from classifier import evaluate
    from classifier.data import EventSet
    from classifier.weights import DEFAULT_WEIGHTS, load_bundle
    from classifier.weights import sha256 as file_sha256

    t0 = time.time()
    wpath = Path(weights) if weights else DEFAULT_WEIGHTS
    model, contract, meta = load_bundle(wpath)
    sha = file_sha256(wpath)
    threshold = float(meta.get("threshold", 0.5))

    def log(msg: str) -> None:
        if progress:
            print(f"[{time.time() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    imgs, chans, names, _y = synthetic_set("in_domain", n_reference, seed + 100)
    _prep, feats, sigs = prepare_set(imgs, chans, names, contract)
    ref = Reference.fit(feats, contract.feature_names, sha, np.array([s.midtone for s in sigs]))
    ref.calibration = {"reference": {"n": n_reference, "seed": seed + 100, "rendering": SHIFTS["in_domain"],
                                     "n_nuclei_q01_q99": [int(np.quantile([s.n_nuclei for s in sigs], q))
                                                          for q in (0.01, 0.99)],
                                     "nucleus_cover_q99": round(float(np.quantile([s.nucleus_cover for s in sigs],
                                                                                  0.99)), 4)}}
    log(f"reference: {n_reference} in-domain events, novelty cutoff {ref.cutoff:.2f}")
    lookup = ReferenceLookup(ref, None)
    table: dict[str, dict] = {}
    for name, what in SHIFTS.items():
        imgs, chans, names, y = synthetic_set(name, n_per_shift, seed)
        prep, feats, sigs = prepare_set(imgs, chans, names, contract)
        rep = check(sigs, feats, list(range(len(sigs))), lookup)
        ds = EventSet(prep.crops, feats, y, np.full(len(y), -1), prep.nucleus, prep.cell, list(names))
        m = evaluate.metrics(y, evaluate.predict(model, ds)["p"], None, None, threshold)
        img_shifted = float(np.mean([i["status"] == "shifted" for i in rep.images]))
        table[name] = {"what": what, "n": len(y), "folder_status": rep.status, "folder_score": round(rep.score, 3),
                       "images_shifted": round(img_shifted, 3),
                       "novel_events": round(float(ref.novel(feats).mean()), 3),
                       "balanced_accuracy": _r3(m.get("balanced_accuracy")), "roc_auc": _r3(m.get("roc_auc"))}
        log(f"{name}: {table[name]}")
    ref.calibration["shifts"] = table
    ref.for_fields = fit_field_reference(wpath, sha, contract.feature_names, seed=seed + 200, log=log)
    ref.calibration["field_shifts"] = field_shift_table(wpath, ref, seed=seed + 300, log=log)
    ref.calibration["seconds"] = round(time.time() - t0, 1)
    ref.calibration["command"] = "python -m classifier domain-calibrate" + (f" --weights {weights}" if weights else "")
    out = ref.to_dict()
    out["model_version"] = meta.get("version")
    reference_path(wpath).write_text(json.dumps(out, indent=1) + "\n")
    return out


#: the pixel sizes of the field reference's synthetic fields (CellSearch's 0.645 µm among them)
FIELD_PX_UM = (0.35, 0.70)


def _reference_field(rng: np.random.Generator, px_um: float, side: int = 512,
                     rendering: str | None = None) -> np.ndarray:
    """One synthetic field like those the field path was validated on (``classifier.synth.field``):
    leukocytes at 300-3,000 cells/mm^2 with 5-15 % CTCs and a few apoptotic ones."""
    from classifier.synth.field import make_field

    area_mm2 = (side * px_um / 1000.0) ** 2
    n_cells = max(8, int(area_mm2 * float(np.exp(rng.uniform(np.log(300), np.log(3000))))))
    ctc = float(rng.uniform(0.05, 0.15))
    img, _labels = make_field(rng, side, side, n_cells, pixel_size_um=px_um, ctc_fraction=ctc, apoptotic_fraction=0.02,
                              rendering=rendering)
    return img


def fit_field_reference(weights: Path, sha: str, feature_names: Sequence[str], n_fields: int = 96, seed: int = 207,
                        log: Callable[[str], None] = print) -> Reference:
    """The attribute statistics of the cells of ``n_fields`` synthetic 512^2 fields (pixel sizes
    :data:`FIELD_PX_UM`, every export rendering), through the engine's own field path."""
    from classifier.engine import Classifier

    clf = Classifier.load(weights=weights, device="cpu")
    rng = np.random.default_rng(seed)
    feats, pxs = [], []
    for _ in range(n_fields):
        px = float(rng.uniform(*FIELD_PX_UM))
        feats.append(clf.field_attributes([_reference_field(rng, px)], VALIDATED_CHANNELS, px))
        pxs.append(px)
    x = np.concatenate(feats)
    field_of = np.repeat(np.arange(n_fields), [len(f) for f in feats])
    # Whole fields are held out (a field's cells share its rendering, density and light), and the cutoff
    # is their 99th percentile, not the thumbnails' 99.5th: a field's rare cells (CTC clusters, apoptotic
    # fragments) put a handful of held-out cells at 4-7 whatever the shift, which would leave the cutoff
    # above every shift measured (24 fields, cells held out one by one: q0.99 2.25, q0.995 6.94). The
    # mid-tone range is a thumbnail measure, unused for fields.
    ref = Reference.fit(x, feature_names, sha, np.array([0.5]), quantile=0.99, groups=field_of)
    ref.calibration = {"fields": n_fields, "cells": int(len(x)), "side_px": 512, "seed": seed,
                       "px_um": [round(min(pxs), 3), round(max(pxs), 3)], "cutoff": round(ref.cutoff, 3),
                       "expected_novel": round(ref.expected_novel, 4)}
    log(f"field reference: {len(x)} cells of {n_fields} synthetic fields, novelty cutoff {ref.cutoff:.2f}")
    return ref


#: field renderings of the calibration: (pixel size, export rendering, blur sigma in µm); the
#: in_domain ones must stay in_domain
FIELD_SHIFTS: dict[str, tuple[float, str, float]] = {
    "in_domain_0.40um_raw16": (0.40, "raw16", 0.0),
    "in_domain_0.645um_raw16": (0.645, "raw16", 0.0),
    "in_domain_0.645um_stretch8": (0.645, "stretch8", 0.0),
    "defocus_0.645um_raw16": (0.645, "raw16", 2.0),
}


def field_shift_table(weights: Path, ref: Reference, seed: int = 307, n_fields: int = 4,
                      log: Callable[[str], None] = print) -> dict:
    """Each :data:`FIELD_SHIFTS` rendering as an upload of ``n_fields`` fields: its domain check."""
    from classifier.engine import Classifier

    clf = Classifier.load(weights=weights, device="cpu")
    clf._domain_lookup = ReferenceLookup(ref, None)  # the statistics being written, not those on disk
    table = {}
    for name, (px, rendering, blur_um) in FIELD_SHIFTS.items():
        rng = np.random.default_rng(seed)
        imgs = [_reference_field(rng, px, rendering=rendering) for _ in range(n_fields)]
        if blur_um:
            imgs = [np.round(ndi.gaussian_filter(im, (0.0, blur_um / px, blur_um / px))) for im in imgs]
        res = clf.analyse_arrays(imgs, list(VALIDATED_CHANNELS), kind="field", pixel_size_um=px)
        dc = res.domain_check or {}
        table[name] = {"fields": n_fields, "cells": len(res.events), "status": dc.get("status"),
                       "score": dc.get("score"), "reasons": dc.get("reasons")}
        log(f"{name}: {table[name]}")
    return table


def _r3(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)
