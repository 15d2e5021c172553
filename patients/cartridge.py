"""A whole cartridge, a few fields at a time (issue 15.4).

A CellSearch cartridge is ~175 fields x 4 channels of 1384 x 1036 16-bit pixels: 2 GB of pixels,
4 GB as the classifier's float32. Decoding the upload at once (``Classifier.analyse_files``
reads every image first) would hold all of it, twice. When a field upload is a set of
per-field images (a zip of per-field TIFFs, the way instruments export, or the TIFFs
themselves) each holding every channel, or one multi-page TIFF of whole fields (a
fields x channels x height x width series), the worker instead analyses a few fields at a
time: each field is streamed out of the zip, or its pages read out of the stack, to a
temporary file, analysed with the same classifier call (every check of ``classifier.io``
applies to it), and only its events are kept. Peak memory is then a few fields' work plus the
events found so far.

Any other layout (one file per channel, a single field) goes through the usual whole-upload
call unchanged.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from classifier.results import AnalysisResult

_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class FieldSource:
    """One field image: its display name, and where it lives (a file, or a zip member)."""

    name: str
    path: Path
    member: str | None = None
    pages: tuple[int, ...] | None = None  # in a multi-field TIFF: this field's pages, one per channel


@dataclass(frozen=True)
class Stack:
    """A TIFF whose first series is whole fields: ``fields`` x channels x height x width."""

    fields: int
    channels: int
    field_axis_first: bool  # (F, C, Y, X); else (C, F, Y, X)

    def pages(self, k: int) -> tuple[int, ...]:
        """Field ``k``'s pages in channel order (pages run over the leading axes row-major)."""
        if self.field_axis_first:
            return tuple(k * self.channels + c for c in range(self.channels))
        return tuple(c * self.fields + k for c in range(self.channels))


def stack_layout(fh, n_channels: int) -> Stack | None:  # noqa: ANN001 - a path or binary file object
    """The field stack a TIFF holds, or None (header only). The channel axis is the one named C
    in the file's metadata, else the one whose length is the number of channels declared."""
    import tifffile

    try:
        with tifffile.TiffFile(fh, _multifile=False) as tf:
            if not tf.series or len(tf.pages) > 4096:
                return None
            s = tf.series[0]
            shape, axes = tuple(s.shape), s.axes
            planes = len(s.pages)
    except Exception:  # noqa: BLE001 - not ours to judge: the whole-upload path reports it
        return None
    if len(shape) != 4 or axes[2:] != "YX" or planes != shape[0] * shape[1]:
        return None
    a, b = shape[0], shape[1]
    if axes[1] == "C" or (axes[0] != "C" and b == n_channels):
        layout = Stack(a, b, True)
    elif axes[0] == "C":
        layout = Stack(b, a, False)
    else:
        return None
    return layout if layout.channels == n_channels and layout.fields >= 2 else None


def check_stack(path: Path, name: str, stack: Stack, limits) -> None:  # noqa: ANN001 - classifier.limits.Limits
    """The upload-time checks of a field stack, from its header (the per-field checks of
    ``classifier.io`` run on each field in the worker): page count, plane size, truncation."""
    import tifffile

    from classifier.decoders import check_extents
    from classifier.errors import InputError

    with tifffile.TiffFile(path, _multifile=False) as tf:
        pages = len(tf.pages)
        if pages > limits.max_tiff_pages:
            raise InputError(f"{name}: the TIFF has {pages} pages; at most {limits.max_tiff_pages} are accepted.")
        series = tf.series[0]
        h, w = series.shape[-2:]
        if h < limits.min_side or w < limits.min_side or h * w > limits.max_pixels_per_plane:
            raise InputError(f"{name}: fields of {w}x{h} pixels are outside what is accepted "
                             f"({limits.min_side}-{int(limits.max_pixels_per_plane ** 0.5)} px a side).")
        try:
            check_extents(series, tf.filehandle.size, name)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - tifffile on a cut file: a page offset past the end
            raise InputError(f"{name}: the TIFF is missing image pages (truncated?): {err}") from err


def _skipped(member: str) -> bool:
    p = PurePosixPath(member)
    return (member.endswith("/") or p.parts[:1] == ("__MACOSX",) or p.name.startswith(".")
            or p.suffix.lower() not in _TIFF)


def _channels_first(fh, n_channels: int) -> bool:  # noqa: ANN001 - a binary file object
    """The TIFF holds one whole field: a (channels, height, width) series with every channel."""
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tf:
            shape = tf.series[0].shape if tf.series else ()
    except Exception:  # noqa: BLE001 - not ours to judge: the whole-upload path reports it
        return False
    return len(shape) == 3 and shape[0] == n_channels


