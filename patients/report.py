"""What the printable patient report needs beyond the patient page: sign-off and example cells.

A chart-ready report (issue 14, point 8) says who settled each count and when (the reviewer
sign-off: the last review of the draw's cells), and shows a few representative CTC images so
a reader of the paper chart sees what was counted. Machine-only counts are marked as such by
the template from the summary status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Q

from patients.models import CellEvent, UploadStatus
from patients.thumbnails import recorded_strip, strip_channels


@dataclass(frozen=True)
class SignOff:
    reviewer: str  # the last reviewer of the draw's cells
    at: dt.datetime  # when
    reviewers: int  # how many people reviewed its cells
    reviewed: int  # cells reviewed


def sign_offs(draw_ids: list[int]) -> dict[int, SignOff]:
    """The review sign-off of each draw with reviewed cells (one query over reviewed events only)."""
    rows = (
        CellEvent.objects.filter(draw_id__in=draw_ids, upload__status=UploadStatus.DONE)
        .exclude(reviewed_call="")
        .order_by("draw_id", "-reviewed_at", "-pk")
        .values_list("draw_id", "reviewed_by__username", "reviewed_by__first_name", "reviewed_by__last_name",
                     "reviewed_at")
    )
    out: dict[int, SignOff] = {}
    people: dict[int, set] = {}
    counts: dict[int, int] = {}
    for draw_id, username, first, last, at in rows:
        people.setdefault(draw_id, set()).add(username)
        counts[draw_id] = counts.get(draw_id, 0) + 1
        if draw_id not in out and at is not None:
            name = f"{first} {last}".strip() or username or "unknown"
            out[draw_id] = SignOff(name, at, 0, 0)
    return {d: SignOff(s.reviewer, s.at, len(people[d]), counts[d]) for d, s in out.items()}


@dataclass(frozen=True)
class CellImage:
    source: str
    probability: float
    reviewed: bool
    thumbnail: bytes  # the recorded channels' tiles only (patients.thumbnails)
    channels: str  # their names, ", " between them
    not_recorded: str = ""  # "AF not recorded" when the upload lacked a channel the model has a tile for


def representative_cells(draw_id: int, n: int = 3) -> list[CellImage]:
    """Up to ``n`` CTCs of the draw for the report: reviewed CTCs first, then the surest machine calls.
    Each image has the tiles of the channels its upload recorded (a 3-channel upload: no black AF tile)."""
    ctc = Q(reviewed_call="ctc") | Q(reviewed_call="", call="ctc")
    rows = (
        CellEvent.objects.filter(ctc, draw_id=draw_id, upload__status=UploadStatus.DONE)
        .exclude(thumbnail=b"")
        .order_by("-reviewed_call", "-ctc_probability", "pk")  # reviewed ("ctc") before machine calls ("")
        .values_list("source", "ctc_probability", "reviewed_call", "thumbnail", "upload__result_channels",
                     "upload__channels")[: n * 4]
    )
    found = sorted(rows, key=lambda r: (not r[2], -float(r[1])))[:n]
    cells = []
    for src, p, rc, thumb, result_channels, upload_channels in found:
        tiles = strip_channels(result_channels, upload_channels)
        cells.append(CellImage(src, float(p), bool(rc), recorded_strip(bytes(thumb), tiles),
                               ", ".join(tiles.recorded if result_channels else []), tiles.missing_text))
    return cells
