"""Uncertainty margins of stored cell events measured from the model's call threshold.

Until 0004 a cell's ``margin`` was ``|p - 0.5|``; the call is ``p >= threshold`` (0.163 for
the shipped weights), so "most uncertain first" ranked cells by distance from a boundary the
model does not use. New results store ``|p - threshold|``; this recomputes the old ones with
the threshold in their model version's metadata (versions without one keep 0.5).
"""

from django.db import migrations
from django.db.models import F
from django.db.models.functions import Abs


def recompute(apps, schema_editor):
    ClassifierVersion = apps.get_model("patients", "ClassifierVersion")
    CellEvent = apps.get_model("patients", "CellEvent")
    for version, metadata in ClassifierVersion.objects.values_list("version", "metadata"):
        threshold = (metadata or {}).get("threshold")
        if not isinstance(threshold, int | float) or threshold == 0.5:
            continue
        # One UPDATE per model version: cheap even on millions of events.
        CellEvent.objects.filter(upload__model_version=version).update(
            margin=Abs(F("ctc_probability") - float(threshold)))


def restore(apps, schema_editor):
    CellEvent = apps.get_model("patients", "CellEvent")
    CellEvent.objects.update(margin=Abs(F("ctc_probability") - 0.5))


class Migration(migrations.Migration):
    dependencies = [("patients", "0004_withdraw_upload_login_audit")]

    operations = [migrations.RunPython(recompute, restore)]
