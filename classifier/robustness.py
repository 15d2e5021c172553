"""Robustness of the shipped weights to the ways real events from other sources differ:
magnification, contrast/bit depth, display gamma, lossy RGB composites and field framing.

``python -m classifier robustness --data DIR --channels DAPI,CK,AF,CD45 [--weights W]``
reads a labelled folder (the ``evaluate`` layout), writes each perturbed copy of it to a
temporary folder (TIFFs, or JPEG composites) and runs the same path as ``evaluate`` on it:
decode with :mod:`classifier.io`, prepare *without* a pixel size (scale inferred from the
nuclei, as on unknown data), attributes, model, the weights' threshold. Prints one JSON
object: per perturbation ``n, accuracy, balanced_accuracy, sensitivity, specificity,
roc_auc, apoptotic_rejected, flipped`` (calls that differ from the unperturbed input),
``mean_abs_dp`` (mean change of the CTC probability) and ``px_um_median`` (the inferred
pixel size; a rescale by s should divide the unperturbed value by s).

Perturbations act on the folder's images as decoded (float32, any range). Inputs are
assumed to be display renders (8-bit-like, 0..255) where a perturbation needs a range
(raw 16-bit, low contrast, gamma, JPEG); other ranges are first mapped to 0..255.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from classifier.data import EventSet, featurise, load_image, read_labels
from classifier.preprocess import Prepared, PreprocessContract, prepare_image
from classifier.results import CATEGORIES

#: how the RGB composite is rendered: red CD45, green CK, blue DAPI (the usual CellSearch-
#: style colours; AF is not shown), read back with these channel names
COMPOSITE_CHANNELS = ("CD45", "CK", "DAPI")

Perturb = Callable[[np.ndarray, list[str], np.random.Generator], tuple[np.ndarray, str]]


def _as_display(img: np.ndarray) -> np.ndarray:
    """The image as 0..255 floats (unchanged if it already is one)."""
    if img.min() >= 0 and img.max() <= 255 and img.max() > 1.0:
        return img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return ((img - lo) / max(hi - lo, 1e-9) * 255.0).astype(np.float32)


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def rescale(s: float) -> Perturb:
    """Another magnification: anti-aliased resampling by ``s`` (a cell s x as many px)."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        from skimage.transform import rescale as sk_rescale

        out = sk_rescale(img.astype(np.float32), s, channel_axis=0, anti_aliasing=s < 1, order=1,
                         preserve_range=True, mode="reflect")
        return (_u8(out) if img.dtype == np.uint8 or _is_8bit(img) else out.astype(np.float32)), "tif"
    return f


def _is_8bit(img: np.ndarray) -> bool:
    return bool(img.min() >= 0 and img.max() <= 255 and np.all(img == np.round(img)))


def raw16(offset: float = 300.0, gain: float = 30.0, read_noise: float = 6.0) -> Perturb:
    """Raw camera counts: ``offset + x * gain`` photons with shot (Poisson) and read
    (Gaussian) noise, stored as uint16 (what an instrument exports before any stretch)."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        lam = _as_display(img) * gain
        counts = rng.poisson(lam).astype(np.float64) + offset + rng.normal(0.0, read_noise, img.shape)
        return np.clip(np.round(counts), 0, 65535).astype(np.uint16), "tif"
    return f


def low_contrast(div: float = 3.0, offset: float = 20.0) -> Perturb:
    """A flat 8-bit render: ``x / div + offset`` (a weak stretch with a raised black level)."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return _u8(_as_display(img) / div + offset), "tif"
    return f


def gamma(g: float) -> Perturb:
    """Display gamma ``255 (x / 255) ** g`` (8-bit)."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return _u8(255.0 * (_as_display(img) / 255.0) ** g), "tif"
    return f


def jpeg_composite(quality: int | None = 75) -> Perturb:
    """An RGB composite (red CD45, green CK, blue DAPI) saved as JPEG (``quality``; None:
    lossless PNG); read back through the package's RGB-composite path with the colours
    named ``CD45,CK,DAPI``. The composite cannot show AF."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        disp = _as_display(img)
        rgb = np.stack([disp[chans.index(c)] for c in COMPOSITE_CHANNELS], axis=-1)
        return _u8(rgb), (f"jpg:{quality}" if quality else "png")
    return f


