"""Decoding one image file (TIFF/OME-TIFF, PNG, JPEG) into a (C, H, W) array.

Everything here treats the bytes as hostile. Each decoder first reads only the header,
checks the declared shape, dtype and data extents against `Limits`, and only then
decodes. Any failure of a third-party decoder on these bytes is the file's fault and is
turned into an `InputError` naming the file.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import tifffile
from PIL import Image

from classifier.errors import InputError
from classifier.limits import DEFAULT_LIMITS, Limits, human_size

# PIL's own decompression-bomb guard: warn above the limit, refuse above twice it. We
# check the declared size ourselves first; this is the belt to those braces.
Image.MAX_IMAGE_PIXELS = DEFAULT_LIMITS.max_pixels_per_plane

_ALLOWED_KINDS = "uif"  # unsigned, signed, float; not bool, complex, object, void
_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
               "\\u00B5m": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass(frozen=True)
class FileForm:
    """How an image was stored, where its decoded values cannot tell (the domain check reads it):
    a colour (RGB) composite or separate channels, lossy compression, the container's bit depth."""

    fmt: str  # "TIFF", "PNG" or "JPEG"
    bits: int | None  # bits per sample of the container (8, 16, 32); None for floating point
    lossy: bool = False  # JPEG, or JPEG / WebP compression inside a TIFF
    colour: bool = False  # an RGB(A) colour image: markers rendered as colours


#: TIFF compression schemes (tifffile's names) that lose information; plain JPEG 2000, JPEG XL and
#: LERC may be lossless and are not named
_LOSSY_TIFF = {"JPEG", "OJPEG", "ALT_JPEG", "JPEG_99", "JPEG_LOSSY", "JPEG_2000_LOSSY", "JPEGXR", "JPEGXR_NDPI",
               "WEBP", "WEBP_DEPRECATED"}


@dataclass
class Decoded:
    """A decoded (or, with ``array=None``, only probed) image."""

    fmt: str  # "TIFF", "PNG" or "JPEG"
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: np.dtype[Any]
    array: np.ndarray | None  # (C, H, W) in the file's dtype
    names: list[str] | None = None  # channel names from the file's metadata
    pixel_size_um: float | None = None
    alpha: bool = False  # the last channel is the alpha of an RGBA composite
    lossy: bool = False  # see FileForm
    colour: bool = False  # see FileForm

    def form(self) -> FileForm:
        bits = None if np.dtype(self.dtype).kind == "f" else 8 * np.dtype(self.dtype).itemsize
        return FileForm(self.fmt, bits, self.lossy, self.colour)


def sniff(head: bytes) -> str | None:
    """The container format from the first bytes: "tiff", "png", "jpeg", "zip" or None."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    return None


def decode(fh: IO[bytes], fmt: str, name: str, limits: Limits, *, read: bool = True) -> Decoded:
    """Decode ``fh`` (format from `sniff`); with ``read=False`` check the header only."""
    try:
        if fmt == "tiff":
            with _tifffile_quiet():
                return _tiff(fh, name, limits, read)
        return _pil(fh, fmt, name, limits, read)
    except InputError:
        raise
    except Exception as exc:  # any decoder failure on untrusted bytes is bad input
        raise InputError(f"{name}: cannot be read as {fmt.upper()} "
                         f"(truncated or corrupt: {_reason(exc)}).") from exc


def check_shape(shape: tuple[int, int, int], dtype: np.dtype[Any], name: str,
                limits: Limits) -> None:
    """Refuse a declared shape/dtype before any pixel is decoded."""
    c, h, w = shape
    if dtype.kind not in _ALLOWED_KINDS or dtype.itemsize > 8:
        raise InputError(f"{name}: pixel type {dtype} is not supported "
                         "(use 8/16/32-bit integers or floats).")
    if h < limits.min_side or w < limits.min_side:
        raise InputError(f"{name}: {w}x{h} pixels is too small to hold a cell "
                         f"(at least {limits.min_side}x{limits.min_side}).")
    if h * w > limits.max_pixels_per_plane:
        raise InputError(f"{name}: {w}x{h} pixels is over the limit of "
                         f"{limits.max_pixels_per_plane / 1e6:.0f} megapixels per image.")
    if c > limits.max_channels:
        raise InputError(f"{name}: {c} channels is over the limit of {limits.max_channels}.")
    if c * h * w * 4 > limits.max_image_bytes:
        raise InputError(f"{name}: {c}x{w}x{h} pixels is over the limit of "
                         f"{human_size(limits.max_image_bytes)} once decoded.")


# --- TIFF --------------------------------------------------------------------------


_decoding = threading.local()


class _QuietWhileDecoding(logging.Filter):
    """Drops tifffile's records in a thread that is decoding untrusted bytes (other threads,
    and tifffile used elsewhere, log as usual)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_decoding, "active", False)


