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
    thumbnail: bytes
    channels: str


def representative_cells(draw_id: int, n: int = 3) -> list[CellImage]:
    """Up to ``n`` CTCs of the draw for the report: reviewed CTCs first, then the surest machine calls."""
    ctc = Q(reviewed_call="ctc") | Q(reviewed_call="", call="ctc")
    rows = (
        CellEvent.objects.filter(ctc, draw_id=draw_id, upload__status=UploadStatus.DONE)
        .exclude(thumbnail=b"")
        .order_by("-reviewed_call", "-ctc_probability", "pk")  # reviewed ("ctc") before machine calls ("")
        .values_list("source", "ctc_probability", "reviewed_call", "thumbnail", "upload__result_channels")[: n * 4]
    )
    cells = [CellImage(src, float(p), bool(rc), bytes(thumb), ", ".join(chans or []))
             for src, p, rc, thumb, chans in rows]
    cells.sort(key=lambda c: (not c.reviewed, -c.probability))
    return cells[:n]
