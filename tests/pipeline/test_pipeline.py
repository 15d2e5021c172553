"""Upload -> real Celery worker process -> results in PostgreSQL.

The worker is a separate ``celery worker`` process consuming from the real Redis
(see ``tests/conftest.py``); the test only writes rows and files and waits.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile

from patients import pipeline
from patients.models import CellEvent, ClassifierVersion, DrawSummary, ImagingUpload, UploadedFile, UploadStatus
from patients.tasks import enqueue
from patients.uploads import UploadRequest, create_upload
from tests import factories
from tests.conftest import wait_for

CHANNELS = ["DAPI", "CK", "AF", "CD45"]


def event_tiffs(categories: list[str], seed: int = 0) -> list[SimpleUploadedFile]:
    from classifier.synth import make_event

    rng = np.random.default_rng(seed)
    files = []
    for i, category in enumerate(categories):
        image, _ = make_event(rng, category, px_um=0.65, size_px=96)
        buf = io.BytesIO()
        tifffile.imwrite(buf, image.astype(np.float32), photometric="minisblack", metadata={"axes": "CYX"})
        files.append(SimpleUploadedFile(f"cell{i:02d}.tif", buf.getvalue(), content_type="image/tiff"))
    return files


def zipped(files: list[SimpleUploadedFile], name: str = "gallery.zip") -> SimpleUploadedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.writestr(f.name, f.read())
    return SimpleUploadedFile(name, buf.getvalue(), content_type="application/zip")


def done(upload: ImagingUpload) -> ImagingUpload | None:
    upload.refresh_from_db()
    return upload if upload.status in (UploadStatus.DONE, UploadStatus.FAILED) else None


@pytest.mark.worker
def test_upload_is_classified_by_the_worker_and_results_stored(worker, alice, draw):
    categories = ["ctc", "ctc", "leukocyte", "leukocyte", "apoptotic_ctc", "ck_debris"]
    upload = create_upload(draw, UploadRequest(files=event_tiffs(categories), channels=CHANNELS), alice)
    wait_for(lambda: done(upload), timeout=180, what="the worker to finish")
    assert upload.status == UploadStatus.DONE, upload.error
    assert upload.progress == 100 and upload.model_version
    events = list(CellEvent.objects.filter(upload=upload).order_by("index"))
    assert [e.source for e in events] == [f"cell{i:02d}.tif" for i in range(len(categories))]
    # the call is made at the producing version's threshold (0.2 for the shipped weights), not 0.5
    threshold = ClassifierVersion.objects.get(version=upload.model_version).metadata["threshold"]
    for e in events:
        assert e.call in ("ctc", "non_ctc") and 0.0 <= e.ctc_probability <= 1.0
        assert (e.call == "ctc") == (e.ctc_probability >= threshold)
        assert e.thumbnail and e.heatmap
        assert set(e.explanation["branch_contributions"]) == {"spatial", "texture"}
    summary = DrawSummary.objects.get(draw=draw)
    assert summary.events_analysed == len(categories)
    assert summary.ctc_count == sum(e.call == "ctc" for e in events)
    assert ClassifierVersion.objects.filter(version=upload.model_version, is_active=True).exists()
    assert "model" in upload.timings and "database" in upload.timings


@pytest.mark.worker
def test_a_zip_gallery_and_a_rerun_replace_results_never_duplicate(worker, alice, draw):
    upload = create_upload(
        draw, UploadRequest(files=[zipped(event_tiffs(["ctc", "leukocyte", "artifact"], seed=3))], channels=CHANNELS),
        alice,
    )
    wait_for(lambda: done(upload), timeout=180, what="first run")
    assert upload.status == UploadStatus.DONE, upload.error
    first = list(CellEvent.objects.filter(upload=upload).values_list("source", "call", "ctc_probability"))
    assert len(first) == 3 and first[0][0].startswith("gallery.zip/")
    ImagingUpload.objects.filter(pk=upload.pk).update(status=UploadStatus.QUEUED)
    enqueue(upload.pk)
    wait_for(lambda: done(upload) and upload.attempts == 2, timeout=180, what="the re-run")
    again = list(CellEvent.objects.filter(upload=upload).values_list("source", "call", "ctc_probability"))
    assert again == first  # same model, same input: same calls, and one set of rows
    assert DrawSummary.objects.get(draw=draw).events_analysed == 3


@pytest.mark.worker
def test_a_file_the_worker_cannot_decode_fails_with_a_readable_message(worker, alice, draw):
    # Bypass the request-time header check, as a file corrupted on disk after upload would.
    upload = ImagingUpload.objects.create(draw=draw, channels=CHANNELS, created_by=alice)
    row = UploadedFile(upload=upload, original_name="broken.tif", size=10)
    row.file.save("broken.tif", SimpleUploadedFile("broken.tif", b"II*\x00garbage"), save=True)
    enqueue(upload.pk)
    wait_for(lambda: done(upload), timeout=120, what="the failure")
    assert upload.status == UploadStatus.FAILED
    assert "broken.tif" in upload.error
    assert not CellEvent.objects.filter(upload=upload).exists()
    # The worker survived: the next valid upload still succeeds.
    ok = create_upload(draw, UploadRequest(files=event_tiffs(["ctc"]), channels=CHANNELS), alice)
    wait_for(lambda: done(ok), timeout=120, what="the valid upload after the bad one")
    assert ok.status == UploadStatus.DONE, ok.error


@pytest.mark.django_db
def test_claim_is_atomic_a_second_delivery_does_nothing(draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, progress=0)
    assert pipeline.claim(upload.pk) == 1
    assert pipeline.claim(upload.pk) is None
    assert pipeline.run_upload(upload.pk) == "skipped"
    upload.refresh_from_db()
    assert (upload.status, upload.attempts) == (UploadStatus.RUNNING, 1)


@pytest.mark.django_db
def test_a_running_upload_without_heartbeat_can_be_reclaimed(draw, settings):
    from django.utils import timezone

    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED)
    assert pipeline.claim(upload.pk) == 1
    ImagingUpload.objects.filter(pk=upload.pk).update(
        heartbeat_at=timezone.now() - settings.UPLOAD_STALE_AFTER * 2
    )
    assert list(pipeline.stale_uploads().values_list("pk", flat=True)) == [upload.pk]
    assert pipeline.claim(upload.pk) == 2


@pytest.mark.django_db
def test_results_of_a_superseded_attempt_are_discarded(draw):
    from classifier.results import AnalysisResult

    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED)
    first = pipeline.claim(upload.pk)
    ImagingUpload.objects.filter(pk=upload.pk).update(attempts=first + 1)  # someone re-claimed it
    result = AnalysisResult(events=[], model_version="m", channels=CHANNELS)
    assert pipeline.store_results(upload, first, result) == "skipped"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.RUNNING


@pytest.mark.django_db
def test_progress_is_written_with_heartbeat_and_throttled(draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED)
    attempt = pipeline.claim(upload.pk)
    writer = pipeline.ProgressWriter(upload.pk, attempt, interval=60)
    writer(0.5, "model")
    upload.refresh_from_db()
    assert (upload.progress, upload.stage) == (50, "model")
    writer(0.6, "model")  # inside the interval: not written
    upload.refresh_from_db()
    assert upload.progress == 50
    writer(1.0, "explanation")  # the end is always written
    upload.refresh_from_db()
    assert upload.progress == 95


@pytest.mark.django_db
def test_upload_after_too_many_attempts_is_failed_not_retried_forever(draw):
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED, attempts=pipeline.MAX_ATTEMPTS)
    assert pipeline.run_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.FAILED and "attempts" in upload.error
