"""Image input: from uploaded files to validated float32 (C, H, W) arrays with named channels.

Accepted inputs (see `read_inputs`):

- **Multi-channel TIFF / OME-TIFF**, channels as CYX, YXC (samples), ZCYX/TCYX with
  singleton Z/T, or one page per channel. Channel names come from the caller, otherwise
  from OME-XML ``Channel@Name``, ImageJ slice labels or tifffile's JSON metadata. The pixel
  size comes from the caller, otherwise from OME ``PhysicalSizeX`` (or ImageJ calibration).
- **One greyscale file per channel**: N single-channel files and N channel names are
  stacked into one image. Files are grouped by folder and name: by a marker word in their
  names (``field1_DAPI.tif``, ``field1_pan-CK.tif``...) or in the name of the folder it lies
  in (``DAPI/event1.tif``, ``CK/event1.tif``...) when every file has exactly one; else by a
  channel number, the n-th channel name (Fiji's ``C1-field1.tif``, 1-based, or
  ``field1_ch0.tif``, 0- or 1-based); otherwise they are taken in order (upload order; zip
  members and folder files in natural name order), N at a time, in the order of the
  channel names, but only when each group's names differ by nothing but a channel label
  (``img1``..``img4``, ``a``..``d``), so one channel of several events is never stacked.
- **Folders** (command line): the image files directly in them (TIFF/PNG/JPEG by content
  or extension; hidden files and labels.csv left out), in natural name order.
- **RGB composites** (PNG, JPEG or RGB TIFF): the caller's channel names are the colours in
  the order red, green, blue; e.g. ``CD45,CK,DAPI`` for the usual red CD45, green CK, blue
  DAPI rendering, or ``-,CK,DAPI`` when the red is unused. An alpha channel is dropped
  (in a TIFF only when constant: tifffile stores any (H, W, 4) array as RGB + "alpha").
  A "colour" image whose three colours are identical is a greyscale channel.
- **Zips** of any of these, read in memory (see `classifier.archives`).

The source of a stacked image is the name of its first file. A file's name is lengthened
by its parent folders where two files share a name (``drawA/e_DAPI.tif``), as zip members
are. Every `InputError` message starts with the name of the file it is about.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
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
from classifier.decoders import Decoded, FileForm, decode, sniff
from classifier.errors import ChannelCountError, InputError
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
    #: how the file stored it (colour composite, lossy compression, container bit depth); None for arrays
    form: FileForm | None = None


@dataclass
class _Blob:
    """One file to decode: on disk, or a zip member in memory."""

    name: str  # display name: unique within the upload, used in sources and messages
    path: Path | None = None
    data: bytes | None = None
    key: str = ""  # identity for grouping channel files: the full path, folder included
    #: a zip member of which only the first bytes were read (past the web request's budget)
    peeked: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.name

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
    _refuse_repeats(inputs)
    out: list[ImageInput] = []
    for src, arr, chans, px, form in inputs:
        missing = missing_required(chans, required)
        if missing:
            raise InputError(f"{src}: missing required channel(s) {', '.join(missing)} "
                             f"(has {', '.join(chans) or 'none'}; "
                             f"{', '.join(required)} are required).")
        out.append(ImageInput(src, _to_float(arr, src), chans, pixel if pixel is not None else px, form))
    return out


def checked_size(path: Path, name: str, limits: Limits) -> int:
    """The size of a file on disk, refused (naming it ``name``) when it cannot be opened, is empty
    or is over the per-file limit: checked before any byte is read."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{name}: cannot be opened ({exc.strerror}).") from exc
    if size == 0:
        raise InputError(f"{name}: the file is empty (0 bytes).")
    if size > limits.max_file_bytes:
        raise InputError(f"{name}: {human_size(size)} is over the limit of "
                         f"{human_size(limits.max_file_bytes)} per file.")
    return size


def _refuse_repeats(inputs: Sequence[_Assembled]) -> None:
    """Refuse an upload that holds one image twice (a file given twice, a file and a zip holding it,
    a folder zipped twice): its cells would be counted twice and the draw's count would be wrong
    without a sign. Images that are constant throughout (blank) may repeat: they hold no cell."""
    seen: dict[tuple[str, tuple[int, ...], bytes], int] = {}
    for k, (src, arr, _chans, _px, _form) in enumerate(inputs):
        a = np.ascontiguousarray(arr)
        key = (a.dtype.str, a.shape, hashlib.blake2b(a.data, digest_size=16).digest())
        first = seen.setdefault(key, k)
        if first != k and a.size and a.min() != a.max():
            again = " (given twice)" if inputs[first][0] == src else f" as {inputs[first][0]}"
            raise InputError(f"{src}: the same image{again}; its cells would be counted twice. "
                             "Leave one of them out.")


