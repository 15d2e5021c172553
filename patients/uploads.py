"""Accepting an imaging upload: validate, store, queue once the row is committed.

Shared by the upload form and the API so both give the same errors. Deep checks
(decoding every pixel) happen in the worker; here we check what is cheap: counts,
sizes, names, channel names and each file's header.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile as DjangoUploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from classifier.errors import InputError
from classifier.limits import DEFAULT_LIMITS, Limits
from patients.audit import record
from patients.cartridge import check_stack, stack_layout
from patients.models import (
    AuditEvent,
    BloodDraw,
    DrawSummary,
    ImagingUpload,
    Lane,
    SummaryStatus,
    UploadedFile,
    UploadStatus,
)
from patients.roles import Action, can_on
from patients.storage import incoming_paths, local_path
from patients.summary import recompute_summary
from patients.tasks import enqueue

logger = logging.getLogger(__name__)

ALLOWED_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zip")
REQUIRED_CHANNELS = ("DAPI", "CK", "CD45")
_CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_/+\-. ]{0,31}$")


@dataclass(frozen=True)
class UploadRequest:
    files: Sequence[DjangoUploadedFile]
    channels: Sequence[str]
    kind: str = ImagingUpload.Kind.EVENTS
    pixel_size_um: float | None = None
    #: Lane.BULK for work nobody waits on (demo seeding, imports, re-runs): it queues behind
    #: the clinic's interactive uploads (dashboard, API), which keep the default.
    lane: str = "interactive"


def parse_channels(raw: str | Iterable[str]) -> list[str]:
    """'DAPI, CK,CD45' -> ['DAPI', 'CK', 'CD45'], with a clear error for bad names."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names = [str(c).strip() for c in items if str(c).strip()]
    if not names:
        raise ValidationError("Give the channel names in file order, e.g. DAPI,CK,CD45.", code="channels")
    bad = [n for n in names if not _CHANNEL_RE.match(n)]
    if bad:
        raise ValidationError(f"Invalid channel name(s): {', '.join(map(repr, bad))}.", code="channels")
    upper = [n.upper() for n in names]
    if len(set(upper)) != len(upper):
        raise ValidationError("A channel name is given twice.", code="channels")
    return names


def check_request(req: UploadRequest) -> None:
    """Cheap checks before anything is written."""
    if req.kind not in ImagingUpload.Kind.values:
        raise ValidationError(f"Unknown kind {req.kind!r}: use 'events' or 'field'.", code="kind")
    if not req.files:
        raise ValidationError("No file was uploaded.", code="files")
    if len(req.files) > settings.UPLOAD_MAX_FILES:
        raise ValidationError(f"Too many files: {len(req.files)} (at most {settings.UPLOAD_MAX_FILES}).", code="files")
    total = 0
    for f in req.files:
        name = f.name or ""
        if not name.lower().endswith(ALLOWED_SUFFIXES):
            raise ValidationError(
                f"{name!r}: unsupported file type; upload TIFF, PNG, JPEG or a zip of them.", code="file_type"
            )
        if f.size == 0:
            raise ValidationError(f"{name!r} is empty (0 bytes).", code="empty")
        total += f.size or 0
    if total > settings.UPLOAD_MAX_BYTES:
        raise ValidationError(
            f"The upload is {_size(total)}; the limit is {_size(settings.UPLOAD_MAX_BYTES)}.", code="too_large"
        )
    if req.pixel_size_um is not None and not (0.01 <= req.pixel_size_um <= 50):
        raise ValidationError("Pixel size must be between 0.01 and 50 µm.", code="pixel_size")


