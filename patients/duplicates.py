"""Refuse an upload that repeats files already uploaded to the draw, unless the user confirms.

A reviewer uploaded a draw's 18 files a second time from the dashboard: both uploads were
analysed and a Final draw's count went from 7 to 15. Identical files (same SHA-256) on the
same draw are now refused on every path (dashboard form, API) until the request says
``confirm_duplicates`` (dashboard) / ``allow_duplicates`` (API); withdrawn uploads do not count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from django.core.exceptions import ValidationError

from patients.models import BloodDraw, UploadedFile, UploadStatus

TRUE = ("1", "true", "on", "yes", "True")


def file_digest(f) -> str:  # noqa: ANN001 - a Django UploadedFile
    digest = hashlib.sha256()
    for chunk in f.chunks():
        digest.update(chunk)
    f.seek(0)
    return digest.hexdigest()


def duplicates(draw: BloodDraw, files: Sequence) -> list[tuple[str, str, int]]:
    """``(new name, earlier name, earlier upload id)`` for each file identical to one already on the draw."""
    digests = {file_digest(f): Path(f.name).name for f in files}
    rows = (UploadedFile.objects.filter(upload__draw=draw, sha256__in=list(digests))
            .exclude(upload__status=UploadStatus.WITHDRAWN)
            .values_list("sha256", "original_name", "upload_id").order_by("upload_id", "position"))
    seen: dict[str, tuple[str, int]] = {}
    for digest, name, upload_id in rows:
        seen.setdefault(digest, (name, upload_id))
    return [(digests[d], name, uid) for d, (name, uid) in seen.items()]


def refuse_duplicates(draw: BloodDraw, files: Sequence, confirmed: bool) -> None:
    """Raise ``ValidationError`` (code ``duplicate``) when files repeat earlier ones and the user
    has not confirmed; nothing is stored then."""
    if confirmed:
        return
    found = duplicates(draw, files)
    if not found:
        return
    names = ", ".join(f"{new!r} (= {old!r}, upload {uid})" for new, old, uid in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    raise ValidationError(
        f"{len(found)} of these {len(files)} file{'s' if len(files) != 1 else ''} were already uploaded to this draw: "
        f"{names}{more}. Uploading them again counts their cells twice. Confirm to upload anyway.",
        code="duplicate")
