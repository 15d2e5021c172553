"""Re-running a draw with another classifier version (issue 13, point 5); administrators only.

A re-run **adds** a result set beside the draw's counted one, the way shadow results are stored
(``patients/shadow.py``): the chosen version analyses every finished upload of the draw again,
from the stored files, and its call on each cell is kept as a ``ShadowCall`` stamped with that
version. It never replaces the counted result:

- the draw's count, status and reviews stay those of the version that produced its ``CellEvent``
  rows (one version per result set; a re-run that replaced the events would throw the reviews
  away and, while part of the draw's uploads were done, count cells of two versions);
- every result keeps the version that produced it (``CellEvent`` rows: ``ImagingUpload.model_version``;
  re-run rows: ``ShadowCall.version``); re-running with the same version again replaces that
  version's rows for the upload, never duplicates them.

The jobs go to the **bulk** lane (issue 15: re-runs are bulk work, behind the clinic's uploads),
and the request is audited through ``patients.audit.record`` (who, which version, which uploads,
which version the count comes from). :func:`rerun_results` says, per version, how far a re-run
got and how its calls compare with the counted ones; the draw page and the API show it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet

from patients.audit import record
from patients.models import AuditEvent, BloodDraw, CellEvent, ClassifierVersion, Lane, ShadowCall, UploadStatus
from patients.roles import Action, can
from patients.shadow import agreement
from patients.tasks import queue_for
from patients.training_tasks import shadow_upload

logger = logging.getLogger(__name__)


def counted_versions(draw: BloodDraw) -> list[str]:
    """The version(s) that produced the draw's counted cells (its finished uploads)."""
    return sorted(set(draw.uploads.filter(status=UploadStatus.DONE).exclude(model_version="")
                      .values_list("model_version", flat=True)))


def _send(upload_id: int, version_id: int, queue: str) -> None:
    try:
        shadow_upload.apply_async(args=[upload_id, version_id], queue=queue, retry=False)
    except Exception:  # noqa: BLE001 - a broker failure must not fail the request; the log says which job
        logger.exception("re-run of upload %s with version %s not queued", upload_id, version_id)


def rerun_draw(draw: BloodDraw, version: ClassifierVersion, user, request=None) -> list[int]:  # noqa: ANN001
    """Queue the analysis of ``draw``'s finished uploads by ``version`` on the bulk lane; audited.

    Returns the upload ids queued. Raises ``PermissionDenied`` unless ``user`` manages models
    (administrators), and ``ValidationError`` (nothing queued, nothing audited) when the draw has
    no finished upload, its count already comes from ``version`` alone, or the version's weights
    file is missing.
    """
    if not can(user, Action.MANAGE_MODELS):
        raise PermissionDenied("Only administrators may re-run a draw with another version.")
    uploads = list(draw.uploads.filter(status=UploadStatus.DONE).order_by("pk").values_list("pk", flat=True))
    if not uploads:
        raise ValidationError("This draw has no analysed upload to re-run.", code="nothing_to_rerun")
    counted = counted_versions(draw)
    if counted == [version.version]:
        raise ValidationError(f"The draw's count already comes from {version.version}; choose another version.",
                              code="same_version")
    if version.weights_path and not Path(version.weights_path).is_file():
        raise ValidationError(f"The weights of {version.version} are missing ({version.weights_path}).",
                              code="weights_missing")
    queue = queue_for(Lane.BULK)
    with transaction.atomic():
        record(request, AuditEvent.Action.CREATE, draw, user=user, patient_id=draw.patient_id,
               detail={"action": "rerun", "version": version.version, "version_id": version.pk,
                       "uploads": uploads, "counted_version": counted, "lane": Lane.BULK})
        transaction.on_commit(lambda: [_send(pk, version.pk, queue) for pk in uploads])
    logger.info("draw %s: re-run with %s queued (%d upload(s))", draw.pk, version.version, len(uploads))
    return uploads


def counted_events(draw: BloodDraw) -> QuerySet:
    return CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE)


def rerun_results(draw: BloodDraw) -> list[dict]:
    """Per version with calls on the draw's counted cells (re-runs and shadow runs): how many cells
    it has called of how many (``complete`` when all), its CTC calls, and its agreement and Cohen's
    kappa with the counted calls. The counted version itself is not listed."""
    events = counted_events(draw)
    total = events.count()
    names = sorted(set(ShadowCall.objects.filter(event__in=events).values_list("version", flat=True)))
    out = []
    for name in names:
        a = agreement(name, events)
        out.append({"version": name, "cells": a["n"], "of": total, "complete": a["n"] == total,
                    "ctc": a.get("ctc_shadow", 0), "ctc_counted": a.get("ctc_active", 0),
                    "agree": a["agree"], "kappa": a["kappa"]})
    return out
