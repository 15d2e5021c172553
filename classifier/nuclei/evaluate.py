"""``python -m classifier segment-eval``: nucleus detection on a labelled folder, per image and pooled.

The folder holds ``images/NAME.tif`` and ``masks/NAME.tif`` (instance labels), like nuclei-dev.
For each image: the network segmenter (:func:`classifier.nuclei.infer.segment_nuclei`) and, for
comparison, a plain Otsu + distance-transform watershed baseline; detection F1 (centroid in a true
nucleus, one to one) and F1 at IoU 0.5 (one to one), see :mod:`classifier.nuclei.metrics`; and
what the errors are (misses merged into a neighbour's object, not found or off centre; false
objects that are extra parts of a nucleus or on background: :func:`metrics.errors`), per image
and pooled, since the fix for each is different.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from classifier.errors import InputError
from classifier.nuclei import emulate, metrics
from classifier.nuclei.infer import segment_nuclei
from classifier.segmentation import NUCLEUS_DIAMETER_UM


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


def evaluate_folder(root: Path, *, pixel_size_um: float | None = None, diameter_px: float | None = None,
                    baseline: bool = True, weights: str | None = None, only: str | None = None,
                    render: str | None = None, seed: int = 0, progress: bool = False) -> dict:
    if render is not None and render not in emulate.RENDERS:
        raise InputError(f"unknown render {render!r}: one of {', '.join(emulate.RENDERS)}")
    names = sorted(p.stem for p in (root / "images").glob("*.tif"))
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        names = [n for n in names if n in wanted]
    if not names:
        raise FileNotFoundError(f"no images/*.tif under {root}")
    if diameter_px is None and pixel_size_um:
        diameter_px = NUCLEUS_DIAMETER_UM / pixel_size_um
    rows = []
    pooled = metrics.Scores(0, 0, 0, 0)
    pooled_base = metrics.Scores(0, 0, 0, 0)
    by_flag = {True: metrics.Scores(0, 0, 0, 0), False: metrics.Scores(0, 0, 0, 0)}
    pooled_errors: dict[str, int] = {}
    t_net = t_base = 0.0
    for k, name in enumerate(names):
        img = tifffile.imread(root / "images" / f"{name}.tif")
        true = tifffile.imread(root / "masks" / f"{name}.tif").astype(np.int32)
        if render:
            img, true = emulate.render(render, img, true, np.random.default_rng([seed, k]))
        t = time.perf_counter()
        res = segment_nuclei(img, diameter_px, weights=weights)
        t_net += time.perf_counter() - t
        s = metrics.score(true, res.labels)
        pooled = pooled + s
        errs = metrics.errors(true, res.labels)
        for key, n in errs.items():
            pooled_errors[key] = pooled_errors.get(key, 0) + n
        by_flag[res.uncertain] = by_flag[res.uncertain] + s
        row = {"name": name, "shape": list(img.shape), **s.as_dict(),
               "diameter_px": round(res.diameter_px, 1) if res.diameter_px else None, "passes": res.passes,
               "ambiguity": round(res.ambiguity, 3) if res.ambiguity is not None else None,
               "uncertain": res.uncertain, "contrast": round(res.contrast, 1) if res.contrast is not None else None,
               "errors": errs}
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