def _size(n: int) -> str:
    """1536 -> '1.5 kB' (a limit under 1 MB read "0 MB" before)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def _safe_name(name: str, used: set[str]) -> str:
    base = get_valid_filename(Path(name).name) or "image"
    candidate, n = base, 1
    while candidate in used:
        stem, dot, ext = base.partition(".")
        candidate = f"{stem}-{n}{dot}{ext}"
        n += 1
    used.add(candidate)
    return candidate


def _limits() -> Limits:
    """The classifier's input limits, with the per-file and per-upload byte caps raised to
    ``UPLOAD_MAX_BYTES`` where a lab raised it above them: a whole cartridge (175 fields, ~0.7-2 GB
    as one zip) is analysed field by field in the worker (patients/cartridge.py), so only the
    upload's size, not one decode of it all, needs the room."""
    cap = int(settings.UPLOAD_MAX_BYTES)
    return replace(DEFAULT_LIMITS, max_file_bytes=max(DEFAULT_LIMITS.max_file_bytes, cap),
                   max_total_bytes=max(DEFAULT_LIMITS.max_total_bytes, cap))


def _header_check(paths: list[Path], names: list[str], channels: list[str], kind: str = "events") -> None:
    """Ask the classifier to read each file's header; its message goes to the user. A field
    upload may also be one multi-page TIFF of whole fields (a cartridge stack): its header is
    checked here and each field by the classifier in the worker, one at a time."""
    # Not at module level: the decoders (tifffile, PIL; ~0.1 s) load on the first upload, not
    # in every web process that imports this module for its forms.
    from classifier.io import check_channels, validate_upload

    try:
        rest = list(zip(paths, names, strict=True))
        if kind == ImagingUpload.Kind.FIELD:
            stacks = [(p, n, stack_layout(p, len(channels)) if n.lower().endswith((".tif", ".tiff")) else None)
                      for p, n in rest]
            for p, n, stack in stacks:
                if stack is not None:
                    check_stack(p, n, stack, _limits())
            rest = [(p, n) for p, n, stack in stacks if stack is None]
        if rest:
            validate_upload([p for p, _ in rest], channels, names=[n for _, n in rest], limits=_limits())
        else:  # only stacks: the channel names are still checked
            check_channels(channels)
    except InputError as err:
        raise ValidationError(str(err), code="invalid_image") from err


FINAL_WARNING = "This draw is final; adding imaging makes it preliminary again until the new cells are reviewed."


def draw_is_final(draw: BloodDraw) -> bool:
    """The draw's result is complete (final or amended): a new upload reopens it."""
    return DrawSummary.objects.filter(draw=draw, status__in=[SummaryStatus.FINAL, SummaryStatus.AMENDED]).exists()


def _duplicate_warnings(upload: ImagingUpload, stored: list[UploadedFile]) -> list[str]:
    """Files identical (sha256) to one already uploaded to the same draw (withdrawn uploads aside)."""
    digests = {r.sha256: r.original_name for r in stored if r.sha256}
    earlier = (
        UploadedFile.objects.filter(upload__draw_id=upload.draw_id, sha256__in=list(digests))
        .exclude(upload=upload).exclude(upload__status=UploadStatus.WITHDRAWN)
        .values_list("sha256", "original_name", "upload_id").order_by("upload_id", "position")
    )
    seen: dict[str, tuple[str, int]] = {}
    for digest, name, upload_id in earlier:
        seen.setdefault(digest, (name, upload_id))
    return [f"{digests[d]!r} is identical to {name!r}, already uploaded to this draw (upload {uid})."
            for d, (name, uid) in seen.items()]


def _refuse_repeat_in_request(name: str, sha256: str, stored: list[UploadedFile]) -> None:
    """One request holds each file once, under a name of its own. A file sent twice would have its
    cells counted twice; two files of one name (a browser flattens two folders' ``event1_DAPI.tif``)
    cannot be told apart when channel files are grouped by name, and would be mixed."""
    base = Path(name).name
    for row in stored:
        if row.sha256 == sha256:
            raise ValidationError(f"{base!r} is sent twice in this upload (identical to {row.original_name!r}): "
                                  "its cells would be counted twice. Leave one out.", code="duplicate_in_request")
        if row.original_name == base[:255]:
            raise ValidationError(f"Two files in this upload are both called {base!r}: files from several folders "
                                  "cannot be told apart by name. Zip each folder (the zip keeps the folders) or "
                                  "upload them separately.", code="same_name")


