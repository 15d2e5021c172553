"""Fuzzing the decoding boundary: whatever the bytes, the reader answers with an image or
an InputError naming the file, never another exception and never a hang."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from classifier.errors import InputError
from classifier.io import Limits, read_inputs, validate_upload

# Small limits keep a mutated header that declares a large image cheap to refuse.
LIMITS = Limits(max_file_bytes=1 << 20, max_pixels_per_plane=1 << 16, max_image_bytes=1 << 22)
# FUZZ_EXAMPLES=5000 runs a longer, randomised hunt; the default is fixed and quick for CI.
_EXAMPLES = os.environ.get("FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_EXAMPLES or 300), deadline=None, derandomize=_EXAMPLES is None,
                suppress_health_check=[HealthCheck.too_slow])


def _seed_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (4, 24, 24), dtype=np.uint8)
    out = {}
    ome = {"ome": True, "metadata": {"axes": "CYX", "Channel": {"Name": ["DAPI", "CK", "AF", "CD45"]}}}
    variants: dict[str, dict[str, object]] = {
        "plain": {}, "zlib": {"compression": "zlib"}, "lzw": {"compression": "lzw"},
        "ome": ome, "tiled": {"tile": (16, 16)}}
    for name, kw in variants.items():
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="minisblack", **kw)
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(arr[:3], 0, -1)).save(buf, "PNG")
    out["png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.moveaxis(arr[:3], 0, -1)).save(buf, "JPEG")
    out["jpeg"] = buf.getvalue()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.tif", out["plain"])
    out["zip"] = buf.getvalue()
    return out


SEEDS = _seed_files()
CHANNELS = {"png": "CD45,CK,DAPI", "jpeg": "CD45,CK,DAPI"}


def _check(data: bytes, channels: str, name: str = "fuzz.tif") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        for call in (lambda: validate_upload([path], channels, limits=LIMITS),
                     lambda: read_inputs([path], channels, limits=LIMITS)):
            try:
                call()
            except InputError as err:
                assert str(err).startswith(name), str(err)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([b"", b"II*\x00", b"MM\x00*", b"II+\x00",
                                                 b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"PK\x03\x04"]))
def test_random_bytes_behind_any_magic_number(tail: bytes, magic: bytes) -> None:
    _check(magic + tail, "DAPI,CK,AF,CD45")


@FUZZ
@given(st.sampled_from(sorted(SEEDS)),
       st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
       st.one_of(st.none(), st.integers(1, 1 << 16)))
def test_mutated_valid_files(kind: str, edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(SEEDS[kind])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    _check(bytes(data), CHANNELS.get(kind, "DAPI,CK,AF,CD45"))
