"""Uploaded images on the local disk (the default) or in an S3-compatible bucket (issue 15.3).

The classifier reads files by path. Local storage has one; a bucket does not, so a worker on
any host streams each object to a temporary file (in 8 MiB chunks, never the whole file in
memory) and removes it when the job ends. ``config/settings/base.py`` picks the storage from the
environment (``S3_BUCKET`` and friends); nothing else in the code needs to know which it is.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def local_path(field) -> Path | None:  # noqa: ANN001 - a FieldFile
    """The file's path on this machine, or None when its storage has none (a bucket)."""
    try:
        return Path(field.path)
    except NotImplementedError:
        return None


@contextlib.contextmanager
def local_paths(fields: Sequence) -> Iterator[list[Path]]:
    """Paths the classifier can open, for stored files (FieldFiles), in order.

    Local files are used where they are; objects in a bucket are streamed to a temporary
    folder that is removed on exit."""
    tmp: tempfile.TemporaryDirectory | None = None
    paths: list[Path] = []
    try:
        for i, field in enumerate(fields):
            path = local_path(field)
            if path is None:
                if tmp is None:
                    tmp = tempfile.TemporaryDirectory(prefix="ctc-media-")
                path = Path(tmp.name) / f"{i:05d}-{Path(field.name).name}"
                with field.storage.open(field.name, "rb") as src, path.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            paths.append(path)
        yield paths
    finally:
        if tmp is not None:
            tmp.cleanup()


@contextlib.contextmanager
def incoming_paths(files: Iterable) -> Iterator[list[Path]]:
    """Paths of files still in the web request (Django's UploadedFile): large ones are already
    in a temporary file; small in-memory ones are written to one. Lets the web check headers
    without reading back from a bucket what it has just written there."""
    with tempfile.TemporaryDirectory(prefix="ctc-incoming-") as tmp:
        paths = []
        for i, f in enumerate(files):
            if hasattr(f, "temporary_file_path"):
                paths.append(Path(f.temporary_file_path()))
                continue
            path = Path(tmp) / f"{i:05d}-{Path(f.name).name}"
            f.seek(0)
            with path.open("wb") as out:
                for chunk in f.chunks():
                    out.write(chunk)
            f.seek(0)
            paths.append(path)
        yield paths
