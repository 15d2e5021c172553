"""Image input: from uploaded files to validated float32 (C, H, W) arrays with named channels.

Accepted inputs (see `read_inputs`):

- **Multi-channel TIFF / OME-TIFF**, channels as CYX, YXC (samples), ZCYX/TCYX with
  singleton Z/T, or one page per channel. Channel names come from the caller, otherwise
  from OME-XML ``Channel@Name``, ImageJ slice labels or tifffile's JSON metadata. The pixel
  size comes from the caller, otherwise from OME ``PhysicalSizeX`` (or ImageJ calibration).
- **One greyscale file per channel**: N single-channel files and N channel names are
  stacked into one image. Files are grouped by a marker word in their names
  (``field1_DAPI.tif``, ``field1_CK.tif``...) when every file has exactly one; otherwise
  they are taken in order (upload order; zip members in natural name order), N at a time,
  in the order of the channel names.
- **RGB composites** (PNG, JPEG or RGB TIFF): the caller's channel names are the colours in
  the order red, green, blue; e.g. ``CD45,CK,DAPI`` for the usual red CD45, green CK, blue
  DAPI rendering, or ``-,CK,DAPI`` when the red is unused. An alpha channel is dropped.
  A "colour" image whose three colours are identical is a greyscale channel.
- **Zips** of any of these, read in memory (see `classifier.archives`).

The source of a stacked image is the name of its first file. Every `InputError` message
starts with the name of the file it is about.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from classifier import archives
from classifier.channel_names import (
    REQUIRED_CHANNELS,
    canonical,
    missing_required,
    parse_channels,
)
from classifier.decoders import Decoded, decode, sniff
from classifier.errors import InputError
from classifier.limits import DEFAULT_LIMITS, Limits, human_size

__all__ = [
    "DEFAULT_LIMITS",
    "REQUIRED_CHANNELS",
    "ImageInput",
    "Limits",
    "read_inputs",
    "select_channels",
    "validate_upload",
]

PathLike = str | os.PathLike[str]


@dataclass
class ImageInput:
    """One image ready for analysis."""

    source: str  # display name: file name, "archive.zip/inner.tif"; the engine adds "#k"
    image: np.ndarray  # float32 (C, H, W), finite, channels in the order of `channels`
    channels: list[str]  # canonical upper-case marker names
    pixel_size_um: float | None


@dataclass
class _Blob:
    """One file to decode: on disk, or a zip member in memory."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def open(self) -> IO[bytes]:
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.data or b"")


@dataclass
class _Item:
    blob: _Blob
    dec: Decoded


# --- public API --------------------------------------------------------------------


def read_inputs(
    paths: Sequence[PathLike],
    channels: str | Sequence[str] | None = None,
    *,
    names: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    required: Sequence[str] = REQUIRED_CHANNELS,
) -> list[ImageInput]:
    """Decode and validate the files of one upload.

    ``channels`` names the file's channels in order (a comma-separated string or a list;
    None: read them from the file's metadata). ``names`` are display names for ``paths``
    (the uploaded file names when the files are stored under other names). The caller's
    ``pixel_size_um`` wins over the files' metadata. Raises InputError on any bad input;
    the whole upload is rejected, since a partly read draw would give a wrong count.
    """
    declared = parse_channels(channels) if channels is not None else None
    pixel = _check_pixel_size(pixel_size_um)
    blobs = list(_expand(paths, names, limits, read=True))
    items: list[_Item] = []
    decoded = 0
    for b in blobs:
        items.append(_Item(b, _decode(b, limits, read=True)))
        decoded += math.prod(items[-1].dec.shape) * 4
        if decoded > limits.max_decoded_bytes_total:
            raise InputError(f"{b.name}: the upload's images are over the limit of "
                             f"{human_size(limits.max_decoded_bytes_total)} in total once decoded.")
    inputs = _assemble(items, declared)
    out: list[ImageInput] = []
    for src, arr, chans, px in inputs:
        missing = missing_required(chans, required)
        if missing:
            raise InputError(f"{src}: missing required channel(s) {', '.join(missing)} "
                             f"(has {', '.join(chans) or 'none'}; "
                             f"{', '.join(required)} are required).")
        out.append(ImageInput(src, _to_float(arr, src), chans, pixel if pixel is not None else px))
    return out


def check_channels(channels: str | Sequence[str], required: Sequence[str] = REQUIRED_CHANNELS) -> list[str]:
    """The declared channel names, refused when one of ``required`` is missing."""
    declared = parse_channels(channels)
    missing = missing_required(declared, required)
    if missing:
        raise InputError(f"Channels '{_join(channels)}': missing required channel(s) "
                         f"{', '.join(missing)} ({', '.join(required)} are required).")
    return declared


