"""Running one upload through the classifier and storing what it found.

The worker calls :func:`run_upload`. It is safe to call twice for the same upload
(a re-delivered message, the stale sweep): the claim is one atomic UPDATE, and the
attempt number it sets is a fencing token checked again before results are written,
so a slow first attempt can never overwrite a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from classifier.errors import InputError
from classifier.results import AnalysisResult
from patients.imaging import encode_grey, encode_strip
from patients.models import CellEvent, ClassifierVersion, ImagingUpload, UploadStatus
from patients.summary import recompute_summary

logger = logging.getLogger(__name__)

#: After this many claims an upload is failed instead of retried (a poison input).
MAX_ATTEMPTS = 3

#: The attempt this thread is running, so the task's crash handler fails only that attempt
#: (a superseded attempt that crashes must not fail the newer one still running).
_current = threading.local()


def current_attempt() -> int | None:
    return getattr(_current, "attempt", None)


@lru_cache(maxsize=4)
def get_classifier(weights: str = ""):  # noqa: ANN201 - classifier.engine.Classifier
    """Load the model once per worker process (per weights file)."""
    from classifier.engine import Classifier

    device = settings.CLASSIFIER_DEVICE or None
    return Classifier.load(weights=weights or None, device=device)


def active_weights() -> str:
    active = ClassifierVersion.objects.filter(is_active=True, retired=False).first()
    if active is not None:
        return active.weights_path
    return settings.CLASSIFIER_WEIGHTS


def claim(upload_id: int) -> int | None:
    """Atomically take the upload; returns the attempt number, or None if not ours."""
    now = timezone.now()
    stale = now - settings.UPLOAD_STALE_AFTER
    claimable = Q(status=UploadStatus.QUEUED) | Q(status=UploadStatus.RUNNING, heartbeat_at__lt=stale)
    updated = ImagingUpload.objects.filter(claimable, pk=upload_id).update(
        status=UploadStatus.RUNNING,
        attempts=F("attempts") + 1,
        progress=0,
        stage="starting",
        error="",
        started_at=now,
        heartbeat_at=now,
    )
    if not updated:
        return None
    return ImagingUpload.objects.values_list("attempts", flat=True).get(pk=upload_id)


class ProgressWriter:
    """Writes progress and a heartbeat, at most every ``interval`` seconds."""

    def __init__(self, upload_id: int, attempt: int, interval: float = 0.5) -> None:
        self.upload_id, self.attempt, self.interval = upload_id, attempt, interval
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        # Progress 5..95 belongs to the classifier; storing takes the rest.
        pct = 5 + int(max(0.0, min(1.0, fraction)) * 90)
        ImagingUpload.objects.filter(pk=self.upload_id, attempts=self.attempt, status=UploadStatus.RUNNING).update(
            progress=pct, stage=stage[:40], heartbeat_at=timezone.now()
        )


def fail(upload_id: int, attempt: int | None, message: str) -> None:
    qs = ImagingUpload.objects.filter(pk=upload_id)
    if attempt is not None:
        qs = qs.filter(attempts=attempt)
    qs.update(status=UploadStatus.FAILED, error=message[:2000], finished_at=timezone.now(), stage="failed")


def run_upload(upload_id: int, progress_factory: Callable[[int, int], ProgressWriter] = ProgressWriter) -> str:
    """Process one upload; returns what happened ("done", "failed", "skipped")."""
    _current.attempt = None
    attempt = claim(upload_id)
    _current.attempt = attempt
    if attempt is None:
        logger.info("upload %s: not claimable (done, failed or running elsewhere)", upload_id)
        return "skipped"
    upload = ImagingUpload.objects.select_related("draw").get(pk=upload_id)
    if attempt > MAX_ATTEMPTS:
        fail(upload_id, attempt, f"Analysis stopped after {MAX_ATTEMPTS} attempts; the worker kept failing.")
        return "failed"
    files = list(upload.files.order_by("position"))
    paths = [Path(f.file.path) for f in files]
    weights = active_weights()
    try:
        clf = get_classifier(weights)
        t0 = time.perf_counter()
        result = clf.analyse_files(
            paths,
            upload.channels,
            kind=upload.kind,
            pixel_size_um=upload.pixel_size_um,
            names=[f.original_name for f in files],
            progress=progress_factory(upload_id, attempt),
        )
        analyse_s = time.perf_counter() - t0
    except InputError as err:
        logger.info("upload %s rejected: %s", upload_id, err)
        fail(upload_id, attempt, str(err))
        return "failed"
    except FileNotFoundError as err:
        # Only a missing *upload* file is the upload's fault; a missing weights file (or any
        # other) is the installation's, and goes to the task's crash handler instead of
        # telling the lab "A stored file is missing: None".
        if err.filename is None or Path(str(err.filename)) not in paths:
            raise
        fail(upload_id, attempt, f"A stored file is missing: {Path(str(err.filename)).name}.")
        return "failed"
    t1 = time.perf_counter()
    stored = store_results(upload, attempt, result, weights_path=weights)
    timings = {**result.timings, "analyse_total": round(analyse_s, 3), "database": round(time.perf_counter() - t1, 3)}
    ImagingUpload.objects.filter(pk=upload_id).update(timings=timings)
    logger.info("upload %s: %s, %d events, timings %s", upload_id, stored, len(result.events), timings)
    return stored


def store_results(upload: ImagingUpload, attempt: int, result: AnalysisResult, weights_path: str = "") -> str:
    """Replace the upload's events and summary and mark it done, in one transaction."""
    events = [
        CellEvent(
            upload=upload,
            draw_id=upload.draw_id,
            index=e.index,
            source=e.source[:300],
            x=float(e.x),
            y=float(e.y),
            call=e.call,
            ctc_probability=float(e.ctc_probability),
            margin=abs(float(e.ctc_probability) - 0.5),
            category=e.category,
            category_probabilities={k: round(float(v), 4) for k, v in e.category_probabilities.items()},
            explanation={
                "branch_contributions": {k: round(float(v), 4) for k, v in e.branch_contributions.items()},
                "top_attributes": [a.as_dict() for a in e.top_attributes],
                "embedding": [round(float(v), 4) for v in e.embedding],
            },
            thumbnail=encode_strip(e.thumbnail) if e.thumbnail is not None else b"",
            heatmap=encode_grey(e.heatmap) if e.heatmap is not None else b"",
        )
        for e in result.events
    ]
    with transaction.atomic():
        locked = ImagingUpload.objects.select_for_update().get(pk=upload.pk)
        if locked.attempts != attempt or locked.status != UploadStatus.RUNNING:
            logger.warning("upload %s: attempt %s superseded; results discarded", upload.pk, attempt)
            return "skipped"
        CellEvent.objects.filter(upload=upload).delete()
        CellEvent.objects.bulk_create(events, batch_size=500)
        version, _ = ClassifierVersion.objects.get_or_create(
            version=result.model_version,
            # Record the weights that produced the result: registering custom weights
            # (CLASSIFIER_WEIGHTS) as "" (= shipped) made the next upload switch weights.
            defaults={"metadata": _metadata_for_registry(), "sha256": _metadata_for_registry().get("sha256", ""),
                      "weights_path": weights_path},
        )
        if not ClassifierVersion.objects.filter(is_active=True).exists():
            ClassifierVersion.objects.filter(pk=version.pk).update(is_active=True)
        locked.status = UploadStatus.DONE
        locked.progress = 100
        locked.stage = "done"
        locked.model_version = result.model_version
        locked.device = result.device
        locked.result_channels = list(result.channels)
        locked.finished_at = timezone.now()
        locked.save()
        recompute_summary(upload.draw)
    return "done"


def _metadata_for_registry() -> dict:
    try:
        return dict(get_classifier(active_weights()).metadata)
    except Exception:  # noqa: BLE001 - registry metadata is informative only
        return {}


def stale_uploads():  # noqa: ANN201 - queryset
    """Uploads a worker should have finished or picked up by now."""
    cutoff = timezone.now() - settings.UPLOAD_STALE_AFTER
    return ImagingUpload.objects.filter(
        Q(status=UploadStatus.QUEUED, created_at__lt=cutoff, heartbeat_at__isnull=True)
        | Q(status=UploadStatus.QUEUED, heartbeat_at__lt=cutoff)
        | Q(status=UploadStatus.RUNNING, heartbeat_at__lt=cutoff)
    )


def requeue_stale(enqueue: Callable[[int], bool]) -> int:
    """Send stale uploads to the broker again; the claim makes duplicates harmless."""
    n = 0
    for pk in stale_uploads().values_list("pk", flat=True)[:500]:
        # Touch the heartbeat so the sweep does not resend every minute while it waits.
        ImagingUpload.objects.filter(pk=pk, status=UploadStatus.QUEUED).update(heartbeat_at=timezone.now())
        if enqueue(pk):
            n += 1
    return n



