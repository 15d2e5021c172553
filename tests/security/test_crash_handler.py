"""The task's crash handler fails only the attempt that crashed.

The attempt (the fencing token) reaches the handler on the ``pipeline.Run`` the task hands to
``run_upload``, not through thread-local state: the claim here is real, the crash is a
classifier that raises after the claim."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.db.models import F

from patients import pipeline
from patients.models import ImagingUpload, UploadStatus
from patients.tasks import process_upload
from tests import factories

pytestmark = pytest.mark.django_db

CRASH = "CUDA error: an illegal memory access was encountered"


def _crashing_classifier(superseded: bool):
    def get_classifier(weights: str = ""):
        if superseded:  # meanwhile the job was reclaimed and claimed again by another worker
            ImagingUpload.objects.filter(status=UploadStatus.RUNNING).update(attempts=F("attempts") + 1)
        raise RuntimeError(CRASH)

    return get_classifier


def test_a_superseded_attempt_that_crashes_does_not_fail_the_newer_one(monkeypatch, draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=1)
    monkeypatch.setattr(pipeline, "get_classifier", _crashing_classifier(superseded=True))
    assert process_upload.run(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.attempts == 3  # ours was 2; the newer attempt (3) keeps running
    assert upload.status == UploadStatus.RUNNING and upload.error == ""


def test_the_attempt_that_crashes_is_failed_with_a_message_for_people(monkeypatch, draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=1)
    monkeypatch.setattr(pipeline, "get_classifier", _crashing_classifier(superseded=False))
    assert process_upload.run(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.FAILED and upload.attempts == 2
    assert "Internal error" in upload.error and "RuntimeError" in upload.error and "CUDA" not in upload.error


def test_the_run_carries_its_worker_and_attempt(monkeypatch, draw):
    """What the thread-locals held (worker name, attempt) is on the run the caller passed."""
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=1)
    monkeypatch.setattr(pipeline, "get_classifier", _crashing_classifier(superseded=False))
    run = pipeline.Run(upload.pk, worker="celery@ward-7")
    with pytest.raises(RuntimeError):
        pipeline.run_upload(run)
    assert run.attempt == 2
    upload.refresh_from_db()
    assert upload.owner["worker"] == "celery@ward-7" and upload.attempts == 2
    assert not hasattr(pipeline, "_current") and not hasattr(pipeline, "_worker_name")


def _database_lost(superseded: bool):
    def get_classifier(weights: str = ""):
        if superseded:
            ImagingUpload.objects.filter(status=UploadStatus.RUNNING).update(attempts=F("attempts") + 1)
        raise OperationalError("server closed the connection unexpectedly")

    return get_classifier


@pytest.mark.django_db(transaction=True)  # the handler closes the connection (close_old_connections)
@pytest.mark.parametrize("superseded", [False, True])
def test_a_database_fault_puts_back_only_its_own_attempt(monkeypatch, draw, superseded):
    """The retry path re-queues the upload for its own attempt; a newer attempt running elsewhere
    (after a reclaim) is left running (it was reset to queued, and its results then discarded)."""
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=1)
    monkeypatch.setattr(pipeline, "get_classifier", _database_lost(superseded))
    with pytest.raises(OperationalError):
        process_upload.run(upload.pk)
    upload.refresh_from_db()
    if superseded:
        assert (upload.status, upload.attempts) == (UploadStatus.RUNNING, 3)
    else:
        assert (upload.status, upload.attempts) == (UploadStatus.QUEUED, 2)


def test_active_weights_that_cannot_be_loaded_fail_the_upload_saying_so(monkeypatch, draw):
    """A promoted file that is not a weights bundle (or made for other preprocessing): the upload is
    failed with what to do, not an anonymous internal error."""
    from classifier.errors import ContractError

    def get_classifier(weights: str = ""):
        raise ContractError("lab-v3.pt: not a weights bundle (not a file torch.save wrote)")

    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=1)
    monkeypatch.setattr(pipeline, "get_classifier", get_classifier)
    assert process_upload.run(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.FAILED
    assert "cannot be loaded" in upload.error and "not a weights bundle" in upload.error
    assert "promote a working version" in upload.error