def validate_upload(
    paths: Sequence[PathLike],
    channels: str | Sequence[str] | None,
    *,
    names: Sequence[str] | None = None,
    pixel_size_um: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
    required: Sequence[str] = REQUIRED_CHANNELS,
) -> None:
    """Cheap checks for the web request, before the upload is queued.

    Reads headers only: channel names, file sizes and types, zip directories (member
    names, counts, declared sizes and ratios, nested zips), and for TIFF files the declared
    shape, pixel type, truncation and channel count. Passing it does not guarantee that
    `read_inputs` succeeds (pixel values are not looked at); failing it means it would not.
    """
    declared = check_channels(channels, required) if channels is not None else None
    _check_pixel_size(pixel_size_um)
    for blob in _expand(paths, names, limits, read=False):
        if blob.data is not None:
            continue  # a zip member: its directory entry was checked, its pixels wait
        dec = _decode(blob, limits, read=False)
        n = len(declared) if declared is not None else None
        if dec.fmt == "TIFF" and n is not None and dec.shape[0] > 1:
            _check_count(dec, n, blob.name)


def select_channels(inp: ImageInput, wanted: Sequence[str],
                    optional: Sequence[str] = ()) -> np.ndarray:
    """The channels ``wanted`` then ``optional`` of ``inp``, stacked (float32 (K, H, W)).

    Names may be aliases ("Hoechst"). A missing wanted channel raises InputError; a missing
    optional channel is all zeros (the model was trained with such a channel empty).
    """
    index = {c: i for i, c in enumerate(inp.channels)}
    h, w = inp.image.shape[1:]
    out = np.zeros((len(wanted) + len(optional), h, w), np.float32)
    for k, name in enumerate([*wanted, *optional]):
        canon = canonical(name) or name.upper()
        if canon in index:
            out[k] = inp.image[index[canon]]
        elif k < len(wanted):
            raise InputError(f"{inp.source}: channel {canon} is missing "
                             f"(has {', '.join(inp.channels)}).")
    return out


# --- expanding files and zips ------------------------------------------------------


def _expand(paths: Sequence[PathLike], names: Sequence[str] | None, limits: Limits,
            *, read: bool) -> Iterator[_Blob]:
    """Each file of the upload, zips opened, with size and count limits enforced."""
    if not paths:
        raise InputError("No files were uploaded.")
    if names is not None and len(names) != len(paths):
        raise InputError("Internal error: names and paths differ in length.")
    total = 0
    count = 0

    def budget(n: int, name: str) -> None:
        nonlocal total
        total += n
        if total > limits.max_total_bytes:
            raise InputError(f"{name}: the upload is over the limit of "
                             f"{human_size(limits.max_total_bytes)} in total.")

    for i, p in enumerate(paths):
        path = Path(p)
        name = names[i] if names is not None else path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(f"{name}: cannot be opened ({exc.strerror}).") from exc
        if size == 0:
            raise InputError(f"{name}: the file is empty (0 bytes).")
        if size > limits.max_file_bytes:
            raise InputError(f"{name}: {human_size(size)} is over the limit of "
                             f"{human_size(limits.max_file_bytes)} per file.")
        with open(path, "rb") as fh:
            head = fh.read(16)
            if archives.is_zip(head):
                fh.seek(0)
                members = archives.read_zip(
                    fh, name, depth=1, max_depth=limits.max_zip_depth,
                    max_files=limits.max_files - count, max_member_bytes=limits.max_file_bytes,
                    budget=budget, max_ratio=limits.max_zip_ratio, read=read)
                for m in members:
                    count += 1
                    yield _Blob(m.name, data=m.data)
                continue
        budget(size, name)
        count += 1
        if count > limits.max_files:
            raise InputError(f"{name}: more than {limits.max_files} files in one upload.")
        yield _Blob(name, path=path)


def _decode(blob: _Blob, limits: Limits, *, read: bool) -> Decoded:
    if blob.data is not None and len(blob.data) == 0:
        raise InputError(f"{blob.name}: the file is empty (0 bytes).")
    with blob.open() as fh:
        head = fh.read(16)
        fh.seek(0)
        fmt = sniff(head)
        if fmt is None or fmt == "zip":
            what = "is text, not an image" if _looks_like_text(head) else "is not an image"
            raise InputError(f"{blob.name}: {what} (expected TIFF, OME-TIFF, PNG, JPEG "
                             "or a zip of them).")
        return decode(fh, fmt, blob.name, limits, read=read)


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


# --- mapping channels --------------------------------------------------------------

_Assembled = tuple[str, np.ndarray, list[str], float | None]


def _assemble(items: list[_Item], declared: list[str | None] | None) -> list[_Assembled]:
    """Pair decoded arrays with channel names; stack single-channel files."""
    n = len(declared) if declared is not None else None
    singles: list[_Item] = []
    out: list[_Assembled] = []
    for it in items:
        dec, name = it.dec, it.blob.name
        assert dec.array is not None
        if dec.shape[0] == 1 and n != 1:
            singles.append(it)
            continue
        if declared is None:
            if dec.names is None:
                raise InputError(f"{name}: the file does not name its {dec.shape[0]} channels; "
                                 "give the channel names (e.g. DAPI,CK,AF,CD45).")
            chans = _metadata_channels(dec.names, name)
        else:
            chans = declared
        arr = dec.array
        if dec.alpha and arr.shape[0] == len(chans) + 1:
            arr = arr[:-1]
        _check_count(Decoded(dec.fmt, tuple(arr.shape), dec.dtype, None, alpha=False),  # type: ignore[arg-type]
                     len(chans), name)
        out.append(_keep(name, arr, chans, dec.pixel_size_um))
    if singles:
        out.extend(_stack_singles(singles, declared))
    return out


