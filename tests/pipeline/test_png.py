"""The direct PNG writer of patients.imaging: what PIL (and so every browser) decodes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from patients.imaging import decode_grey, decode_strip, encode_grey, encode_strip

SHAPES = [(1, 1), (1, 7), (7, 1), (8, 8), (48, 48), (48, 192), (33, 65), (160, 160)]


def _pil_png(img: np.ndarray) -> bytes:
    """The encoding the writer replaced."""
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "zeros", "full", "ramp"])
def test_grey_decodes_to_the_same_pixels_as_pil(shape: tuple[int, int], kind: str) -> None:
    rng = np.random.default_rng(hash((shape, kind)) % 2**32)
    img = {
        "random": lambda: rng.integers(0, 256, shape, dtype=np.uint8),
        "zeros": lambda: np.zeros(shape, np.uint8),
        "full": lambda: np.full(shape, 255, np.uint8),
        "ramp": lambda: (np.arange(shape[0] * shape[1]) % 256).astype(np.uint8).reshape(shape),
    }[kind]()
    data = encode_grey(img)
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # full decode: CRCs and zlib stream checked
        assert im.format == "PNG" and im.mode == "L" and im.size == (shape[1], shape[0])
        out = np.asarray(im)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(decode_grey(data), decode_grey(_pil_png(img)))


def test_chunks_are_well_formed() -> None:
    img = np.random.default_rng(3).integers(0, 256, (20, 30), dtype=np.uint8)
    data = encode_grey(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, tags, bodies = 8, [], {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(tag + body)
        tags.append(tag)
        bodies[tag] = body
        pos += 12 + n
    assert pos == len(data)
    assert tags == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", bodies[b"IHDR"]) == (30, 20, 8, 0, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(bodies[b"IDAT"]), np.uint8)
    assert raw.size == 20 * 31 and (raw.reshape(20, 31)[:, 0] == 0).all()  # filter byte 0 on every row


@pytest.mark.parametrize("channels,h,w", [(4, 48, 48), (3, 32, 32), (1, 5, 9), (4, 1, 1)])
def test_strip_round_trips_and_matches_concatenation(channels: int, h: int, w: int) -> None:
    thumb = np.random.default_rng(channels * h).integers(0, 256, (channels, h, w), dtype=np.uint8)
    data = encode_strip(thumb)
    np.testing.assert_array_equal(decode_strip(data, channels), thumb)
    np.testing.assert_array_equal(decode_grey(data), np.concatenate(list(thumb), axis=1))


def test_values_are_cast_like_numpy_uint8() -> None:
    # the worker passes uint8 already; other dtypes keep the old asarray(..., uint8) meaning
    vals = np.array([[0, 1, 254, 255]], np.int64)
    np.testing.assert_array_equal(decode_grey(encode_grey(vals)), vals.astype(np.uint8))
    strided = np.arange(64, dtype=np.uint8).reshape(8, 8)[::2, ::-1]
    np.testing.assert_array_equal(decode_grey(encode_grey(strided)), strided)
    thumb = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6).transpose(0, 2, 1)  # not contiguous
    np.testing.assert_array_equal(decode_strip(encode_strip(thumb), 2), thumb)


def test_rejects_what_png_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode_grey(np.zeros((0, 4), np.uint8))
    with pytest.raises(ValueError):
        encode_grey(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError):
        encode_strip(np.zeros((4, 4), np.uint8))
