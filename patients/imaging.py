"""Small image encodings for storing per-event thumbnails and heat maps in the database."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_strip(thumbnail: np.ndarray) -> bytes:
    """(C, h, w) uint8 -> PNG of the channels side by side, (h, C*w) greyscale."""
    if thumbnail.ndim != 3:
        raise ValueError("thumbnail must be (C, h, w)")
    strip = np.concatenate(list(np.asarray(thumbnail, dtype=np.uint8)), axis=1)
    return encode_grey(strip)


def decode_strip(data: bytes, channels: int) -> np.ndarray:
    grey = decode_grey(data)
    return np.stack(np.split(grey, channels, axis=1))


def encode_grey(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("L"))
