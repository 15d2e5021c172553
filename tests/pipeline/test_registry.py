"""The model registry follows the weights' metadata; a withdrawn upload keeps no results."""

from __future__ import annotations

import pytest

from patients import pipeline
from patients.models import CellEvent, ClassifierVersion, ImagingUpload, UploadStatus
from tests.pipeline.test_store import _claimed, _result

pytestmark = pytest.mark.django_db


def test_registration_refreshes_metadata_of_the_same_version(draw, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = {"sha256": "abc", "metrics": {"auc": 0.9}}
    monkeypatch.setattr(pipeline, "_metadata_for_registry", lambda: dict(meta))
    upload, attempt = _claimed(draw)
    assert pipeline.store_results(upload, attempt, _result(3)) == "done"
    assert ClassifierVersion.objects.get(version="test-model").metadata == meta
    # The weights JSON gains ROC points; the .pt (so the version and its sha256) is unchanged.
    meta = {"sha256": "abc", "metrics": {"auc": 0.9}, "roc": {"fpr": [0, 1], "tpr": [0, 1]}}
    upload, attempt = _claimed(draw)
    assert pipeline.store_results(upload, attempt, _result(3)) == "done"
    version = ClassifierVersion.objects.get(version="test-model")
    assert version.metadata["roc"] == {"fpr": [0, 1], "tpr": [0, 1]} and version.sha256 == "abc"
    assert ClassifierVersion.objects.count() == 1


def test_a_withdrawn_running_upload_keeps_no_results(draw, alice) -> None:
    from patients.uploads import withdraw_upload

    upload, attempt = _claimed(draw)
    withdraw_upload(upload, alice, "wrong channel order")
    assert pipeline.store_results(upload, attempt, _result(4)) == "skipped"
    assert not CellEvent.objects.filter(upload=upload).exists()
    pipeline.fail(upload.pk, attempt, "late crash")
    assert ImagingUpload.objects.get(pk=upload.pk).status == UploadStatus.WITHDRAWN