logging.getLogger("tifffile").addFilter(_QuietWhileDecoding())


@contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """Keep tifffile's own log lines (``<tifffile.TiffPages @8> invalid page offset ...``) off
    stderr: on untrusted bytes they precede the InputError that says the same to the user in
    words, and in a worker's log they read like a server fault."""
    before = getattr(_decoding, "active", False)
    _decoding.active = True
    try:
        yield
    finally:
        _decoding.active = before


def _tiff(fh: IO[bytes], name: str, limits: Limits, read: bool) -> Decoded:
    # _multifile=False: an OME-TIFF may name companion files; following those names would
    # let an upload read other files next to it on the server.
    with tifffile.TiffFile(fh, _multifile=False) as tif:
        pages = len(tif.pages)  # walks the IFD chain only: fast
        if pages > limits.max_tiff_pages:
            raise InputError(f"{name}: the TIFF has {pages} pages; at most {limits.max_tiff_pages} "
                             "are accepted.")
        series = list(tif.series)
        if not series:
            raise InputError(f"{name}: the TIFF file contains no image.")
        planes = _pages_as_channels(series)
        index = 0
        if planes is not None:
            h, w = planes[0].shape
            shape, order = (len(planes), h, w), None
            chosen = planes
            axes = "CYX"
        else:
            index = _main_series(series, name)
            s = series[index]
            shape, order = _layout(tuple(s.shape), s.axes, name)
            chosen = [s]
            axes = s.axes
        dtype = np.dtype(chosen[0].dtype)
        check_shape(shape, dtype, name, limits)
        size = tif.filehandle.size
        for s in chosen:
            check_extents(s, size, name)
        # the chosen image's own metadata and tags: a preview written first has its own
        page = chosen[0].keyframe if planes is None else tif.pages.first
        names, pixel = _tiff_metadata(tif, shape[0], limits, index, page)
        # From the header alone the extra sample only *may* be an alpha (validation stays
        # lenient); once the pixels are read it must also look like one (see _is_alpha).
        alpha = _tiff_extra_sample(page, axes, shape[0])
        pages_read = [page] if planes is None else [s.keyframe for s in planes]
        lossy = any(getattr(pg.compression, "name", "") in _LOSSY_TIFF for pg in pages_read)
        # a colour picture: 8-bit RGB samples interleaved per pixel, as viewers and slide scanners save a
        # composite. Planar "RGB" (tifffile's default for a (3|4, H, W) array) and files that name their
        # channels (OME, ImageJ labels) hold separate fluorescence channels, whatever the tag says
        colour = (getattr(page.photometric, "name", "") in ("RGB", "YCBCR")
                  and getattr(page.planarconfig, "name", "") == "CONTIG" and dtype == np.uint8
                  and (shape[0] == 3 or (shape[0] == 4 and alpha)) and not names)
        array = None
        if read:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parts = [np.asarray(s.asarray(maxworkers=1)) for s in chosen]
            raw = np.stack(parts) if planes is not None else parts[0]
            if raw.size != math.prod(shape):
                raise InputError(f"{name}: the image data do not match the TIFF header.")
            array = raw.transpose(order).reshape(shape) if order is not None else raw.reshape(shape)
            if alpha:
                alpha = _is_alpha(array[-1], _extra_sample_kind(page))
            colour = colour and (shape[0] == 3 or alpha) and not _is_grey(array[:3])
        return Decoded("TIFF", shape, dtype, array, names, pixel, alpha, lossy, colour)


def _plane_area(series: Any) -> int:
    axes, shape = str(series.axes), tuple(series.shape)
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        return 0
    return int(shape[axes.index("Y")]) * int(shape[axes.index("X")])