def _metadata_channels(raw: list[str], name: str) -> list[str | None]:
    try:
        return parse_channels(raw)
    except InputError as exc:
        raise InputError(f"{name}: the file's channel names ({', '.join(raw)}) are not "
                         f"usable ({exc}); give the channel names explicitly.") from exc


def _check_count(dec: Decoded, n: int, name: str) -> None:
    c = dec.shape[0]
    if dec.alpha and c == n + 1:
        return
    if c != n:
        if c == 1:
            raise InputError(f"{name}: is a single-channel (2-D) image but {n} channels were "
                             "named; upload one file per channel, or a multi-channel file.")
        raise InputError(f"{name}: has {c} channels but {n} channel names were given.")


def _keep(src: str, arr: np.ndarray, chans: Sequence[str | None],
          px: float | None) -> _Assembled:
    """Drop the channels named '-'."""
    idx = [i for i, c in enumerate(chans) if c is not None]
    return src, arr[idx], [c for c in chans if c is not None], px


def _stack_singles(singles: list[_Item], declared: list[str | None] | None) -> list[_Assembled]:
    """One image per group of single-channel files (see the module docstring)."""
    groups = _group_by_marker(singles, declared)
    if groups is None:
        if declared is None:
            raise InputError(f"{singles[0].blob.name}: a single-channel image without channel "
                             "names; give the channel names, or name each file after its "
                             "marker (e.g. field1_DAPI.tif).")
        n = len(declared)
        if len(singles) == 1:
            raise InputError(f"{singles[0].blob.name}: is a single-channel (2-D) image but "
                             f"{n} channels were named ({_join(declared)}); upload one file "
                             "per channel, or a multi-channel file.")
        if len(singles) % n:
            raise InputError(f"{singles[0].blob.name}: {len(singles)} single-channel files "
                             f"cannot be split into images of {n} channels "
                             f"({_join(declared)}).")
        groups = [list(zip(declared, singles[k:k + n], strict=True))
                  for k in range(0, len(singles), n)]
    out: list[_Assembled] = []
    for group in groups:
        first = group[0][1].blob.name
        shapes = {it.dec.shape for _, it in group}
        if len(shapes) > 1:
            desc = ", ".join(f"{it.blob.name} {it.dec.shape[2]}x{it.dec.shape[1]}"
                             for _, it in group)
            raise InputError(f"{first}: the channel files of one image differ in size ({desc}).")
        arr = np.stack([it.dec.array[0] for _, it in group])  # type: ignore[index]
        px = next((it.dec.pixel_size_um for _, it in group if it.dec.pixel_size_um), None)
        out.append(_keep(first, arr, [c for c, _ in group], px))
    return out


def _group_by_marker(singles: list[_Item], declared: list[str | None] | None
                     ) -> list[list[tuple[str | None, _Item]]] | None:
    """Group files named like 'field1_DAPI.tif' by the rest of their name; None if any
    file lacks exactly one marker word (then files are taken in order)."""
    wanted = {c for c in declared if c is not None} if declared is not None else None
    keyed: dict[str, dict[str, _Item]] = {}
    for it in singles:
        folder, _, base = it.blob.name.rpartition("/")
        stem = base.rsplit(".", 1)[0]
        words = re.split(r"[^A-Za-z0-9]+", stem)
        hits = [(i, canonical(w)) for i, w in enumerate(words) if w]
        hits = [(i, c) for i, c in hits if c is not None and (wanted is None or c in wanted)]
        if len(hits) != 1:
            return None
        i, marker = hits[0]
        key = folder + "/" + "_".join(words[:i] + words[i + 1:])
        if marker in keyed.setdefault(key, {}):
            return None
        keyed[key][marker] = it
    groups = []
    order = [c for c in declared if c is not None] if declared is not None else None
    for key, by_marker in keyed.items():
        markers = order if order is not None else list(by_marker)
        missing = [m for m in markers if m not in by_marker]
        if missing:
            first = next(iter(by_marker.values())).blob.name
            raise InputError(f"{first}: no file for channel(s) {', '.join(missing)} "
                             f"of image '{key.lstrip('/')}'.")
        groups.append([(m, by_marker[m]) for m in markers])
    return groups


# --- values ------------------------------------------------------------------------


def _to_float(arr: np.ndarray, src: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{src}: contains NaN, infinite or out-of-range pixel values.")
    return out


def _check_pixel_size(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Pixel size '{value}' is not a number.") from exc
    if not (math.isfinite(v) and 0.01 <= v <= 100):
        raise InputError(f"Pixel size {value} µm is outside 0.01-100 µm.")
    return v


def _join(spec: str | Sequence[str | None] | None) -> str:
    if spec is None:
        return ""
    if isinstance(spec, str):
        return spec
    return ",".join(c or "-" for c in spec)
