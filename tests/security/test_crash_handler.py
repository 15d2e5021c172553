"""The task's crash handler fails only the attempt that crashed."""

from __future__ import annotations

import pytest

from patients import pipeline
from patients.models import UploadStatus
from patients.tasks import process_upload
from tests import factories

pytestmark = pytest.mark.django_db


def _crash_as(attempt: int):
    def run_upload(upload_id: int) -> str:
        pipeline._current.attempt = attempt
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    return run_upload


def test_a_superseded_attempt_that_crashes_does_not_fail_the_newer_one(monkeypatch, draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.RUNNING, attempts=2, progress=40)
    monkeypatch.setattr(pipeline, "run_upload", _crash_as(1))
    assert process_upload.run(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.RUNNING and upload.error == ""


def test_the_attempt_that_crashes_is_failed_with_a_message_for_people(monkeypatch, draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.RUNNING, attempts=2, progress=40)
    monkeypatch.setattr(pipeline, "run_upload", _crash_as(2))
    process_upload.run(upload.pk)
    upload.refresh_from_db()
    assert upload.status == UploadStatus.FAILED
    assert "Internal error" in upload.error and "RuntimeError" in upload.error and "CUDA" not in upload.error
