"""A lab's training set from its reviews (issue 13, point 3).

The reviewed cells a user may see (``CellEvent.objects.for_user``: a lab only ever trains on
what it may see), with their final calls (the reviewer's) and categories (the reviewer's
correction, else the model's), written as the labelled folder that ``python -m classifier
evaluate|finetune --data DIR --channels ...`` reads: ``labels.csv`` (``file,is_ctc,category`` and,
for people, ``draw,reviewer,source``) and one multi-channel TIFF per cell under ``events/``.

The image of a cell is its original uploaded file when the cell *is* that file (an event
gallery of single TIFFs): the model then trains on exactly what it analysed. Cells cut from a
field image or a zip member are written from the stored thumbnail strip (one uint8 plane per
channel, as the pipeline rendered it), marked ``image=thumbnail`` in labels.csv. One channel
order per export (the most common among the cells; the others are left out and counted) so
one ``--channels`` reads the whole folder.
"""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from patients.imaging import decode_strip
from patients.models import CareTeam, CellEvent, UploadedFile, UploadStatus
from patients.roles import Action, action_filter, can


@dataclass
class ExportSummary:
    cells: int = 0
    ctc: int = 0
    originals: int = 0
    thumbnails: int = 0
    channels: list[str] = field(default_factory=list)
    skipped_other_channels: int = 0
    skipped_no_image: int = 0
    draws: int = 0
    reviewers: list[str] = field(default_factory=list)


def reviewed_cells(user, team: CareTeam | None = None) -> QuerySet:  # noqa: ANN001
    """The cells ``user`` may see that a reviewer has called, of finished uploads (optionally one team)."""
    qs = (CellEvent.objects.for_user(user).exclude(reviewed_call="")
          .filter(upload__status=UploadStatus.DONE).select_related("upload", "reviewed_by"))
    if team is not None:
        qs = qs.filter(draw__patient__care_team=team)
    return qs.order_by("draw_id", "upload_id", "index")


def _tiff_bytes(planes: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, planes, photometric="minisblack", planarconfig="separate")
    return buf.getvalue()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80]


def write_training_set(user, out: Path, team: CareTeam | None = None) -> ExportSummary:  # noqa: ANN001
    """Write the labelled folder for ``user``'s reviewed cells to ``out`` (created; must be empty)."""
    if not can(user, Action.EXPORT):
        raise PermissionDenied("Your role does not allow exports.")
    out = Path(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    cells = reviewed_cells(user, team)
    q = action_filter(user, Action.EXPORT, "draw__patient__")  # only patients whose team lets the user export
    cells = list((cells if q is None else cells.filter(q)).defer("explanation", "heatmap"))
    orders = Counter(tuple(c.upload.result_channels or c.upload.channels) for c in cells)
    channels = list(orders.most_common(1)[0][0]) if orders else []
    originals = {
        (f.upload_id, f.original_name): f
        for f in UploadedFile.objects.filter(upload_id__in={c.upload_id for c in cells})
    }
    summary = ExportSummary(channels=channels)
    rows = []
    for c in cells:
        order = list(c.upload.result_channels or c.upload.channels)
        if order != channels:
            summary.skipped_other_channels += 1
            continue
        original = originals.get((c.upload_id, c.source)) if list(c.upload.channels) == channels else None
        name = f"events/{c.pk}_{_safe(Path(c.source).stem)}.tif"
        if original is not None and original.file and Path(original.file.path).exists() \
                and original.original_name.lower().endswith((".tif", ".tiff")):
            shutil.copyfile(original.file.path, out / name)
            kind = "original"
            summary.originals += 1
        elif c.thumbnail:
            strip = decode_strip(bytes(c.thumbnail), len(order))
            (out / name).write_bytes(_tiff_bytes(np.ascontiguousarray(strip)))
            kind = "thumbnail"
            summary.thumbnails += 1
        else:
            summary.skipped_no_image += 1
            continue
        is_ctc = int(c.reviewed_call == "ctc")
        summary.ctc += is_ctc
        rows.append({"file": name, "is_ctc": is_ctc, "category": c.final_category, "image": kind,
                     "draw": c.draw_id, "reviewer": c.reviewed_by.username if c.reviewed_by else "",
                     "source": c.source})
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "is_ctc", "category", "image", "draw", "reviewer", "source"])
        writer.writeheader()
        writer.writerows(rows)
    summary.cells = len(rows)
    summary.draws = len({r["draw"] for r in rows})
    summary.reviewers = sorted({r["reviewer"] for r in rows if r["reviewer"]})
    (out / "README.txt").write_text(
        f"Reviewed cells exported for training: {summary.cells} ({summary.ctc} CTC) from {summary.draws} draws.\n"
        f"Channels: {','.join(channels)}\n"
        f"Read with: python -m classifier evaluate --data . --channels {','.join(channels)}\n")
    return summary


def training_set_zip(user, team: CareTeam | None = None) -> tuple[bytes, ExportSummary]:  # noqa: ANN001
    """The same folder as one zip (the dashboard's download)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        summary = write_training_set(user, Path(tmp), team)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
        return buf.getvalue(), summary
