"""The training-queue tasks: lab-model training (issue 13, point 4) and shadow analyses (point 5).

``training`` (``CELERY_TRAINING_QUEUE``) is separate from the classification queues so an upload
is never stuck behind a training; a worker serves it with ``-Q training`` (one process is enough).
What queues a task lives beside it (:func:`start_training`, :func:`enqueue_shadow`).
"""

from __future__ import annotations

import logging
import os

from celery import shared_task
from django.db import transaction

from patients.audit import record
from patients.labmodel import run_training
from patients.models import AuditEvent, LabTraining
from patients.shadow import run_shadow, shadow_versions

logger = logging.getLogger(__name__)

#: The queue training jobs go to; a deployment runs one worker with ``-Q training``.
TRAINING_QUEUE = os.environ.get("CELERY_TRAINING_QUEUE", "training")


@shared_task(name="patients.train_lab_model", acks_late=True)
def train_lab_model(job_id: int) -> str:
    job = LabTraining.objects.select_related("team", "requested_by").filter(pk=job_id).first()
    if job is None or job.status != LabTraining.Status.QUEUED:
        return "skipped"
    return run_training(job).status


@shared_task(name="patients.shadow_upload", acks_late=True)
def shadow_upload(upload_id: int, version_id: int) -> int:
    """A shadow version's analysis of a finished upload (patients/shadow.py)."""
    return run_shadow(upload_id, version_id)


def enqueue_shadow(upload_id: int) -> int:
    """Queue the shadow analysis of a finished upload, one job per shadow version; returns how many."""

    def send(pk: int) -> None:
        try:
            shadow_upload.apply_async(args=[upload_id, pk], queue=TRAINING_QUEUE)
        except Exception:  # noqa: BLE001 - a broker hiccup must never fail the upload itself
            logger.exception("upload %s: shadow job for version %s not queued", upload_id, pk)

    versions = list(shadow_versions().values_list("pk", flat=True))
    for pk in versions:
        transaction.on_commit(lambda pk=pk: send(pk))
    return len(versions)


def start_training(team, user, queue: bool = True):  # noqa: ANN001, ANN201 - CareTeam, User -> LabTraining
    """Create the job (audited) and, unless ``queue`` is false (run in-process), queue it on the
    training queue once the row is committed."""
    job = LabTraining.objects.create(team=team, requested_by=user,
                                     status=LabTraining.Status.QUEUED if queue else LabTraining.Status.RUNNING)
    record(None, AuditEvent.Action.CREATE, job, user=user, detail={"team": team.name})
    if queue:
        transaction.on_commit(lambda: train_lab_model.apply_async(args=[job.pk], queue=TRAINING_QUEUE))
    return job
