"""``python -m classifier segment-eval``: nucleus detection on a labelled folder, per image and pooled.

The folder holds ``images/NAME.<ext>`` and ``masks/NAME.<ext>`` (instance labels), like nuclei-dev;
any format ``predict`` reads (TIFF, PNG, JPEG; any case of extension), paired by file stem. Files are
read with the upload decoder (:mod:`classifier.decoders`), so size limits and corrupt files give an
:class:`InputError` naming the file, like every other problem with the folder.

For each image: the nuclei as the product finds them in a field of that stain alone
(:func:`classifier.segmentation.analyse_field`: constant fill and a mosaic's seams dealt with, then
the network, :func:`classifier.nuclei.infer.segment_nuclei`; with any warning the field would carry)
and, for comparison, a plain Otsu + distance-transform watershed baseline; detection F1 (centroid in a true
nucleus, one to one) and F1 at IoU 0.5 (one to one), see :mod:`classifier.nuclei.metrics`; and
what the errors are (misses merged into a neighbour's object, not found or off centre; false
objects that are extra parts of a nucleus or on background: :func:`metrics.errors`), per image
and pooled, since the fix for each is different.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed

from classifier.decoders import Decoded, decode, sniff
from classifier.errors import InputError
from classifier.io import checked_size
from classifier.limits import DEFAULT_LIMITS, Limits
from classifier.nuclei import emulate, metrics
from classifier.segmentation import NUCLEUS_DIAMETER_UM, analyse_field


def otsu_watershed(img: np.ndarray) -> np.ndarray:
    """The plain baseline: Otsu on a lightly smoothed image, holes filled, split by a watershed
    on the distance transform with seeds at least a third of the median nucleus diameter apart."""
    sm = ndi.gaussian_filter(img.astype(np.float32), 1.0)
    try:
        mask = sm > threshold_otsu(sm)
    except ValueError:
        return np.zeros(img.shape, np.int32)
    mask = ndi.binary_fill_holes(ndi.binary_opening(mask))
    lab, n = ndi.label(mask)
    if n == 0:
        return lab.astype(np.int32)
    areas = np.bincount(lab.ravel())[1:]
    d = 2 * math.sqrt(float(np.median(areas)) / math.pi)
    dist = ndi.distance_transform_edt(mask)
    dist = ndi.gaussian_filter(dist, max(0.5, d / 15))
    peaks = peak_local_max(dist, min_distance=max(2, int(d / 3)), labels=lab, exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    out = watershed(-dist, markers, mask=mask)
    return out.astype(np.int32)


# --- reading the folder -------------------------------------------------------------------------

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
# a mask may also carry the suffix some tools add (Cellpose writes NAME_masks.png)
MASK_STEM_SUFFIXES = ("", "_mask", "_masks")
BINARY_MASK_NOTE = "binary mask: instances taken as connected components; touching nuclei count as one"
COLOUR_MASK_NOTE = "colour mask: each colour taken as one nucleus (black background)"
# JPEG ringing around bright nuclei leaks into empty colour channels: up to ~5 % of the bright
# channel's maximum at quality 75
_JPEG_EMPTY_SHARE = 0.08


@dataclass
class Pair:
    """One image of the folder and its mask."""

    name: str  # the image's file stem, what --only selects and the report shows
    image: Path
    mask: Path | None  # None: no mask, refused when the image is to be scored


def image_files(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem; two files with one stem are refused, not guessed between."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (a labelled folder holds images/ and masks/).")
    found: dict[str, Path] = {}
    # dot files are macOS resource forks (._NAME.tif) and the like: not images, whatever the name says
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise InputError(f"{folder}: {found[path.stem].name} and {path.name} have the same name; "
                             "keep one of them.")
        found[path.stem] = path
    return found


def pair_files(root: Path) -> tuple[list[Pair], list[str]]:
    """Every image with its mask (sorted by name), and the masks no image claims.

    A mask is ``masks/STEM.*`` (or ``STEM_mask(s).*``), the case of the name aside.
    """
    images = image_files(root / "images")
    masks = image_files(root / "masks")
    by_key: dict[str, list[str]] = {}
    for stem in masks:
        by_key.setdefault(stem.casefold(), []).append(stem)
    pairs: list[Pair] = []
    used: set[str] = set()
    for stem, path in sorted(images.items()):
        candidates = [m for suffix in MASK_STEM_SUFFIXES for m in by_key.get((stem + suffix).casefold(), [])]
        exact = [m for m in candidates if m == stem]
        chosen = exact or candidates
        if not chosen:
            pairs.append(Pair(stem, path, None))
            continue
        if len(chosen) > 1:
            raise InputError(f"{path}: more than one mask could be its mask "
                             f"({', '.join(masks[m].name for m in chosen)}); keep one.")
        used.add(chosen[0])
        pairs.append(Pair(stem, path, masks[chosen[0]]))
    return pairs, sorted(masks[m].name for m in masks if m not in used)


def read_file(path: Path, limits: Limits = DEFAULT_LIMITS, *, read: bool = True) -> Decoded:
    """Decode one file as an upload is decoded: format from its bytes, limits before pixels."""
    checked_size(path, str(path), limits)
    with open(path, "rb") as fh:
        fmt = sniff(fh.read(16))
        fh.seek(0)
        if fmt is None or fmt == "zip":
            raise InputError(f"{path}: is not an image (expected TIFF, PNG or JPEG).")
        return decode(fh, fmt, str(path), limits, read=read)


def _colour_channels(dec: Decoded) -> np.ndarray:
    assert dec.array is not None
    # the alpha of an RGBA image is never a stain
    return dec.array[:-1] if dec.alpha and dec.array.shape[0] > 1 else dec.array


def nuclear_channel(dec: Decoded, source: Path, channel: int | None = None, *, with_masks: bool = True
                    ) -> tuple[np.ndarray, str | None]:
    """The 2-D nuclear image of a decoded file and, when it had to be inferred, how.

    Grey saved as colour (DSB 2018's RGBA PNGs) gives its one channel; a colour image with signal
    in one channel only (DAPI shown blue) gives that channel; a true composite needs ``channel``.
    A single-channel file is used as it is whatever ``channel`` says: the decoder collapses grey
    RGB PNGs to one channel, so a folder may mix both. ``with_masks``: the caller scores against masks
    (whose planes can tell a stack of frames from channels); the refusal says so.
    """
    arr = _colour_channels(dec)
    c = arr.shape[0]
    if c == 1:
        return arr[0], None
    if channel is not None:
        if channel >= c:
            raise InputError(f"{source}: --channel {channel} is out of range; the image has {c} "
                             f"channels (0 to {c - 1}).")
        return arr[channel], None
    if all(np.array_equal(arr[0], arr[k]) for k in range(1, c)):
        return arr[0], f"{c} identical colour channels (grey saved as colour): one used"
    peaks = [float(arr[k].max()) for k in range(c)]
    floor = _JPEG_EMPTY_SHARE * max(peaks) if dec.fmt == "JPEG" else 0.0
    lit = [k for k in range(c) if peaks[k] > floor and arr[k].any()]
    if len(lit) == 1:
        return arr[lit[0]], f"only channel {lit[0]} of {c} has signal: it was used"
    stacks = (" A stack of frames (time-lapse, z) is scored plane by plane when its mask has as many planes."
              if with_masks else "")
    raise InputError(f"{source}: is a {c}-channel colour image with signal in channels "
                     f"{', '.join(map(str, lit))}; say which holds the nuclear stain with --channel N "
                     f"(0-based: 2 is blue in RGB).{stacks}")


def _mask_labels(dec: Decoded, path: Path) -> tuple[np.ndarray, str | None]:
    """Instance labels (int32) of a decoded mask file and a note when they had to be derived."""
    arr = _colour_channels(dec)
    if arr.shape[0] > 1 and not all(np.array_equal(arr[0], arr[k]) for k in range(1, arr.shape[0])):
        if dec.fmt == "JPEG":  # compression invents colours at every edge: no instance survives it
            raise InputError(f"{path}: a colour JPEG cannot be a mask (compression changes the colours "
                             f"at every outline); save it as PNG or TIFF.")
        return _colour_labels(arr, path)
    return _plane_labels(arr[0], path)


def _plane_labels(m: np.ndarray, path: Path) -> tuple[np.ndarray, str | None]:
    """Instance labels of one 2-D plane of a mask file, checked: integers 0..N."""
    if m.dtype.kind == "f":
        bad = ~np.isfinite(m) | (m != np.round(m))
        if bad.any():
            raise InputError(f"{path}: a mask must hold integer labels (0 background, 1..N one per "
                             f"nucleus); it has non-integer values such as {m[bad][0]:g}.")
    if m.size and m.min() < 0:
        raise InputError(f"{path}: a mask must hold labels 0..N; it has negative values.")
    if m.size and m.max() > np.iinfo(np.int32).max:
        raise InputError(f"{path}: label {m.max():.0f} is too large (at most {np.iinfo(np.int32).max}).")
    return instance_labels(m.astype(np.int32))


@dataclass
class Scored:
    """One scored image: a file, or one plane of a stack of frames."""

    name: str
    image: np.ndarray  # (H, W)
    labels: np.ndarray  # (H, W) int32 instance labels
    image_note: str | None
    mask_note: str | None
    mask_source: str  # the mask file (and plane) the notes are about
    plane: int | None = None  # the plane of a stack, None for a single image


def _is_stack(dec: Decoded, mdec: Decoded, channel: int | None) -> bool:
    """Image and mask are both stacks of as many planes (the frames of a time-lapse, a z-stack):
    each plane is then an image of its own, scored with the mask's plane of the same index.

    Not when ``channel`` is given (the planes are then channels, as the user says), nor for a colour
    file (an RGB(A) picture, or a colour render of labels, as the decoder reads them: 8-bit samples
    interleaved per pixel, PNG, JPEG), nor for a mask saved as several identical planes."""
    assert dec.array is not None and mdec.array is not None
    n = mdec.array.shape[0]
    if channel is not None or n < 2 or dec.array.shape[0] != n or dec.colour or mdec.colour:
        return False
    return not all(np.array_equal(mdec.array[0], mdec.array[k]) for k in range(1, n))


def read_pair(pair: Pair, limits: Limits = DEFAULT_LIMITS, channel: int | None = None) -> list[Scored]:
    """The images one image/mask pair scores: the image's nuclear channel with the mask, or each plane
    of a stack with the mask's plane of the same index (named ``NAME[k]``)."""
    assert pair.mask is not None
    dec = read_file(pair.image, limits)
    mdec = read_file(pair.mask, limits)
    if _is_stack(dec, mdec, channel):
        assert dec.array is not None and mdec.array is not None
        n = mdec.array.shape[0]
        _warn(f"{pair.image}: image and mask have {n} planes each: scored as {n} frames (a time-lapse or "
              f"z-stack), rows {pair.name}[0] to {pair.name}[{n - 1}]; if the planes are channels, say which "
              f"holds the nuclear stain with --channel N.")
        out = []
        for k in range(n):
            labels, mask_note = _plane_labels(mdec.array[k], pair.mask)
            out.append(Scored(f"{pair.name}[{k}]", dec.array[k], labels,
                              f"plane {k} of a stack of {n} (image and mask have {n} planes each: scored one by one)",
                              mask_note, f"{pair.mask} (plane {k})", k))
        return out
    img, image_note = nuclear_channel(dec, pair.image, channel)
    true, mask_note = _mask_labels(mdec, pair.mask)
    return [Scored(pair.name, img, true, image_note, mask_note, str(pair.mask))]


def _colour_labels(arr: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """Instances of a colour-coded mask (a palette PNG, or an RGB label render): one nucleus per
    colour, black the background. One colour over several separate objects (a class colour, not
    an instance colour) is split into connected components, as a binary mask is."""
    c, h, w = arr.shape
    colours, inverse = np.unique(arr.reshape(c, -1).T, axis=0, return_inverse=True)
    black = np.flatnonzero(~colours.any(axis=1))
    if not black.size:
        raise InputError(f"{path}: a colour mask needs a black background (0 outside the nuclei); "
                         f"this one has {len(colours)} colours and no black.")
    # label k for the k-th non-black colour, 0 for black
    relabel = np.cumsum(colours.any(axis=1)).astype(np.int32)
    relabel[black] = 0
    labels = relabel[inverse.reshape(-1)].reshape(h, w)
    n_colours = int(labels.max())
    if n_colours <= 1:
        return instance_labels(labels)
    # regions of one colour that do not touch are separate nuclei (label renders recycle a palette);
    # 8-connected, and a speck under an eighth of its colour's largest region stays with it, since
    # hand-drawn instances are not always one 4-connected piece (5 of nuclei-dev's 22 masks)
    parts = label(labels, background=0, connectivity=2).astype(np.int32)
    n_parts = int(parts.max())
    if n_parts == n_colours:
        return labels, COLOUR_MASK_NOTE
    flat_parts, flat_colours = parts.ravel(), labels.ravel()
    area = np.bincount(flat_parts, minlength=n_parts + 1)
    colour_of = np.zeros(n_parts + 1, np.int64)
    colour_of[flat_parts] = flat_colours
    largest = np.zeros(n_colours + 1, np.int64)
    np.maximum.at(largest, colour_of[1:], area[1:])
    main = np.zeros(n_colours + 1, np.int32)
    is_main = area[1:] == largest[colour_of[1:]]
    main[colour_of[1:][is_main]] = np.arange(1, n_parts + 1, dtype=np.int32)[is_main]
    target = np.arange(n_parts + 1, dtype=np.int32)
    speck = np.r_[False, area[1:] * 8 < largest[colour_of[1:]]]
    # a speck goes with its colour's main region only where it lies next to it (within 2 px): a
    # small nucleus far away that happens to share a recycled colour stays a nucleus
    boxes = ndi.find_objects(parts)
    for k in np.flatnonzero(speck):
        m = int(main[colour_of[k]])
        box = boxes[k - 1]
        if box is None:
            continue
        win = tuple(slice(max(0, b.start - 2), b.stop + 2) for b in box)
        near = ndi.binary_dilation(parts[win] == k, iterations=2)
        if (parts[win][near] == m).any():
            target[k] = m
    _, lab = np.unique(target[parts], return_inverse=True)  # 0..N without gaps, 0 stays background
    lab = lab.reshape(h, w).astype(np.int32)
    if int(lab.max()) == n_colours:
        return labels, COLOUR_MASK_NOTE
    return lab, (f"colour mask: each separate region of one colour taken as one nucleus "
                 f"({n_colours} colours, {int(lab.max())} regions; touching nuclei of one colour count as one)")


def instance_labels(mask: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Instance labels as given or, for a binary (semantic) mask, its connected components.

    One non-zero value over several separate objects is a foreground mask, not one nucleus: scored
    as it is, every nucleus would be one giant object and F1 collapses.
    """
    fg = mask != 0
    if not fg.any():
        return mask, None
    values = mask[fg]
    if values.min() != values.max():
        return mask, None
    lab, n = ndi.label(fg)
    if n <= 1:
        return mask, None
    return lab.astype(np.int32), BINARY_MASK_NOTE


def _require_masks(pairs: list[Pair], root: Path) -> None:
    """Images to score without a mask are refused, all named, before anything runs."""
    missing = [p.image.name for p in pairs if p.mask is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"{root / 'masks'}: no mask for {shown} (a mask has the image's name, e.g. "
                         f"masks/{Path(missing[0]).stem}.tif or .png).")


def _check_shapes(pair: Pair, limits: Limits) -> None:
    """Image and mask must match pixel for pixel: checked from the headers, before any run."""
    assert pair.mask is not None
    hw_img = read_file(pair.image, limits, read=False).shape[1:]
    hw_mask = read_file(pair.mask, limits, read=False).shape[1:]
    if hw_img != hw_mask:
        hint = ""
        if hw_img == hw_mask[::-1]:
            hint = " (transposed?)"
        elif hw_img[0] * hw_mask[1] == hw_img[1] * hw_mask[0]:
            hint = " (one of them rescaled?)"
        raise InputError(f"{pair.image}: the image is {hw_img[0]}x{hw_img[1]} (height x width) but its mask "
                         f"{pair.mask.name} is {hw_mask[0]}x{hw_mask[1]}{hint}; they must match pixel for pixel.")


def _select(pairs: list[Pair], only: str | None, root: Path) -> list[Pair]:
    if not only:
        return pairs
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {p.name for p in pairs}]
    if unknown:
        raise InputError(f"--only: no image named {', '.join(unknown)} under {root / 'images'}.")
    return [p for p in pairs if p.name in wanted]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- the evaluation ------------------------------------------------------------------------------


def evaluate_folder(root: Path, *, pixel_size_um: float | None = None, diameter_px: float | None = None,
                    baseline: bool = True, weights: str | None = None, only: str | None = None,
                    render: str | None = None, seed: int = 0, progress: bool = False,
                    channel: int | None = None, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Score the segmenter (and the baseline) on ``root``; ``channel`` picks the nuclear channel
    of colour images (0-based), see :func:`nuclear_channel`."""
    if render is not None and render not in emulate.RENDERS:
        raise InputError(f"unknown render {render!r}: one of {', '.join(emulate.RENDERS)}")
    if channel is not None and channel < 0:
        raise InputError(f"--channel {channel}: a channel index is 0 or more.")
    all_pairs, orphans = pair_files(root)
    pairs = _select(all_pairs, only, root)
    if not pairs:
        raise InputError(f"{root / 'images'}: no images (TIFF, PNG or JPEG).")
    if orphans:
        _warn(f"{root / 'masks'}: no image for {', '.join(orphans)}; not scored.")
    _require_masks(pairs, root)
    for pair in pairs:
        _check_shapes(pair, limits)
    if diameter_px is None and pixel_size_um:
        diameter_px = NUCLEUS_DIAMETER_UM / pixel_size_um
    rows = []
    pooled = metrics.Scores(0, 0, 0, 0)
    pooled_base = metrics.Scores(0, 0, 0, 0)
    by_flag = {True: metrics.Scores(0, 0, 0, 0), False: metrics.Scores(0, 0, 0, 0)}
    pooled_errors: dict[str, int] = {}
    t_net = t_base = 0.0
    scored = ((k, item) for k, pair in enumerate(pairs) for item in read_pair(pair, limits, channel))
    for k, item in scored:
        name, img, true, image_note, mask_note = item.name, item.image, item.labels, item.image_note, item.mask_note
        if mask_note:
            _warn(f"{item.mask_source}: {mask_note}.")
        if render:
            # seeded by the file's place among those scored (and its plane): a stack does not move the
            # seeds of the files after it
            key = [seed, k] if item.plane is None else [seed, k, item.plane]
            img, true = emulate.render(render, img, true, np.random.default_rng(key))
        t = time.perf_counter()
        # the product's path (constant fill, a mosaic's seams, a drawn frame; then the network), with
        # a nuclear stain alone: its cells are the nuclei (tested equal to the network's own)
        seg = analyse_field(img[None].astype(np.float32, copy=False), ["DAPI"],
                            NUCLEUS_DIAMETER_UM / diameter_px if diameter_px else None, weights=weights,
                            keep_nuclei=True)
        res = seg.nuclei
        assert res is not None
        t_net += time.perf_counter() - t
        s = metrics.score(true, seg.labels)
        pooled = pooled + s
        errs = metrics.errors(true, seg.labels)
        for key, n in errs.items():
            pooled_errors[key] = pooled_errors.get(key, 0) + n
        by_flag[res.uncertain] = by_flag[res.uncertain] + s
        row = {"name": name, "shape": list(img.shape), **s.as_dict(),
               "diameter_px": round(res.diameter_px, 1) if res.diameter_px else None, "passes": res.passes,
               "ambiguity": round(res.ambiguity, 3) if res.ambiguity is not None else None,
               "uncertain": res.uncertain, "contrast": round(res.contrast, 1) if res.contrast is not None else None,
               "errors": errs}
        if res.smaller_share is not None:  # a second, smaller population was worked at its own size
            row["two_sizes"] = round(res.smaller_share, 2)
        if seg.warnings:  # what the product would say about this field
            row["warnings"] = seg.warnings
        # how a colour image or a binary mask was read, only where it had to be inferred
        if image_note:
            row["image_note"] = image_note
        if mask_note:
            row["mask_note"] = mask_note
        if baseline:
            t = time.perf_counter()
            b = metrics.score(true, otsu_watershed(img))
            t_base += time.perf_counter() - t
            pooled_base = pooled_base + b
            row["baseline_f1"] = round(b.f1, 4)
            row["baseline_f1_iou50"] = round(b.f1_iou50, 4)
        rows.append(row)
        if progress:
            print(f"{name}: n_true {s.n_true} n_pred {s.n_pred} F1 {s.f1:.3f} IoU-F1 {s.f1_iou50:.3f}"
                  + (f" (baseline {row['baseline_f1']:.3f})" if baseline else ""), file=sys.stderr, flush=True)
    out: dict = {"data": str(root), "render": render, "seed": seed if render else None,
                 "diameter_px": diameter_px, "images": rows, "pooled": pooled.as_dict(),
                 # what the misses and false objects are (metrics.errors), for diagnosis
                 "errors": pooled_errors,
                 "macro_f1": round(float(np.mean([r["f1"] for r in rows])), 4),
                 # images the segmenter itself calls uncertain (a warning in the product) and the rest
                 "uncertain": {"images": sum(r["uncertain"] for r in rows), "pooled": by_flag[True].as_dict(),
                               "others_pooled": by_flag[False].as_dict()},
                 "seconds": {"network": round(t_net, 1)}}
    if channel is not None:
        out["channel"] = channel
    if orphans:
        out["masks_without_images"] = orphans
    if baseline:
        out["baseline"] = {"method": "Otsu + distance-transform watershed", "pooled": pooled_base.as_dict()}
        out["seconds"]["baseline"] = round(t_base, 1)
    return out


def markdown(report: dict) -> str:
    lines = ["| image | shape | nuclei | found | precision | recall | detection F1 | F1 @ IoU 0.5 | baseline F1 "
             "| ambiguity |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["images"]:
        amb = "-" if r.get("ambiguity") is None else f"{r['ambiguity']:.2f}"
        amb += " **flagged**" if r.get("uncertain") else ""
        lines.append(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {r['n_true']} | {r['n_pred']} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['f1_iou50']:.3f} | "
                     f"{r.get('baseline_f1', float('nan')):.3f} | {amb} |")
    p = report["pooled"]
    b = report.get("baseline", {}).get("pooled", {})
    lines.append(f"| **pooled** | | {p['n_true']} | {p['n_pred']} | {p['precision']:.3f} | {p['recall']:.3f} | "
                 f"**{p['f1']:.3f}** | {p['f1_iou50']:.3f} | {b.get('f1', float('nan')):.3f} | |")
    e = report.get("errors")
    if e:
        lines.append("")
        lines.append(f"Misses: {e['merged']} merged into a neighbour's object, {e['not_found']} not found, "
                     f"{e['off_centre']} off centre; false objects: {e['split']} extra parts of a nucleus, "
                     f"{e['background']} on background.")
    return "\n".join(lines)