def field_sources(paths: Sequence[Path], names: Sequence[str], n_channels: int) -> list[FieldSource] | None:
    """The upload's fields one by one, or None when it is not a set of whole-field TIFFs
    (then the upload is analysed at once, as before). Header reads only."""
    from classifier.archives import natural_key

    out: list[FieldSource] = []
    for path, name in zip(paths, names, strict=True):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                infos = sorted((i for i in zf.infolist() if not _skipped(i.filename)),
                               key=lambda i: natural_key(i.filename))
                for info in infos:
                    with zf.open(info) as fh:
                        if not _channels_first(fh, n_channels):
                            return None
                    out.append(FieldSource(f"{name}/{info.filename}", path, info.filename))
        elif path.suffix.lower() in _TIFF or name.lower().endswith(_TIFF):
            with path.open("rb") as fh:
                whole_field = _channels_first(fh, n_channels)
            if whole_field:
                out.append(FieldSource(name, path))
                continue
            stack = stack_layout(path, n_channels)
            if stack is None:
                return None
            out += [FieldSource(f"{name}#field{k + 1}", path, pages=stack.pages(k)) for k in range(stack.fields)]
        else:
            return None
    return out if len(out) >= 2 else None


@contextlib.contextmanager
def _materialised(batch: Sequence[FieldSource], tmp: Path) -> Iterator[list[Path]]:
    """The fields as files the classifier can open: zip members are streamed out to ``tmp``
    (1 MiB chunks) and removed when the caller moves on."""
    paths: list[Path] = []
    made: list[Path] = []
    try:
        for k, src in enumerate(batch):
            if src.member is None and src.pages is None:
                paths.append(src.path)
                continue
            dest = tmp / f"field-{k}.tif"
            if src.pages is not None:
                _write_field(src.path, src.pages, dest)
            else:
                with zipfile.ZipFile(src.path) as zf, zf.open(src.member) as fh, dest.open("wb") as out:
                    shutil.copyfileobj(fh, out, 1 << 20)
            made.append(dest)
            paths.append(dest)
        yield paths
    finally:
        for dest in made:
            dest.unlink(missing_ok=True)


def _write_field(path: Path, pages: tuple[int, ...], dest: Path) -> None:
    """One field of a stack as its own (channels, height, width) TIFF: only its pages are read."""
    import tifffile

    with tifffile.TiffFile(path, _multifile=False) as tf:
        field = tf.asarray(key=list(pages), maxworkers=1)
    tifffile.imwrite(dest, field, photometric="minisblack", metadata={"axes": "CYX"})


def fields_per_call(clf) -> int:  # noqa: ANN001 - a classifier.engine.Classifier
    """Fields analysed per classifier call: two per process the classifier spreads work over
    (its processes then take whole fields each; memory stays a few fields' worth)."""
    return max(1, 2 * int(getattr(clf, "prep_workers", 1)))


def analyse_fields(clf, sources: Sequence[FieldSource], channels: Sequence[str], pixel_size_um: float | None,  # noqa: ANN001
                   progress: Callable[[float, str], None] | None = None, *, per_call: int | None = None
                   ) -> AnalysisResult:
    """Analyse ``sources`` a few fields at a time and merge the results into one, as if the
    upload had been analysed at once: events numbered across fields, ``source`` = "field#k",
    stage timings summed, warnings kept, the domain check the least favourable of the fields'."""
    n = len(sources)
    step = per_call or fields_per_call(clf)
    events: list = []
    timings: dict[str, float] = {}
    warnings: list[str] = []
    checks: list[dict] = []
    last: AnalysisResult | None = None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctc-cartridge-") as tmp:
        for i in range(0, n, step):
            batch = sources[i:i + step]

            def batch_progress(fraction: float, stage: str, i: int = i, size: int = len(batch)) -> None:
                if progress is not None:
                    done = i + size * max(0.0, min(1.0, fraction))
                    progress(done / n, f"fields {i + 1}-{i + size} of {n}: {stage}")

            t = time.perf_counter()
            with _materialised(batch, Path(tmp)) as paths:
                res = clf.analyse_files(paths, list(channels), kind="field", pixel_size_um=pixel_size_um,
                                        names=[src.name for src in batch], progress=batch_progress)
            timings["unpack"] = timings.get("unpack", 0.0) + (time.perf_counter() - t
                                                              - sum(res.timings.values()))
            for e in res.events:
                e.index = len(events)
                events.append(e)
            for k, v in res.timings.items():
                timings[k] = timings.get(k, 0.0) + float(v)
            warnings += res.warnings
            if res.domain_check:
                checks.append(res.domain_check)
            last = res
    assert last is not None
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["fields"] = n
    timings["per_field_s"] = round((time.perf_counter() - t0) / n, 3)
    return AnalysisResult(events=events, model_version=last.model_version, channels=list(last.channels),
                          timings=timings, device=last.device, threshold=last.threshold,
                          domain_check=_merge_checks(checks, n), warnings=warnings)


def _merge_checks(checks: list[dict], n: int) -> dict | None:
    """One domain check for the cartridge's ``n`` fields from the checks of its groups of fields
    (one per classifier call): shifted if any group is, the worst score, the reasons of every
    group (each once, at most 10)."""
    if not checks:
        return None
    shifted = [c for c in checks if c.get("status") != "in_domain"]
    worst = max(checks, key=lambda c: float(c.get("score") or 0.0))
    from patients.drawdomain import merged_reasons  # here: this module loads without Django's models

    merged = dict(worst)
    merged.update(status="shifted" if shifted else "in_domain", reasons=merged_reasons(shifted or checks),
                  fields=n, groups=len(checks), groups_shifted=len(shifted))
    return merged