def _main_series(series: list[Any], name: str) -> int:
    """The index of the one image of a TIFF: the largest series, the others being previews (a thumbnail, a
    slide label, an overview written before the image, under a quarter of its area). A file
    holding several full-sized images (an OME-TIFF of many events or fields) is refused: reading
    only the first would drop the rest from the count without a word."""
    areas = [_plane_area(s) for s in series]
    largest = max(areas)
    full = [i for i, a in enumerate(areas) if a * 4 > largest]
    if len(full) > 1:
        sizes = sorted({f"{series[i].shape[str(series[i].axes).index('X')]}x"
                        f"{series[i].shape[str(series[i].axes).index('Y')]}" for i in full})
        raise InputError(f"{name}: holds {len(full)} images ({', '.join(sizes)} pixels; TIFF/OME series), "
                         "but one image per file is read: save each image (event or field) as its own "
                         "file, or zip them.")
    return full[0] if full else 0


def _pages_as_channels(series: list[Any]) -> list[Any] | None:
    """Several same-sized 2-D series (one page each, no shape metadata): the channels."""
    if len(series) < 2 or len(series) > 64:
        return None
    shapes = {tuple(s.shape) for s in series}
    dtypes = {np.dtype(s.dtype) for s in series}
    if len(shapes) == 1 and len(dtypes) == 1 and len(next(iter(shapes))) == 2:
        return series
    return None


def _layout(shape: tuple[int, ...], axes: str, name: str) -> tuple[tuple[int, int, int], list[int]]:
    """(C, H, W) and the transpose order bringing the file's axes to (other..., C, Y, X).

    Any axis other than Y and X of length > 1 is taken as the channel axis (C, S for RGB
    samples, and also Z/T/I/Q, which is how pages end up when a writer did not say they
    are channels). More than one such axis (a z-stack of multi-channel planes) is refused.
    """
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        raise InputError(f"{name}: the TIFF has no recognisable height and width "
                         f"(axes '{axes}', shape {shape}).")
    y, x = axes.index("Y"), axes.index("X")
    extra = [i for i, a in enumerate(axes) if i not in (y, x) and shape[i] > 1]
    if len(extra) > 1:
        dims = " x ".join(f"{axes[i]}={shape[i]}" for i in extra)
        raise InputError(f"{name}: has more dimensions than channels x height x width "
                         f"({dims}); send one plane per channel (e.g. one focal plane).")
    c_axis = extra[0] if extra else None
    others = [i for i in range(len(axes)) if i not in (y, x, c_axis)]
    order = others + ([c_axis] if c_axis is not None else []) + [y, x]
    c = shape[c_axis] if c_axis is not None else 1
    return (c, shape[y], shape[x]), order


def check_extents(series: Any, size: int, name: str) -> None:
    """Every strip/tile must lie inside the file: catches truncation from the header alone."""
    offset = getattr(series, "dataoffset", None)
    if offset is not None and offset + series.nbytes > size:
        # a contiguous series is read in one go from its first page's offset
        raise InputError(f"{name}: the TIFF file is truncated (image data run to byte "
                         f"{offset + series.nbytes}, file has {size}).")
    for page in series.pages:
        if page is None:
            raise InputError(f"{name}: the TIFF is missing image pages (truncated?).")
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if count and offset + count > size:
                raise InputError(f"{name}: the TIFF file is truncated "
                                 f"(image data run to byte {offset + count}, file has {size}).")


def _tiff_extra_sample(page: Any, axes: str, channels: int) -> bool:
    """An RGB TIFF with a fourth sample: the layout of an RGBA composite, but also how
    tifffile (and others) store any (H, W, 4) array, so it is only a candidate alpha."""
    return bool(
        "S" in axes
        and channels == 4
        and page.photometric == tifffile.PHOTOMETRIC.RGB
        and page.extrasamples
    )


def _extra_sample_kind(page: Any) -> int:
    """The ExtraSamples tag of the image's first page: 0 unspecified, 1 associated alpha,
    2 unassociated alpha."""
    samples = page.extrasamples
    return int(samples[0]) if samples else 0


