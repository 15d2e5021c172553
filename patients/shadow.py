"""Shadow mode (issue 13, point 5): a candidate version analyses new uploads beside the active one.

An admin puts a candidate in shadow (``ClassifierVersion.metadata["shadow"]``). Each upload the
active version finishes is then analysed again by every shadow version, as a job on the
``training`` queue (never delaying classification); its calls are stored as ``ShadowCall`` rows
next to the active version's ``CellEvent.call`` and never counted (queued by
``patients.training_tasks.enqueue_shadow``, beside its task). The Models page shows, per
shadow version, how often it agrees with the active calls (and Cohen's kappa).
"""

from __future__ import annotations

import logging

from django.db.models import QuerySet

from patients.adjudication import cohen_kappa
from patients.cartridge import analyse_fields, field_sources
from patients.models import CellEvent, ClassifierVersion, ImagingUpload, ShadowCall, UploadStatus
from patients.pipeline import get_classifier
from patients.storage import local_paths

logger = logging.getLogger(__name__)


def shadow_versions() -> QuerySet:
    return ClassifierVersion.objects.filter(metadata__shadow=True, is_active=False, retired=False)


def run_shadow(upload_id: int, version_id: int) -> int:
    """Analyse the upload's files with ``version`` (a shadow candidate, or the version an admin
    re-runs a draw with: patients/rerun.py); store its calls by event index, stamped with it.

    ``weights_path`` "" is the weights shipped in the package (how the first upload registers
    them); a cartridge goes field by field as in the pipeline, so the event indices match."""
    upload = ImagingUpload.objects.filter(pk=upload_id, status=UploadStatus.DONE).first()
    version = ClassifierVersion.objects.filter(pk=version_id).first()
    if upload is None or version is None:
        return 0
    files = list(upload.files.order_by("position"))
    names = [f.original_name for f in files]
    clf = get_classifier(version.weights_path)
    with local_paths([f.file for f in files]) as paths:
        fields = field_sources(paths, names, len(upload.channels)) if upload.kind == "field" else None
        if fields:
            result = analyse_fields(clf, fields, upload.channels, upload.pixel_size_um)
        else:
            result = clf.analyse_files(paths, upload.channels, kind=upload.kind,
                                       pixel_size_um=upload.pixel_size_um, names=names)
    by_index = dict(CellEvent.objects.filter(upload=upload).values_list("index", "pk"))
    rows = [ShadowCall(event_id=by_index[e.index], version=version.version, call=e.call,
                       ctc_probability=float(e.ctc_probability))
            for e in result.events if e.index in by_index]
    ShadowCall.objects.filter(event__upload=upload, version=version.version).delete()
    ShadowCall.objects.bulk_create(rows)
    logger.info("upload %s: %d shadow calls by %s", upload_id, len(rows), version.version)
    return len(rows)


def agreement(version: str, events: QuerySet) -> dict:
    """How the shadow ``version`` agrees with the active calls on ``events`` (already scoped)."""
    pairs = list(ShadowCall.objects.filter(version=version, event__in=events).values_list("call", "event__call"))
    if not pairs:
        return {"n": 0, "agree": None, "kappa": None}
    shadow, active = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"n": len(pairs), "agree": sum(a == b for a, b in pairs) / len(pairs),
            "kappa": cohen_kappa(shadow, active), "ctc_shadow": shadow.count("ctc"), "ctc_active": active.count("ctc")}
