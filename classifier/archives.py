"""Reading zip uploads safely: in memory, with caps, never extracting to disk.

A zip is a list of (name, bytes). Nothing is written anywhere, so a member called
``../../etc/passwd`` could do no harm here; it is still rejected, because no honest export
contains one and the web layer should never see such a name echoed back.

Zip bombs are stopped three ways: the declared size of each member and of all members
together (checked from the central directory before anything is inflated), the declared
compression ratio, and the actual bytes read, capped while inflating (a member whose
header lies about its size is cut off at the declared size and then fails its CRC check).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from classifier.errors import InputError
from classifier.limits import human_size

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

#: Members that are not images and are skipped rather than rejected (exports often add
#: a label sheet or a readme beside the images).
IGNORED_SUFFIXES = (".txt", ".csv", ".tsv", ".md", ".json", ".xml", ".html", ".htm",
                    ".pdf", ".log", ".ini", ".yaml", ".yml", ".db")

_CHUNK = 1 << 20
#: Below this many uncompressed bytes the ratio is not checked: a small all-black image
#: legitimately compresses a thousand-fold and cannot hurt anyone.
_RATIO_FLOOR = 1 << 20


@dataclass
class Member:
    """One image file inside an archive, already read into memory."""

    name: str  # display name: "archive.zip/inner/path.tif"
    data: bytes
    #: False when only the first bytes were read (a peek: the web request's check)
    whole: bool = True


def natural_key(name: str) -> list[int | str]:
    """Sort key putting "img2" before "img10", so channel files keep their intended order."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGIC


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "\\"))
        or "\x00" in name
        or bool(re.match(r"^[A-Za-z]:", name))
        or any(p == ".." for p in parts)
    )


def _skipped(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return (
        name.endswith("/")
        or name.startswith("__MACOSX/")
        or base.startswith(".")
        or base.lower().endswith(IGNORED_SUFFIXES)
    )


def read_zip(
    fh: IO[bytes],
    display: str,
    *,
    depth: int,
    max_depth: int,
    max_files: int,
    max_member_bytes: int,
    budget: Callable[[int, str], None],
    max_ratio: float,
    read: bool | Callable[[int], bool] = True,
) -> list[Member]:
    """The image members of the zip ``fh``, sorted by name, nested zips expanded.

    ``depth`` is this archive's nesting level (1 for an uploaded zip); a member that is
    itself a zip is accepted only while ``depth < max_depth``. ``budget(n, name)`` is
    called with each member's size and raises InputError once the upload's total is over
    its limit. With ``read=False`` only the central directory is checked (and the first
    bytes of each member, to spot nested zips): the cheap check for the web request. ``read``
    may also be a function of a member's declared (inflated) size, True to read that member
    whole: the web request's budget; the members it refuses are peeked at as with ``read=False``.
    """
    try:
        zf = zipfile.ZipFile(fh)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, zlib.error) as exc:
        raise InputError(f"{display}: not a readable zip archive ({exc}).") from exc
    with zf:
        if len(infos) > max_files:
            raise InputError(f"{display}: holds {len(infos)} entries; at most {max_files} "
                             "files are accepted in one upload.")
        for info in infos:
            if _unsafe(info.filename):
                raise InputError(f"{display}: member '{info.filename}' has an unsafe path "
                                 "(absolute or containing '..'); the archive is rejected.")
        wanted = sorted((i for i in infos if not _skipped(i.filename)),
                        key=lambda i: natural_key(i.filename))
        members: list[Member] = []
        unread_zips = 0  # nested zips not opened (past the request's budget): they may hold images
        for info in wanted:
            name = f"{display}/{info.filename}"
            _check_declared(info, name, max_member_bytes, max_ratio)
            budget(info.file_size, name)
            whole = read if isinstance(read, bool) else read(info.file_size)
            data = _read_member(zf, info, name, max_member_bytes, limit=None if whole else 8)
            if is_zip(data):
                if depth >= max_depth:
                    raise InputError(f"{name}: zip archives inside zip archives are not "
                                     "accepted; upload the images or one flat zip.")
                if whole:
                    members.extend(read_zip(
                        io.BytesIO(data), name, depth=depth + 1, max_depth=max_depth,
                        max_files=max_files - len(members), max_member_bytes=max_member_bytes,
                        budget=budget, max_ratio=max_ratio, read=read))
                else:
                    unread_zips += 1
                continue
            if len(members) >= max_files:
                raise InputError(f"{display}: more than {max_files} files; at most "
                                 f"{max_files} are accepted in one upload.")
            members.append(Member(name, data, whole))
    if not members and not unread_zips:  # in the web request too: such a zip would fail in the worker
        raise InputError(f"{display}: the archive contains no image files.")
    return members


def _check_declared(info: zipfile.ZipInfo, name: str, max_bytes: int, max_ratio: float) -> None:
    if info.flag_bits & 0x1:
        raise InputError(f"{name}: encrypted archive members are not accepted.")
    if info.file_size > max_bytes:
        raise InputError(f"{name}: {_mb(info.file_size)} uncompressed, over the limit of "
                         f"{_mb(max_bytes)} per file.")
    if info.file_size > _RATIO_FLOOR:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > max_ratio:
            raise InputError(f"{name}: compressed {ratio:.0f}:1, more than the {max_ratio:.0f}:1 "
                             "an image can reach; rejected as a possible zip bomb.")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, max_bytes: int,
                 limit: int | None) -> bytes:
    """Inflate one member with a hard cap (``limit`` bytes only, for a peek)."""
    cap = min(info.file_size, max_bytes) if limit is None else limit
    chunks: list[bytes] = []
    got = 0
    try:
        with zf.open(info) as src:
            while got < cap:
                chunk = src.read(min(_CHUNK, cap - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            if limit is None and src.read(1):
                # zipfile stops at the declared size, so this only fires if it ever does not
                raise InputError(f"{name}: larger than its archive header says; rejected.")
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError, zlib.error, KeyError) as exc:
        raise InputError(f"{name}: cannot be extracted ({exc}).") from exc
    return b"".join(chunks)


def _mb(n: int) -> str:
    return human_size(n)
