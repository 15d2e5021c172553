"""The lab-model training task (issue 13, point 4), on its own Celery queue.

``training`` (``CELERY_TRAINING_QUEUE``) is separate from the classification queues so an upload
is never stuck behind a training; a worker serves it with ``-Q training`` (one process is enough).
"""

from __future__ import annotations

import os

from celery import shared_task

#: The queue training jobs go to; a deployment runs one worker with ``-Q training``.
TRAINING_QUEUE = os.environ.get("CELERY_TRAINING_QUEUE", "training")


@shared_task(name="patients.train_lab_model", acks_late=True)
def train_lab_model(job_id: int) -> str:
    from patients.labmodel import run_training
    from patients.models import LabTraining

    job = LabTraining.objects.select_related("team", "requested_by").filter(pk=job_id).first()
    if job is None or job.status != LabTraining.Status.QUEUED:
        return "skipped"
    return run_training(job).status


@shared_task(name="patients.shadow_upload", acks_late=True)
def shadow_upload(upload_id: int, version_id: int) -> int:
    """A shadow version's analysis of a finished upload (patients/shadow.py)."""
    from patients.shadow import run_shadow

    return run_shadow(upload_id, version_id)


def start_training(team, user, queue: bool = True):  # noqa: ANN001, ANN201 - CareTeam, User -> LabTraining
    """Create the job (audited) and, unless ``queue`` is false (run in-process), queue it on the
    training queue once the row is committed."""
    from django.db import transaction

    from patients.audit import record
    from patients.models import AuditEvent, LabTraining

    job = LabTraining.objects.create(team=team, requested_by=user,
                                     status=LabTraining.Status.QUEUED if queue else LabTraining.Status.RUNNING)
    record(None, AuditEvent.Action.CREATE, job, user=user, detail={"team": team.name})
    if queue:
        transaction.on_commit(lambda: train_lab_model.apply_async(args=[job.pk], queue=TRAINING_QUEUE))
    return job