def check_channels(channels: str | Sequence[str], required: Sequence[str] = REQUIRED_CHANNELS) -> list[str]:
    """The declared channel names, refused when one of ``required`` is missing."""
    declared = parse_channels(channels)
    missing = missing_required(declared, required)
    if missing:
        raise InputError(f"Channels '{_join(channels)}': missing required channel(s) "
                         f"{', '.join(missing)} ({', '.join(required)} are required).")
    return declared


#: a TIFF whose last sample may be an alpha is read at upload time up to this many samples
#: (a 4 x 512^2 thumbnail: a few ms); larger ones are decided by the worker
_PEEK_ALPHA_MAX = 4 * 512 * 512

#: PNG and JPEG files are decoded whole at upload time up to this many samples per file and per
#: upload (a 3 x 2048^2 PNG takes ~0.2 s; a gallery of 2000 3 x 100^2 thumbnails ~2 s): their header
#: cannot say whether the compressed data run to the end (a truncated file), nor whether a colour file
#: is a composite of three markers or one greyscale channel saved as RGB (per-channel exports), which
#: decides how many channel names fit it. Files past the budget are left to the worker. Zip members
#: read in the request (``Limits.request_zip_bytes``) draw on the same budget as loose files.
_PEEK_IMAGE_MAX = 16 * 2**20
_PEEK_IMAGE_TOTAL = 64 * 2**20


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

    Reads headers: channel names, file sizes and types, zip directories (member names,
    counts, declared sizes and ratios, nested zips), for TIFF files the declared shape, pixel
    type, truncation and channel count, for PNG and JPEG files the header, and (within
    ``_PEEK_IMAGE_MAX`` / ``_PEEK_IMAGE_TOTAL``, one budget for the whole upload) their pixels:
    whether they decode to the end and how many channels they hold (three colours, or one grey
    channel saved as RGB). Zip members get the same checks, in name order, as long as their
    inflated sizes fit ``limits.request_zip_bytes`` (the upload's zips together); the members
    past it are left to the worker. Passing it does not guarantee that `read_inputs`
    succeeds; failing it means it would not.
    """
    declared = check_channels(channels, required) if channels is not None else None
    _check_pixel_size(pixel_size_um)
    n = len(declared) if declared is not None else None
    peeked = 0
    for blob in _expand(paths, names, limits, read=_member_budget(limits.request_zip_bytes)):
        if blob.peeked:
            continue  # a zip member past the budget: its directory entry was checked, its image waits
        dec = _decode(blob, limits, read=False)
        if declared is not None and dec.shape[0] > 1:
            _refuse_contradiction(declared, dec.names, blob.name)
        if dec.fmt == "TIFF" and n is not None and dec.shape[0] > 1:
            if dec.alpha and dec.shape[0] == n + 1 and math.prod(dec.shape) <= _PEEK_ALPHA_MAX:
                # the header only says the last sample *may* be an alpha (tifffile tags any 4th
                # one so); a thumbnail's pixels are cheap, so decide now rather than in the worker
                dec = _decode(blob, limits, read=True)
            _check_count(dec, n, blob.name, channels)
        elif dec.fmt in ("PNG", "JPEG"):
            size = math.prod(dec.shape)
            if size > _PEEK_IMAGE_MAX or peeked + size > _PEEK_IMAGE_TOTAL:
                continue  # the worker reads it (and says what is wrong with it)
            peeked += size
            dec = _decode(blob, limits, read=True)  # a truncated or corrupt file: InputError naming it
            if n is not None and dec.shape[0] > 1:  # one grey channel (saved as RGB or not): grouped later
                _check_count(dec, n, blob.name, channels)


def _member_budget(total: int) -> Callable[[int], bool]:
    """Whether a zip member of the given inflated size is read in the request: while the sizes of
    the members read so far and its own fit ``total``. A member that does not fit is not read in
    part, but smaller ones after it still may be."""
    left = total

    def take(size: int) -> bool:
        nonlocal left
        if size > left:
            return False
        left -= size
        return True

    return take


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
            *, read: bool | Callable[[int], bool]) -> Iterator[_Blob]:
    """Each file of the upload, zips opened, with size and count limits enforced; ``read`` says
    which zip members are read whole (see `archives.read_zip`), the others are `_Blob.peeked`."""
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

    for path, name, key in _disk_files(paths, names):
        size = checked_size(path, name, limits)
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
                    yield _Blob(m.name, data=m.data, peeked=not m.whole)
                continue
        budget(size, name)
        count += 1
        if count > limits.max_files:
            raise InputError(f"{name}: more than {limits.max_files} files in one upload.")
        yield _Blob(name, path=path, key=key)


def _disk_files(paths: Sequence[PathLike], names: Sequence[str] | None
                ) -> list[tuple[Path, str, str]]:
    """(path, display name, grouping key) of each file, folders replaced by their images.

    Without caller names, the display name is the file name, lengthened by as many parent
    folders as it takes to tell apart files of the same name (two draws exported alike),
    and the key is the absolute path, so same-named channel files in two folders are
    never stacked together. Caller names (web uploads) are used as they are.
    """
    files: list[tuple[Path, str | None]] = []
    for i, p in enumerate(paths):
        path = Path(p)
        given = names[i] if names is not None else None
        if path.is_dir():
            files += [(f, f"{given}/{f.name}" if given is not None else None)
                      for f in _folder_images(path, given or str(p))]
        else:
            files.append((path, given))
    shown = _unique_names([f for f, _ in files])
    out = []
    for (path, given), auto in zip(files, shown, strict=True):
        out.append((path, given, given) if given is not None
                   else (path, auto, str(path.absolute())))
    return out


_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _folder_images(folder: Path, shown: str) -> list[Path]:
    """The image files directly in ``folder``, in natural name order (as zip members).

    A file counts as an image when its first bytes say TIFF/PNG/JPEG, or when its name
    says so (then a broken one is refused by name rather than skipped unseen). Hidden
    files, labels.csv and anything else (notes, zips, sub-folders) are left out.
    """
    try:
        entries = sorted(folder.iterdir(), key=lambda f: archives.natural_key(f.name))
    except OSError as exc:
        raise InputError(f"{shown}: the folder cannot be read ({exc.strerror}).") from exc
    images = [f for f in entries
              if not f.name.startswith(".") and f.is_file() and _is_image_file(f)]
    if not images:
        subs = [f.name for f in entries if f.is_dir() and not f.name.startswith(".")]
        hint = (f"; pass its sub-folder ({', '.join(subs[:3])}) instead" if subs else "")
        raise InputError(f"{shown}: the folder contains no image files (TIFF, PNG or JPEG)"
                         f"{hint}.")
    return images


def _is_image_file(path: Path) -> bool:
    if path.name.lower() == "labels.csv":
        return False
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(16)) in ("tiff", "png", "jpeg")
    except OSError:
        return False  # unreadable and not named as an image: not ours to report


def _unique_names(paths: list[Path]) -> list[str]:
    """File names, with parent folders prepended only where two files share a name."""
    parts = [path.absolute().parts for path in paths]
    depth = [1] * len(paths)
    while True:
        shown = ["/".join(pp[-d:]).lstrip("/") for pp, d in zip(parts, depth, strict=True)]
        seen: dict[str, int] = {}
        for name in shown:
            seen[name] = seen.get(name, 0) + 1
        clash = [i for i, name in enumerate(shown) if seen[name] > 1 and depth[i] < len(parts[i])]
        if not clash:
            return shown
        for i in clash:
            depth[i] += 1


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

_Assembled = tuple[str, np.ndarray, list[str], float | None, FileForm]


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
            _refuse_contradiction(declared, dec.names, name)
            chans = declared
        arr = dec.array
        if dec.alpha and arr.shape[0] == len(chans) + 1:
            arr = arr[:-1]
        elif (dec.alpha and arr.shape[0] == len(chans) and chans[-1] not in (None, "-")
              and int(arr[-1].min()) == int(arr[-1].max()) != 0):
            # an opaque alpha named as a marker would be read as a channel saturated everywhere; an
            # all-zero one named so is a channel written blank (no AF), which the domain check reports
            raise InputError(f"{name}: its last channel is the image's alpha (transparency, the same value "
                             f"everywhere), not a marker; name only the {arr.shape[0] - 1} colour channels "
                             f"(e.g. {','.join(str(c) for c in chans[:-1])}, or end with 'none' to skip it).")
        try:
            kept = Decoded(dec.fmt, tuple(arr.shape), dec.dtype, None,  # type: ignore[arg-type]
                           alpha=dec.alpha and arr.shape[0] == dec.shape[0], colour=dec.colour)
            _check_count(kept, len(chans), name, chans)
        except ChannelCountError as err:
            _note_every_file(err, items, len(chans))
            raise
        out.append(_keep(name, arr, chans, dec.pixel_size_um, dec.form()))
    if singles:
        out.extend(_stack_singles(singles, declared))
    return out


def _refuse_contradiction(declared: list[str | None], file_names: list[str] | None, name: str) -> None:
    """A file that names its channels (OME, ImageJ labels) in another order than the caller:
    one of the two is wrong, and taking the caller's order would swap markers without a word
    (an OME file of CD45,DAPI,CK,AF read as DAPI,CK,AF,CD45 called all 7 ctc-dev CTCs non-CTC).
    Names the file uses for something else (``Channel:0``, a dye) are no contradiction."""
    if not file_names or len(file_names) != len(declared):
        return
    own = [canonical(str(n)) for n in file_names]
    known = [c for c in own if c is not None]
    if len(set(known)) != len(known):
        return  # dyes read as one marker ("AF 488", "AF 647"): the file's names do not say which is which
    if any(d is not None and d in own and own.index(d) != i for i, d in enumerate(declared)):
        raise InputError(f"{name}: the file names its channels {', '.join(map(str, file_names))} (in that "
                         f"order), but they were given as {_join(declared)}; give them in the file's order "
                         f"({','.join(c or '-' for c in own)}), or correct the file's metadata.")


def _metadata_channels(raw: list[str], name: str) -> list[str | None]:
    try:
        return parse_channels(raw)
    except InputError as exc:
        raise InputError(f"{name}: the file's channel names ({', '.join(raw)}) are not "
                         f"usable ({exc}); give the channel names explicitly.") from exc


def _check_count(dec: Decoded, n: int, name: str, declared: str | Sequence[str | None] | None = None) -> None:
    c = dec.shape[0]
    if _count_fits(dec, n):
        return
    if c == 1:
        raise InputError(f"{name}: is a single-channel (2-D) image but {n} channels were "
                         "named; upload one file per channel, or a multi-channel file.")
    given = f" ({_join(declared)})" if declared else ""
    example = "in that order, e.g. CD45,CK,DAPI if red is CD45, green CK and blue DAPI."
    if dec.colour and c == 3:
        raise ChannelCountError(f"{name}: is an RGB colour image: its 3 planes are red, green, blue, but {n} "
                                f"channel names were given{given}; name them {example}", planes=3)
    if dec.colour and c == 4 and dec.alpha:
        raise ChannelCountError(f"{name}: is an RGBA colour image: its planes are red, green, blue and alpha "
                                f"(transparency, left out), but {n} channel names were given{given}; name its 3 "
                                f"colours {example}", planes=3)
    raise ChannelCountError(f"{name}: has {c} channels but {n} channel names were given.", planes=c)


def _count_fits(dec: Decoded, n: int) -> bool:
    """``n`` names fit the file's channels (an alpha may be left out)."""
    c = dec.shape[0]
    return c == n or (dec.alpha and c == n + 1)


def _note_every_file(err: ChannelCountError, items: list[_Item], n: int) -> None:
    """Mark ``err`` when no image of the upload fits the ``n`` names (every one holds several
    channels, none of them ``n``): the names are what to correct, not one file."""
    err.files = len(items)
    err.every_file = all(it.dec.shape[0] > 1 and not _count_fits(it.dec, n) for it in items)
    err.same_planes = err.every_file and len({(it.dec.shape[0], it.dec.alpha) for it in items}) == 1


def _keep(src: str, arr: np.ndarray, chans: Sequence[str | None],
          px: float | None, form: FileForm) -> _Assembled:
    """Drop the channels named '-'."""
    idx = [i for i, c in enumerate(chans) if c is not None]
    return src, arr[idx], [c for c in chans if c is not None], px, form


def _stack_singles(singles: list[_Item], declared: list[str | None] | None) -> list[_Assembled]:
    """One image per group of single-channel files (see the module docstring)."""
    groups = _group_by_marker(singles, declared)
    if groups is None and declared is not None:
        groups = _group_by_index(singles, declared)
    if groups is None:
        groups = _group_in_order(singles, declared)
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
        forms = [it.dec.form() for _, it in group]
        # one greyscale file per channel: lossy when any of them is; wider than 8 bits only when every
        # one is (an 8-bit channel beside a 16-bit one keeps the 8-bit checks: clipping, grey range)
        bits = [f.bits for f in forms]
        form = FileForm(forms[0].fmt, None if None in bits else min(bits), lossy=any(f.lossy for f in forms))
        out.append(_keep(first, arr, [c for c, _ in group], px, form))
    return out


_Group = list[tuple[str | None, _Item]]


def _split_key(key: str) -> tuple[str, str]:
    """(folder, stem) of a grouping key: 'd/e/f1_DAPI.tif' -> ('d/e', 'f1_DAPI')."""
    folder, _, base = key.rpartition("/")
    return folder, base.rsplit(".", 1)[0] if "." in base else base


def _group_by_marker(singles: list[_Item], declared: list[str | None] | None) -> list[_Group] | None:
    """Group files named like 'field1_DAPI.tif' by their folder and the rest of their
    name, or kept in one folder per marker ('DAPI/event1.tif', 'CK/event1.tif') by the name
    beside it; None if any file lacks exactly one marker word in its name or its folder's.
    (Folders per marker were stacked in upload order: each "event" held 4 events' DAPI.)"""
    wanted = {c for c in declared if c is not None} if declared is not None else None
    keyed: dict[str, dict[str, _Item]] = {}
    for it in singles:
        folder, stem = _split_key(it.blob.key)
        words = re.split(r"[^A-Za-z0-9]+", stem)
        span = _marker_span(words, wanted)
        if span is not None:
            i, j, marker = span
            key = folder + "/" + "_".join(words[:i] + words[j:])
        else:
            parent, _, last = folder.rpartition("/")
            span = _marker_span(re.split(r"[^A-Za-z0-9]+", last), wanted) if last else None
            if span is None:
                return None
            marker, key = span[2], parent + "//" + stem
        if marker in keyed.setdefault(key, {}):
            return None
        keyed[key][marker] = it
    order = [c for c in declared if c is not None] if declared is not None else None
    return _complete(keyed, order)


def _marker_span(words: list[str], wanted: set[str] | None) -> tuple[int, int, str] | None:
    """The one marker named by ``words[i:j]``, as (i, j, marker); None unless exactly one.

    Pairs of words count too, so that 'pan-CK' is CK once (not CK plus a stray 'pan').
    """
    spans = []
    for i in range(len(words)):
        for j in (i + 1, i + 2):
            if j <= len(words) and all(words[i:j]):
                c = canonical("".join(words[i:j]))
                if c is not None and (wanted is None or c in wanted):
                    spans.append((i, j, c))
    # 'pan-CK' yields (pan, CK) and (CK): keep the longest span of each marker.
    spans = [s for s in spans
             if not any(t != s and t[2] == s[2] and t[0] <= s[0] and s[1] <= t[1] for t in spans)]
    return spans[0] if len(spans) == 1 else None


# Fiji's "Split Channels" names its outputs C1-<name>, C2-<name>... (1-based); other tools
# end the name with a channel index (<name>_ch0, <name>_c1...), 0- or 1-based.
_FIJI = re.compile(r"C(?P<n>\d{1,2})-(?P<rest>.+)", re.I)
_INDEX_SUFFIX = re.compile(r"(?P<rest>.+?)[_\-. ](?:ch|chan|channel|c)(?P<n>\d{1,2})", re.I)


def _group_by_index(singles: list[_Item], declared: list[str | None]) -> list[_Group] | None:
    """Group files whose names carry a channel number: channel n is the n-th declared
    name. None unless every file follows one such scheme."""
    parsed: list[tuple[str, int, _Item]] = []
    schemes = set()
    for it in singles:
        folder, stem = _split_key(it.blob.key)
        m = _FIJI.fullmatch(stem)
        scheme = "fiji"
        if m is None:
            m, scheme = _INDEX_SUFFIX.fullmatch(stem), "suffix"
        if m is None:
            return None
        schemes.add(scheme)
        parsed.append((folder + "/" + m["rest"], int(m["n"]), it))
    if len(schemes) != 1:
        return None
    # Fiji counts from 1; a suffix counts from 0 when any file is numbered 0.
    base = 0 if schemes == {"suffix"} and min(n for _, n, _ in parsed) == 0 else 1
    keyed: dict[str, dict[str, _Item]] = {}
    for key, n, it in parsed:
        if not 0 <= n - base < len(declared):
            raise InputError(f"{it.blob.name}: its name makes it channel {n}, but "
                             f"{len(declared)} channel names were given ({_join(declared)}).")
        marker = declared[n - base]
        if marker is None:
            continue  # a channel the caller skipped with '-'
        if marker in keyed.setdefault(key, {}):
            return None
        keyed[key][marker] = it
    return _complete(keyed, [c for c in declared if c is not None])


def _complete(keyed: dict[str, dict[str, _Item]], order: list[str] | None) -> list[_Group]:
    """The groups in ``order`` of markers; refuse a group lacking one of them."""
    groups = []
    for key, by_marker in keyed.items():
        markers = order if order is not None else list(by_marker)
        missing = [m for m in markers if m not in by_marker]
        if missing:
            first = next(iter(by_marker.values())).blob.name
            image = key.rpartition("/")[2]
            raise InputError(f"{first}: no file for channel(s) {', '.join(missing)} "
                             f"of image '{image}'.")
        groups.append([(m, by_marker[m]) for m in markers])
    return groups


def _group_in_order(singles: list[_Item], declared: list[str | None] | None) -> list[_Group]:
    """The last resort: files taken in order, N at a time, refused when the names show
    that one group would mix events."""
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
    for group in groups:
        items = [it for _, it in group]
        if not _one_event([_strip_ext(it.blob.key) for it in items]):
            raise InputError(
                f"{items[0].blob.name}: cannot tell which file holds which channel "
                f"({', '.join(it.blob.name for it in items)} would be stacked as "
                f"{_join(declared)}, but their names differ by more than a channel label): "
                "name files after their marker (e.g. object005_DAPI.tif) or pass one "
                "multi-channel file per event.")
    return groups


def _strip_ext(key: str) -> str:
    folder, stem = _split_key(key)
    return f"{folder}/{stem}" if folder else stem


# A channel label: a short word ("a", "blue") or a channel number ("2", "ch0", "w1").
_NUMBER_LABEL = re.compile(r"(?:c|ch|chan|channel|w)?(\d{1,3})", re.I)
_WORD_LABEL = re.compile(r"[A-Za-z]{1,12}")


def _one_event(stems: list[str]) -> bool:
    """Whether ``stems`` (folder + name, in stacking order) look like the channels of one
    event: identical but for one channel label, where numbers count up from 0 or 1 and a bare
    number is not padded to three digits or more (``img1``..``img4`` and ``img01``..``img04`` are
    channels; ``object001``..``object004`` are four events, as exports number events).

    This is what tells `obj5_ch0`...`obj5_ch3` (one event) from `C1-obj5`, `C1-obj16`...
    (one channel of several events): the varying part of the latter is an event number.
    """
    middles = _varying_parts(stems)
    if any(not m or canonical(m) is not None for m in middles):
        return False  # identical names, or a marker name that grouping could not use
    numbers = [_NUMBER_LABEL.fullmatch(m) for m in middles]
    if all(numbers):
        if any(m.isdigit() and len(m) > 2 and m.startswith("0") for m in middles):
            return False  # bare numbers padded to 3+ digits (object001...) count events, not channels
        values = [int(m[1]) for m in numbers if m]
        return values[0] in (0, 1) and values == list(range(values[0], values[0] + len(values)))
    return all(_WORD_LABEL.fullmatch(m) for m in middles)


def _varying_parts(stems: list[str]) -> list[str]:
    """What is left of each stem once the longest common prefix and suffix are removed,
    cut at whole letter/digit runs so that 'object005'/'object016' vary in '005'/'016',
    not in '05'/'16'."""
    pre = len(os.path.commonprefix(stems))
    while pre and any(_same_run(s[pre - 1:pre], s[pre:pre + 1]) for s in stems):
        pre -= 1
    rests = [s[pre:] for s in stems]
    suf = len(os.path.commonprefix([r[::-1] for r in rests]))
    suf = min(suf, min(len(r) for r in rests))
    while suf and any(_same_run(r[len(r) - suf - 1:len(r) - suf], r[len(r) - suf:len(r) - suf + 1])
                      for r in rests):
        suf -= 1
    return [r[:len(r) - suf] for r in rests]


def _same_run(a: str, b: str) -> bool:
    """Whether characters ``a`` and ``b`` would sit in one run of letters or of digits."""
    return bool(a and b and ((a.isdigit() and b.isdigit()) or (a.isalpha() and b.isalpha())))


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
