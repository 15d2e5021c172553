"""A lab training reads the active version's threshold through the registry (issue 12 leftovers, point 2).

``patients.registry.threshold`` owns what a version's metadata says of its operating point: none
recorded is none. The training read ``float(meta.get("threshold", 0.5))`` before, so weights without
a threshold were compared (and fine-tuned) at 0.5 without a word; now the training stops with a
reason the admin can read, before any image is prepared, and registers nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from patients import registry
from patients.models import ClassifierVersion, LabTraining

# The fixtures: three reviewed draws of the team and its admin; a short training (the old code trained on).
from tests.dashboard.test_review_labmodel import lab, small_training  # noqa: F401

pytestmark = pytest.mark.django_db

SHIPPED = Path(__file__).resolve().parents[2] / "classifier" / "weights" / "ctc-dual.pt"


def _active_weights(tmp_path: Path, metadata: dict) -> ClassifierVersion:
    path = tmp_path / "no-threshold.pt"
    shutil.copyfile(SHIPPED, path)
    path.with_suffix(".json").write_text(json.dumps(metadata))
    ClassifierVersion.objects.update(is_active=False)
    return ClassifierVersion.objects.create(version=metadata["version"], weights_path=str(path), is_active=True,
                                            metadata=metadata)


@pytest.mark.parametrize("stored", [None, "0.2"], ids=["missing", "not-a-number"])
def test_weights_without_a_threshold_fail_the_training_with_a_reason_instead_of_using_0_5(
        lab, team, tmp_path, small_training, stored):  # noqa: F811
    from patients.labmodel import run_training

    shipped = json.loads(SHIPPED.with_suffix(".json").read_text())
    meta = {k: v for k, v in shipped.items() if k not in ("threshold", "sha256")}
    meta["version"] = "1.0.0+nothreshold"
    if stored is not None:
        meta["threshold"] = stored
    assert registry.threshold(meta) is None  # the registry's reading, which the training now shares
    _active_weights(tmp_path, meta)
    job = run_training(LabTraining.objects.create(team=team, requested_by=lab))
    assert job.status == "failed", job.error
    assert "1.0.0+nothreshold records no call threshold" in job.error
    assert not ClassifierVersion.objects.filter(metadata__candidate=True).exists()