def _is_alpha(plane: np.ndarray, kind: int) -> bool:
    """Whether the extra sample is an alpha to drop rather than a marker channel.

    tifffile tags every extra sample as unassociated alpha, so the tag alone cannot tell a
    fourth marker from an alpha: a marker is never constant, an opaque alpha is. Fully
    opaque (the dtype's maximum) counts even untagged; any other constant needs the tag.
    A varying sample is kept as a channel, so a name count that leaves it out is refused
    ("has 4 channels but 3 channel names were given") instead of silently dropping it.
    """
    if plane.size == 0:
        return False
    first = plane.flat[0]
    if not bool(np.all(plane == first)):
        return False
    opaque = plane.dtype.kind in "ui" and first == np.iinfo(plane.dtype).max
    return bool(opaque or kind in (1, 2))


def _tiff_metadata(tif: tifffile.TiffFile, channels: int, limits: Limits, index: int = 0,
                   page: Any = None) -> tuple[list[str] | None, float | None]:
    """Channel names and pixel size (µm) of image ``index`` (its first page ``page``) from
    OME-XML, ImageJ or tifffile's JSON."""
    names: list[str] | None = None
    pixel: float | None = None
    page = tif.pages.first if page is None else page
    if tif.is_ome:
        xml = tif.pages.first.description or ""
        if len(xml) <= limits.max_metadata_chars:
            names, pixel = _ome(xml, index)
    if tif.is_imagej and names is None:
        ij = tif.imagej_metadata or {}
        labels = ij.get("Labels")
        if isinstance(labels, list | tuple) and len(labels) >= channels:
            names = [str(v) for v in labels[:channels]]
        if pixel is None and str(ij.get("unit", "")).lower() in _UNIT_TO_UM:
            pixel = _resolution(page) * _UNIT_TO_UM[str(ij["unit"]).lower()]
    shaped = tif.shaped_metadata if tif.is_shaped else None
    if shaped and len(shaped) > index and isinstance(shaped[index], dict):
        meta = shaped[index]
        chan = meta.get("Channel")
        if names is None and isinstance(chan, dict) and isinstance(chan.get("Name"), list):
            names = [str(v) for v in chan["Name"]]
        if pixel is None and isinstance(meta.get("PhysicalSizeX"), int | float):
            unit = str(meta.get("PhysicalSizeXUnit", "µm"))
            pixel = float(meta["PhysicalSizeX"]) * _UNIT_TO_UM.get(unit, math.nan)
    if names is not None and len(names) != channels:
        names = None
    if pixel is not None and not (math.isfinite(pixel) and 1e-3 < pixel < 1e3):
        pixel = None
    return names, pixel


def _ome(xml: str, index: int = 0) -> tuple[list[str] | None, float | None]:
    """Names and PhysicalSizeX of image ``index`` in an OME-XML document."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    all_pixels = [e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"]
    pixels = all_pixels[index] if index < len(all_pixels) else None
    if pixels is None:
        return None, None
    chans = [e for e in pixels if e.tag.endswith("Channel")]
    names = [c.get("Name") or "" for c in chans]
    names_out = names if chans and all(names) else None
    pixel = None
    try:
        value = float(pixels.get("PhysicalSizeX", "nan"))
        unit = pixels.get("PhysicalSizeXUnit", "µm")
        pixel = value * _UNIT_TO_UM.get(unit, math.nan)
    except ValueError:
        pass
    return names_out, pixel


def _resolution(page: Any) -> float:
    """Pixel spacing from a page's XResolution tag (ImageJ stores pixels per unit)."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return math.nan
    num, den = tag.value
    return den / num if num else math.nan


# --- PNG / JPEG --------------------------------------------------------------------


def _png16_colour(fh: IO[bytes]) -> tuple[int, int, int] | None:
    """(bands, height, width) of a 16-bit RGB or RGBA PNG, else None (from its IHDR chunk)."""
    pos = fh.tell()
    head = fh.read(29)
    fh.seek(pos)
    if len(head) < 29 or head[12:16] != b"IHDR" or head[24] != 16 or head[25] not in (2, 6):
        return None
    return (3 if head[25] == 2 else 4), int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def _png16(fh: IO[bytes], name: str, shape: tuple[int, int, int], limits: Limits, read: bool) -> Decoded:
    """A 16-bit colour PNG, kept at 16 bits: Pillow reads such a file as 8-bit RGB(A), so 12-bit
    camera data saved that way kept 16 grey levels and was then called low-contrast."""
    bands, h, w = shape
    dtype = np.dtype(np.uint16)
    check_shape((bands, h, w), dtype, name, limits)
    alpha = bands == 4
    if not read:
        return Decoded("PNG", (bands, h, w), dtype, None, alpha=alpha, colour=True)
    try:
        # imported here: only these files need it, and the machines lent for GPU work have numpy, tifffile
        # and Pillow but not imagecodecs (segment-eval of TIFF folders failed there on the import alone)
        import imagecodecs

        arr = np.moveaxis(np.asarray(imagecodecs.png_decode(fh.read())), -1, 0)
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's to fix, said plainly
        raise InputError(f"{name}: cannot be read as a 16-bit PNG ({_reason(exc)}).") from None
    arr, alpha = _single_channel(arr, alpha, lossless=True)
    return Decoded("PNG", tuple(arr.shape), arr.dtype, arr, alpha=alpha,  # type: ignore[arg-type]
                   colour=arr.shape[0] >= 3)


