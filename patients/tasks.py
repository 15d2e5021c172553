"""Celery tasks of the patients app. State lives in the database, not in Celery."""

from __future__ import annotations

import contextlib
import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from patients import pipeline
from patients.models import ImagingUpload, Lane, UploadStatus

# The training queue's tasks (lab-model training, shadow analyses) register with the worker here.
from patients.training_tasks import enqueue_shadow, shadow_upload, train_lab_model  # noqa: F401

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    # Only infrastructure faults are retried (the database restarting); bad images fail at once.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=60,
    max_retries=5,
)
def process_upload(self, upload_id: int) -> str:  # noqa: ANN001 - celery bound task
    # The worker is recorded as the job's owner (with host, pid and the pid's start time) when it
    # is claimed; the claim's attempt comes back on ``run`` for the crash handler below.
    run = pipeline.Run(upload_id, worker=getattr(self.request, "hostname", None) or "")
    try:
        outcome = pipeline.run_upload(run)
        if outcome == "done":
            enqueue_shadow(upload_id)  # issue 13: candidates in shadow analyse it too (training queue)
        return outcome
    except (OperationalError, InterfaceError):
        close_old_connections()
        # Put it back so the retry can claim it: our attempt only (a newer one may be running
        # elsewhere after a reclaim); None when the claim itself failed.
        running = ImagingUpload.objects.filter(pk=upload_id, status=UploadStatus.RUNNING)
        if run.attempt is not None:
            running = running.filter(attempts=run.attempt)
        with contextlib.suppress(OperationalError, InterfaceError):
            running.update(status=UploadStatus.QUEUED)
        raise
    except Exception as err:
        logger.exception("upload %s crashed", upload_id)
        pipeline.fail(upload_id, run.attempt,
                      f"Internal error while analysing the images ({type(err).__name__}). "
                      "The lab's administrator has the details in the worker log.")
        return "failed"


def queue_for(lane: str) -> str:
    """The Celery queue of a lane: interactive -> the default queue, bulk -> CELERY_BULK_QUEUE
    (default "<default queue>-bulk", which every worker also consumes; config/celery_app.py)."""
    default = process_upload.app.conf.task_default_queue
    if lane == Lane.BULK:
        return getattr(settings, "CELERY_BULK_QUEUE", "") or f"{default}-bulk"
    return default


def enqueue(upload_id: int, lane: str = Lane.INTERACTIVE) -> bool:
    """Send the job to its lane's queue; if the broker is down, the worker's reclaim or the
    sweep retries. ``patients.uploads.create_upload`` calls it once the upload is committed."""
    try:
        process_upload.apply_async(args=[upload_id], retry=False, queue=queue_for(lane))
    except Exception:  # noqa: BLE001 - any broker failure: the upload stays queued for the sweep
        logger.warning("broker unavailable; upload %s stays queued for the sweep", upload_id, exc_info=True)
        return False
    return True


def reclaim_and_requeue() -> int:
    """Jobs whose owner is gone go back to their queue; queued jobs whose message was lost are
    sent again. What every worker runs at start and periodically (config/celery_app.py), and
    what beat's sweep runs where beat is kept; safe to run from many workers at once."""
    n = pipeline.reclaim(enqueue) + pipeline.requeue_stale(enqueue)
    if n:
        logger.info("re-queued %d upload(s) (owner gone or message lost)", n)
    return n


@shared_task
def requeue_stale_uploads() -> int:
    return reclaim_and_requeue()
