"""Size limits for uploaded images, checked before anything large is allocated."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """What one upload may contain. The defaults admit an 8192 x 8192 field in 16 channels'
    worth of headroom and refuse anything that could exhaust a worker's memory.
    """

    #: One uploaded file, or one zip member once inflated.
    max_file_bytes: int = 512 * MiB
    #: All files of an upload plus all zip members inflated.
    max_total_bytes: int = 2 * GiB
    #: Image files in one upload, zip members included.
    max_files: int = 2000
    #: Inflated/compressed size of a zip member (only checked above 1 MiB inflated).
    max_zip_ratio: float = 200.0
    #: Archive nesting: 1 = an uploaded zip may hold images but no further zips.
    max_zip_depth: int = 1
    #: Height x width of one plane, read from the header before decoding (64 Mpx).
    max_pixels_per_plane: int = 8192 * 8192
    #: Channels in one image.
    max_channels: int = 16
    #: One image once decoded to float32 (C x H x W x 4 bytes).
    max_image_bytes: int = 1 * GiB
    #: All images of one upload once decoded to float32 (what the worker holds in memory).
    max_decoded_bytes_total: int = 4 * GiB
    #: Smallest height or width accepted: anything smaller cannot hold a cell.
    min_side: int = 16
    #: Pages (IFDs) in one TIFF: counted before the series are built, because building
    #: thousands of tiny series takes minutes (a cheap denial of service).
    max_tiff_pages: int = 1024
    #: OME-XML and other text metadata parsed from a file.
    max_metadata_chars: int = 4 * MiB
    #: Zip members inflated in the web request to check their images (`classifier.io.validate_upload`),
    #: all zips of an upload together; members past it are checked by the worker. A member is read
    #: whole or not at all (a TIFF's header may sit at its end), so the request holds at most this
    #: much. 32 MiB is two whole CellSearch fields (4 x 1384 x 1036 x 16 bit, 11 MB each) or ~400
    #: event thumbnails (4 x 100 x 100 x 16 bit), ~0.1-0.3 s to inflate and check on one core, while a
    #: cartridge zip (175 fields, up to 2 GB) or a zip bomb's members cost the request no more.
    request_zip_bytes: int = 32 * MiB


DEFAULT_LIMITS = Limits()


def human_size(n: float) -> str:
    """Bytes for people: "870 bytes", "12.5 KB", "512 MB", "2 GB"."""
    for unit, size in (("GB", GiB), ("MB", MiB), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"
