"""The model registry follows the weights' metadata; a withdrawn upload keeps no results."""

from __future__ import annotations

import pytest

from patients import pipeline
from patients.models import CellEvent, ClassifierVersion, ImagingUpload, UploadStatus
from tests.pipeline.test_store import _claimed, _result

pytestmark = pytest.mark.django_db


def test_registration_refreshes_metadata_of_the_same_version(draw, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = {"sha256": "abc", "metrics": {"auc": 0.9}}
    monkeypatch.setattr(pipeline, "_metadata_for_registry", lambda weights_path: dict(meta))
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


def test_results_are_registered_with_the_weights_that_produced_them(draw, tmp_path) -> None:
    """Issue 12.2: another version promoted while a job runs must not lend the job its metadata."""
    import json
    import shutil

    from classifier.weights import DEFAULT_WEIGHTS

    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    other = tmp_path / "promoted.pt"
    shutil.copy(DEFAULT_WEIGHTS, other)
    other.with_suffix(".json").write_text(json.dumps({**shipped, "note": "promoted mid-run"}))
    ClassifierVersion.objects.create(version="promoted", weights_path=str(other), is_active=True)
    upload, attempt = _claimed(draw)
    result = _result(2)
    result.model_version = shipped["version"]
    assert pipeline.store_results(upload, attempt, result, weights_path="") == "done"
    ran = ClassifierVersion.objects.get(version=shipped["version"])
    assert ran.metadata.get("version") == shipped["version"] and "note" not in ran.metadata
    assert ImagingUpload.objects.get(pk=upload.pk).model_version == shipped["version"]


def test_a_withdrawn_running_upload_keeps_no_results(draw, alice) -> None:
    from patients.uploads import withdraw_upload

    upload, attempt = _claimed(draw)
    withdraw_upload(upload, alice, "wrong channel order")
    assert pipeline.store_results(upload, attempt, _result(4)) == "skipped"
    assert not CellEvent.objects.filter(upload=upload).exists()
    pipeline.fail(upload.pk, attempt, "late crash")
    assert ImagingUpload.objects.get(pk=upload.pk).status == UploadStatus.WITHDRAWN
