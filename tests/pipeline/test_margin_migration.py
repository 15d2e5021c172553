"""Migration 0005: stored uncertainty margins are measured from the version's threshold."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from patients.models import CellEvent, ClassifierVersion
from tests.factories import CellEventFactory, ImagingUploadFactory

pytestmark = pytest.mark.django_db

migration = importlib.import_module("patients.migrations.0005_margin_from_threshold")


def test_old_margins_are_recomputed_from_each_versions_threshold():
    ClassifierVersion.objects.create(version="v-screening", metadata={"threshold": 0.163})
    ClassifierVersion.objects.create(version="v-no-threshold", metadata={})
    screening = ImagingUploadFactory(model_version="v-screening")
    other = ImagingUploadFactory(model_version="v-no-threshold")
    # Margins as they were stored before: |p - 0.5|.
    near_threshold = CellEventFactory(upload=screening, ctc_probability=0.17)
    confident_ctc = CellEventFactory(upload=screening, ctc_probability=0.9)
    untouched = CellEventFactory(upload=other, ctc_probability=0.17)
    assert near_threshold.margin == pytest.approx(0.33)

    migration.recompute(apps, None)

    margins = dict(CellEvent.objects.values_list("pk", "margin"))
    assert margins[near_threshold.pk] == pytest.approx(0.007)
    assert margins[confident_ctc.pk] == pytest.approx(0.737)
    assert margins[untouched.pk] == pytest.approx(0.33)  # no threshold recorded: left as it was
    # The cell next to the call boundary now sorts first, as "most uncertain first" promises.
    first = CellEvent.objects.filter(upload__in=[screening]).order_by("margin").first()
    assert first.pk == near_threshold.pk

    migration.restore(apps, None)
    assert CellEvent.objects.get(pk=near_threshold.pk).margin == pytest.approx(0.33)
