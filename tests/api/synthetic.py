"""Synthetic multi-channel event TIFFs (C, Y, X) for API tests, from classifier.synth."""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile

CHANNELS = "DAPI,CK,AF,CD45"


@lru_cache(maxsize=64)
def event_tiff(category: str, seed: int) -> bytes:
    from classifier.synth import instrument_array, make_event

    image, info = make_event(np.random.default_rng(seed), category)
    arr = instrument_array(image, info["rendering"])
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, metadata={"axes": "CYX"})
    return buf.getvalue()


def write_events(folder: Path, categories: list[str], seed: int = 7) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, cat in enumerate(categories):
        p = folder / f"{cat}_{i:02d}.tif"
        p.write_bytes(event_tiff(cat, seed + i))
        paths.append(p)
    return paths


def zip_of(paths: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, arcname=p.name)
    return buf.getvalue()


def field_tiff(n_cells: int = 12, seed: int = 3, size: int = 320) -> tuple[bytes, int]:
    """One field image (C, Y, X) uint16 and the number of cells drawn in it."""
    from classifier.synth import make_field

    image, labels = make_field(np.random.default_rng(seed), size, size, n_cells, pixel_size_um=0.65,
                               ctc_fraction=0.25)
    buf = io.BytesIO()
    tifffile.imwrite(buf, image.astype(np.uint16), metadata={"axes": "CYX"})
    return buf.getvalue(), int(labels.max())
