"""The draw summary: CTC count per 7.5 mL of blood and the malignant fraction."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q

from patients.models import BloodDraw, CellEvent, DrawSummary, SummaryStatus, UploadStatus

#: CellSearch convention: counts are reported per 7.5 mL of blood.
REFERENCE_VOLUME_ML = 7.5


def per_7_5ml(count: int, volume_ml: float) -> float:
    """Normalise a count to 7.5 mL: ``count * 7.5 / volume_ml``."""
    if volume_ml <= 0:
        raise ValueError("volume_ml must be positive")
    return count * REFERENCE_VOLUME_ML / float(volume_ml)


def recompute_summary(draw: BloodDraw) -> DrawSummary:
    """Recount the draw from its events of finished uploads, honouring reviews.

    Final once every event is reviewed; a final summary changed by a later review
    becomes amended (FHIR's status follows this).
    """
    events = CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE)
    agg = events.aggregate(
        n=Count("pk"),
        reviewed=Count("pk", filter=~Q(reviewed_call="")),
        ctc=Count("pk", filter=Q(reviewed_call="ctc") | Q(reviewed_call="", call="ctc")),
    )
    versions = list(
        draw.uploads.filter(status=UploadStatus.DONE).exclude(model_version="").values_list("model_version", flat=True)
    )
    with transaction.atomic():
        summary, _ = DrawSummary.objects.select_for_update().get_or_create(draw=draw)
        before = (summary.ctc_count, summary.status)
        n, ctc, reviewed = agg["n"], agg["ctc"], agg["reviewed"]
        summary.events_analysed = n
        summary.ctc_count = ctc
        summary.reviewed_events = reviewed
        summary.ctc_per_7_5ml = round(per_7_5ml(ctc, float(draw.volume_ml)), 2)
        summary.malignant_fraction = round(ctc / n, 4) if n else 0.0
        summary.model_version = versions[0] if versions else ""
        complete = n > 0 and reviewed == n
        if not complete:
            summary.status = SummaryStatus.PRELIMINARY
        elif before[1] in (SummaryStatus.FINAL, SummaryStatus.AMENDED) and before[0] != ctc:
            summary.status = SummaryStatus.AMENDED
        elif before[1] == SummaryStatus.PRELIMINARY:
            summary.status = SummaryStatus.FINAL
        summary.save()
    return summary