def drop_channel(name: str = "AF") -> Perturb:
    """The same images without one optional channel (a three-colour instrument)."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        keep = [i for i, c in enumerate(chans) if c != name]
        return img[keep], "tif:" + ",".join(chans[i] for i in keep)
    return f


def reframe(size: int, dy: int = 3, dx: int = -4) -> Perturb:
    """Another field of view: a ``size`` px square with the event ``(dy, dx)`` px off its
    centre; cropped from the image, or padded by reflection (more cells around) when larger."""
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        c, h, w = img.shape
        # the event sits at the input's centre; in the new frame it is (dy, dx) off centre
        y0 = int(round((h - 1) / 2.0 - (size - 1) / 2.0 - dy))
        x0 = int(round((w - 1) / 2.0 - (size - 1) / 2.0 - dx))
        pad = max(0, -y0, -x0, y0 + size - h, x0 + size - w)
        if pad:
            img = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="reflect" if pad < min(h, w) else "symmetric")
            y0 += pad
            x0 += pad
        return np.ascontiguousarray(img[:, y0:y0 + size, x0:x0 + size]), "tif"
    return f


def identity() -> Perturb:
    def f(img: np.ndarray, chans: list[str], rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return img, "tif"
    return f


DEFAULT_SCALES = (0.5, 0.75, 1.5, 2.0, 3.0)


def perturbations(scales: Sequence[float] = DEFAULT_SCALES) -> dict[str, Perturb]:
    """Every perturbation, by name (``none`` is the unperturbed reference)."""
    out: dict[str, Perturb] = {"none": identity()}
    for s in scales:
        out[f"rescale_{s:g}"] = rescale(s)
    out["raw16"] = raw16()
    out["low_contrast8"] = low_contrast()
    out["gamma_0.6"] = gamma(0.6)
    out["gamma_1.6"] = gamma(1.6)
    out["no_af"] = drop_channel("AF")
    out["png_rgb"] = jpeg_composite(None)
    out["jpeg75_rgb"] = jpeg_composite(75)
    out["field_120_offcentre"] = reframe(120)
    out["field_240_offcentre"] = reframe(240)
    return out


def _write(path: Path, arr: np.ndarray, fmt: str) -> str:
    import tifffile

    if fmt.startswith(("jpg", "png")):
        from PIL import Image

        if fmt == "png":
            name = path.with_suffix(".png")
            Image.fromarray(arr, "RGB").save(name)
        else:
            name = path.with_suffix(".jpg")
            Image.fromarray(arr, "RGB").save(name, quality=int(fmt.split(":")[1]))
        return name.name
    name = path.with_suffix(".tif")
    tifffile.imwrite(name, arr)
    return name.name


def _channels_written(fmt: str, chans: Sequence[str]) -> list[str]:
    if fmt.startswith(("jpg", "png")):
        return list(COMPOSITE_CHANNELS)
    if fmt.startswith("tif:"):
        return fmt[4:].split(",")
    return list(chans)


def _prepare_folder(folder: Path, channels: Sequence[str], contract: PreprocessContract,
                    pixel_size_um: float | None = None) -> tuple[EventSet, np.ndarray]:
    """As :func:`classifier.data.folder`, also returning the pixel size used per event."""
    items = read_labels(folder)
    preps = []
    for it in items:
        image, chans, px = load_image(folder / it.file, channels)
        preps.append(prepare_image(image, chans, contract, pixel_size_um if pixel_size_um is not None else px,
                                   source=it.file))
    prep = Prepared.concat(preps, contract)
    ds = EventSet(prep.crops, featurise(prep, contract), np.array([it.is_ctc for it in items], np.int64),
                  np.array([CATEGORIES.index(it.category) if it.category else -1 for it in items], np.int64),
                  prep.nucleus, prep.cell, [it.file for it in items])
    return ds, prep.px_um


def run(data_dir: Path, channels: Sequence[str], weights: Path | None = None, seed: int = 0,
        only: Sequence[str] | None = None, pixel_size_um: float | None = None,
        scales: Sequence[float] = DEFAULT_SCALES) -> dict:
    """Evaluate the weights on every perturbation of the labelled folder ``data_dir``."""
    from classifier import evaluate
    from classifier.weights import load_bundle

    model, contract, meta = load_bundle(weights)
    threshold = float(meta.get("threshold", 0.5))
    data_dir = Path(data_dir)
    items = read_labels(data_dir)
    originals = [load_image(data_dir / it.file, channels) for it in items]
    perts = perturbations(scales)
    names = ["none"] + [n for n in perts if n != "none" and (not only or n in only)]
    apo = CATEGORIES.index("apoptotic_ctc")
    base_call: np.ndarray | None = None
    base_p: np.ndarray | None = None
    table: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        for name in names:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(names.index(name),)))
            out = Path(tmp) / name
            out.mkdir()
            rows = []
            chans_used: list[str] = list(channels)
            for it, (img, chans, _px) in zip(items, originals, strict=True):
                arr, fmt = perts[name](img, list(chans), rng)
                fname = _write(out / Path(it.file).stem, arr, fmt)
                rows.append((fname, it.is_ctc, it.category or ""))
                chans_used = _channels_written(fmt, chans)
            with open(out / "labels.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["file", "is_ctc", "category"])
                w.writerows(rows)
            ds, px = _prepare_folder(out, chans_used, contract, pixel_size_um)
            pr = evaluate.predict(model, ds)
            p = pr["p"]
            m = evaluate.metrics(ds.is_ctc, p, ds.category, pr["cat"].argmax(1) if len(ds) else None, threshold)
            call = p >= threshold
            if base_call is None:
                base_call, base_p = call, p
            is_apo = ds.category == apo
            table[name] = {
                "n": m["n"],
                "accuracy": _r(m["accuracy"]),
                "balanced_accuracy": _r(m["balanced_accuracy"]),
                "sensitivity": _r(m["sensitivity"]),
                "specificity": _r(m["specificity"]),
                "roc_auc": _r(m["roc_auc"]),
                "apoptotic_rejected": f"{int((~call[is_apo]).sum())}/{int(is_apo.sum())}",
                "flipped": int((call != base_call).sum()),
                "mean_abs_dp": _r(float(np.mean(np.abs(p - base_p)))),
                "px_um_median": _r(float(np.median(px))),
            }
    return {"data": str(data_dir), "model_version": meta.get("version"), "threshold": threshold,
            "pixel_size": "given" if pixel_size_um else "inferred from nuclei", "perturbations": table}


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(float(v), nd)


def summary(table: dict[str, dict]) -> dict:
    """Worst case and means over the perturbations (``none`` excluded)."""
    rows = [v for k, v in table.items() if k != "none"]
    auc = [v["roc_auc"] for v in rows if v["roc_auc"] is not None]
    ba = [v["balanced_accuracy"] for v in rows if v["balanced_accuracy"] is not None]
    return {"mean_balanced_accuracy": _r(float(np.mean(ba))) if ba else None,
            "min_balanced_accuracy": _r(min(ba)) if ba else None,
            "mean_roc_auc": _r(float(np.mean(auc))) if auc else None,
            "min_roc_auc": _r(min(auc)) if auc else None,
            "total_flipped": int(sum(v["flipped"] for v in rows))}


def markdown(table: dict[str, dict]) -> str:
    """The table as Markdown (for the model card)."""
    cols = ["n", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "apoptotic_rejected", "flipped",
            "px_um_median"]
    head = "| perturbation | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    return head + "".join(f"| {k} | " + " | ".join(str(v[c]) for c in cols) + " |\n" for k, v in table.items())
