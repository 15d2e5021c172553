"""Small image encodings for storing per-event thumbnails and heat maps in the database.

Encoding writes PNG directly (signature, IHDR, one IDAT, IEND) rather than through PIL:
a worker stores two images per event, and for these tiny 8-bit greyscale images PIL's
per-call overhead and default compression level made encoding most of the database
stage (2.1 s per 1,000 events against 0.8 s here, see docs/performance.md). Every row
uses filter type 0 and zlib level 1: thumbnails are noisy crops, so stronger settings
buy little size for several times the time. Any PNG reader decodes the result; decoding
stays with PIL.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
#: zlib level for IDAT: 1 is the fastest that still compresses (0 stores)
_LEVEL = 1


def encode_strip(thumbnail: np.ndarray) -> bytes:
    """(C, h, w) uint8 -> PNG of the channels side by side, (h, C*w) greyscale."""
    if thumbnail.ndim != 3:
        raise ValueError("thumbnail must be (C, h, w)")
    c, h, w = thumbnail.shape
    # scanlines written straight into the (filter byte + row) buffer: no concatenated copy
    raw = np.zeros((h, 1 + c * w), np.uint8)
    raw[:, 1:].reshape(h, c, w)[:] = np.asarray(thumbnail, dtype=np.uint8).transpose(1, 0, 2)
    return _png_grey(raw, c * w, h)


def decode_strip(data: bytes, channels: int) -> np.ndarray:
    grey = decode_grey(data)
    return np.stack(np.split(grey, channels, axis=1))


def encode_grey(image: np.ndarray) -> bytes:
    """(h, w) -> 8-bit greyscale PNG (values cast to uint8 as ``np.asarray(..., uint8)`` does)."""
    img = np.asarray(image, dtype=np.uint8)
    if img.ndim != 2:
        raise ValueError("image must be (h, w)")
    h, w = img.shape
    raw = np.zeros((h, 1 + w), np.uint8)
    raw[:, 1:] = img
    return _png_grey(raw, w, h)


def decode_grey(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("L"))


def _png_grey(raw: np.ndarray, width: int, height: int) -> bytes:
    """A PNG from ``raw``: ``height`` scanlines of a filter byte (0) plus ``width`` pixels."""
    if width < 1 or height < 1:
        # PNG has no empty images; PIL refused them too
        raise ValueError(f"cannot encode an image of {height}x{width} pixels")
    # width, height, bit depth 8, colour type 0 (grey), compression 0, filter 0, no interlace
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), _LEVEL)) + _IEND


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))
