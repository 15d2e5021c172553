"""Write a labelled synthetic event folder in the ctc-dev layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from classifier.synth.events import TRAIN_MIX, make_event, sample_category
from classifier.synth.export import export_as

#: How synthetic categories are written into ``labels.csv`` (ctc-dev's vocabulary).
CSV_CATEGORY = {
    "ctc": "CTC",
    "apoptotic_ctc": "Apoptotic CTC",
    "leukocyte": "White Blood Cell",
    "ck_debris": "CK/EpCAM Foci",
    "artifact": "Fluorescent Artifact",
}


def instrument_array(image: np.ndarray, rendering: str) -> np.ndarray:
    """``image`` in the dtype an instrument would write for ``rendering``: uint8 for 8-bit
    renders, uint16 for raw counts, float32 for float exports (whose values lie in [0, 1]:
    an integer cast would turn them into blank 0/1 images)."""
    if rendering == "stretch8":
        return np.clip(np.round(image), 0, 255).astype(np.uint8)
    if rendering in ("raw16", "raw12"):
        return np.clip(np.round(image), 0, 65535).astype(np.uint16)
    return image.astype(np.float32)


def write_folder(
    out: Path, n: int, seed: int, mix: dict[str, float] | None = None, progress: bool = True
) -> list[dict]:
    """Write ``n`` events to ``out/events/synthNNNNN.tif`` and ``out/labels.csv``.

    8-bit renderings are stored as uint8, raw counts as uint16, floats as float32, so
    readers see the same dtypes as from instruments. Returns the per-event info.
    """
    out = Path(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    infos = []
    rows = []
    for i in tqdm(range(n), desc="synth", disable=not progress):
        image, info = make_event(rng, sample_category(rng, mix or TRAIN_MIX))
        name = f"events/synth{i:05d}.tif"
        arr = instrument_array(image, info["rendering"])
        tifffile.imwrite(out / name, arr, photometric="minisblack", metadata={"axes": "CYX"})
        rows.append((name, info["is_ctc"], CSV_CATEGORY[info["category"]]))
        info["file"] = name
        infos.append(info)
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "is_ctc", "category"])
        w.writerows(rows)
    return infos


#: shifted synthetic test sets: (framing, export kind, CTCs CK-dim?) per name. Each mimics
#: one way real sources differ from ctc-dev (docs/model-card.md lists what each stands for).
SHIFTED_SETS: dict[str, tuple[str, str, bool | None]] = {
    "gallery_tiff4": ("gallery", "tiff4", None),
    "wide_no_af": ("wide", "tiff3", None),
    "tight_rgb_png": ("tight", "rgb_png", None),
    "tight_rgb_jpeg": ("tight", "rgb_jpeg", None),
    "tight_rgb_jpeg_ckdim": ("tight", "rgb_jpeg", True),
    "gallery_ckdim": ("gallery", "tiff4", True),
}


def write_shifted_folder(out: Path, n: int, seed: int, name: str, mix: dict[str, float] | None = None,
                         progress: bool = True) -> tuple[list[dict], list[str]]:
    """Write one shifted synthetic test set (:data:`SHIFTED_SETS`) in the ctc-dev layout:
    TIFFs (uint8/uint16/float32 as the rendering) or RGB PNG/JPEG files (red CK, green CD45,
    blue DAPI). Returns the per-event info and the channel names to evaluate it with."""
    from PIL import Image

    framing, kind, ck_dim = SHIFTED_SETS[name]
    out = Path(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    infos, rows = [], []
    channels: list[str] = []
    for i in tqdm(range(n), desc=f"synth {name}", disable=not progress):
        image, info = make_event(rng, sample_category(rng, mix or TRAIN_MIX), framing=framing, ck_dim=ck_dim)
        arr, channels = export_as(image, rng, kind)
        if kind == "rgb_png":
            fname = f"events/synth{i:05d}.png"
            Image.fromarray(arr, "RGB").save(out / fname)
        elif kind == "rgb_jpeg":
            fname = f"events/synth{i:05d}.jpg"
            Image.fromarray(arr, "RGB").save(out / fname, quality=int(rng.integers(60, 96)))
        else:
            fname = f"events/synth{i:05d}.tif"
            tifffile.imwrite(out / fname, instrument_array(np.clip(arr, 0, None), info["rendering"]),
                             photometric="minisblack", metadata={"axes": "CYX"})
        rows.append((fname, info["is_ctc"], CSV_CATEGORY[info["category"]]))
        info["file"] = fname
        infos.append(info)
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "is_ctc", "category"])
        w.writerows(rows)
    return infos, channels