def _pil(fh: IO[bytes], fmt: str, name: str, limits: Limits, read: bool) -> Decoded:
    wide = _png16_colour(fh) if fmt == "png" else None
    if wide is not None:
        return _png16(fh, name, wide, limits, read)
    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS PIL only warns; our own check below refuses it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(fh, formats=["PNG", "JPEG"])
        except Image.DecompressionBombError as exc:
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            raise InputError(
                f"{name}: declares {pixels.group(1) if pixels else 'too many'} pixels, over the "
                f"limit of {limits.max_pixels_per_plane / 1e6:.0f} megapixels per image.") from exc
        with im:
            w, h = im.size
            mode = im.mode
            if mode == "1":
                raise InputError(f"{name}: 1-bit black-and-white images are not supported.")
            bands = {"RGBA": 4, "RGB": 3, "P": 3, "PA": 4, "CMYK": 3, "YCbCr": 3, "LA": 2}.get(mode, 1)
            alpha = mode in ("RGBA", "PA", "LA")
            dtype = np.dtype(np.uint16) if mode.startswith("I;16") else np.dtype(np.uint8)
            if mode in ("I", "F"):
                dtype = np.dtype(np.int32 if mode == "I" else np.float32)
            check_shape((bands, h, w), dtype, name, limits)
            if not read:
                return Decoded(fmt.upper(), (bands, h, w), dtype, None, alpha=alpha, lossy=fmt == "jpeg",
                               colour=bands >= 3)
            im.load()
            if mode in ("P", "PA", "CMYK", "YCbCr"):
                im = im.convert("RGBA" if alpha else "RGB")
            arr = np.asarray(im)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    if alpha and arr.shape[0] == 2:  # LA: grey plus alpha; the alpha is never a marker
        arr, alpha = arr[:1], False
    arr, alpha = _single_channel(arr, alpha, lossless=fmt == "png")
    return Decoded(fmt.upper(), tuple(arr.shape), arr.dtype, arr, alpha=alpha,  # type: ignore[arg-type]
                   lossy=fmt == "jpeg", colour=arr.shape[0] >= 3)


def _single_channel(arr: np.ndarray, alpha: bool, lossless: bool) -> tuple[np.ndarray, bool]:
    """(C, H, W) colour bands reduced to the one channel they render, when they render one: a
    greyscale channel saved as RGB (common for per-channel JPEG exports), or, losslessly, one channel
    rendered in its colour (DAPI blue, CK green, CD45 magenta...), one file per channel, which read
    as a colour composite made each file an "event" of its own (54 for 18). Lossless only: JPEG's
    chroma noise leaves the other colours never exactly zero or equal. (8- and 16-bit alike.)"""
    if arr.shape[0] in (3, 4) and _is_grey(arr[:3]):
        arr, alpha = arr[:1], False
    elif arr.shape[0] in (3, 4) and lossless and (band := _one_colour(arr[:3])) is not None:
        arr, alpha = arr[band:band + 1], False
    return np.ascontiguousarray(arr), alpha


def _one_colour(rgb: np.ndarray) -> int | None:
    """The band holding a single channel rendered in one colour (the other bands all zero, or
    equal to it: magenta, cyan, yellow), else None."""
    lit = [b for b in range(3) if rgb[b].any()]
    if not 1 <= len(lit) <= 2 or not all(np.array_equal(rgb[lit[0]], rgb[b]) for b in lit[1:]):
        return None
    return lit[0]


def _is_grey(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[0], rgb[1]) and np.array_equal(rgb[1], rgb[2]))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