def create_upload(draw: BloodDraw, req: UploadRequest, user=None) -> ImagingUpload:
    """Validate and store ``req`` for ``draw``; the worker is queued after commit.

    Raises ``ValidationError`` (nothing stored) when the request is not acceptable. The
    returned upload carries ``warnings`` (a list of sentences): the draw was final, or a file
    is identical to one already uploaded to the draw. They do not stop the upload.
    """
    was_final = draw_is_final(draw)
    check_request(req)
    channels = parse_channels(req.channels)
    with transaction.atomic():
        upload = ImagingUpload.objects.create(
            draw=draw, kind=req.kind, channels=channels, pixel_size_um=req.pixel_size_um, created_by=user,
            lane=Lane.BULK if req.lane == Lane.BULK else Lane.INTERACTIVE,
        )
        used: set[str] = set()
        stored: list[UploadedFile] = []
        try:
            for position, f in enumerate(req.files):
                digest = hashlib.sha256()
                for chunk in f.chunks():
                    digest.update(chunk)
                f.seek(0)
                _refuse_repeat_in_request(f.name, digest.hexdigest(), stored)
                row = UploadedFile(
                    upload=upload, original_name=Path(f.name).name[:255], size=f.size, sha256=digest.hexdigest(),
                    position=position,
                )
                row.file.save(_safe_name(f.name, used), f, save=False)
                stored.append(row)  # before row.save(): if that fails, the file on disk must still go
                row.save()
            if all(local_path(r.file) is not None for r in stored):
                _header_check([Path(r.file.path) for r in stored], [r.original_name for r in stored], channels,
                              req.kind)
            else:  # in a bucket: check the request's own copies rather than read the objects back
                with incoming_paths(req.files) as paths:
                    _header_check(paths, [r.original_name for r in stored], channels, req.kind)
        except BaseException:
            # The rows roll back with the transaction; the files on disk must go too.
            for row in stored:
                row.file.delete(save=False)
            raise
        upload.warnings = ([FINAL_WARNING] if was_final else []) + _duplicate_warnings(upload, stored)
        transaction.on_commit(lambda: enqueue(upload.pk, upload.lane))
    logger.info("upload %s stored for draw %s: %d file(s)", upload.pk, draw.pk, len(stored))
    return upload


def withdraw_upload(upload: ImagingUpload, user, reason: str, request=None) -> ImagingUpload:  # noqa: ANN001
    """Take back a mistaken upload: its events leave the draw's count; files and rows stay.

    Who may upload for the draw may withdraw (``Action.UPLOAD``); a reason is required. The
    change is in the upload's history and in an ``AuditEvent`` (``withdraw``). A worker still
    analysing it discards its results (it only stores for a running upload), and the stale
    sweep never re-queues it.
    """
    if not can_on(user, Action.UPLOAD, upload):  # the role in this patient's care team (patients.roles)
        raise PermissionDenied("Your role does not allow uploads, nor withdrawing them.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Give a reason for withdrawing the upload.", code="reason_required")
    with transaction.atomic():
        locked = ImagingUpload.objects.select_for_update().select_related("draw").get(pk=upload.pk)
        if locked.status == UploadStatus.WITHDRAWN:
            raise ValidationError(f"Upload {locked.pk} is already withdrawn.", code="already_withdrawn")
        previous = locked.status
        n_events = locked.events.count()
        locked.status = UploadStatus.WITHDRAWN
        locked.withdrawn_at = timezone.now()
        locked.withdrawn_by = user
        locked.withdraw_reason = reason[:2000]
        locked.stage = "withdrawn"
        locked._change_reason = f"withdrawn: {reason[:80]}"
        locked._history_user = user
        locked.save(update_fields=["status", "withdrawn_at", "withdrawn_by", "withdraw_reason", "stage"])
        record(request, AuditEvent.Action.WITHDRAW, locked, user=user, patient_id=locked.draw.patient_id,
               detail={"reason": reason[:2000], "previous_status": previous, "events": n_events,
                       "draw": locked.draw_id})
        if previous == UploadStatus.DONE or DrawSummary.objects.filter(draw=locked.draw).exists():
            recompute_summary(locked.draw)
    logger.info("upload %s withdrawn by %s", locked.pk, getattr(user, "pk", None))
    return locked

