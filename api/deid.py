"""De-identified cohort export for statisticians.

- Each patient gets a pseudonym ``HMAC-SHA256(SECRET_KEY, "pseudonym:" + study_id)``: stable
  across exports (a statistician can join two exports) but not reversible without the key.
  Neither the study ID, the MRN, the care team nor database ids leave the system.
- Every date of a patient is shifted by the same number of days, derived the same way
  (``"date-shift:" + study_id``) into [-MAX_SHIFT_DAYS, +MAX_SHIFT_DAYS]: intervals between a
  patient's diagnosis, treatment lines, events and draws are exact; calendar dates are not.
  Draw times are exported as shifted dates only.
- Free-text notes are left out (they can name people); dates typed into short labels
  (timepoint, regimen) are replaced by ``[date]``.
- Each draw's ``ctc_status`` is the status the pages word (favorable | unfavorable | "indeterminate
  until reviewed": preliminary, its model range straddling the cut-off; ``patients.summary``), and
  ``unfavorable`` (the count at or above the cut-off) is null while it is indeterminate: a plain
  false there would read as a favorable count nobody has settled.
- Each draw's domain status (``in_domain`` | ``shifted``: the count came from images unlike the
  validated ones; ``patients.drawdomain``) goes out without its reasons: a reason can quote an
  uploaded file's name, which a lab may have named after the patient.

Rotating SECRET_KEY changes every pseudonym and shift: keep it stable between exports
of one study.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Prefetch

from patients import drawdomain
from patients.csvsafe import safe_cell
from patients.models import ImagingUpload, Patient
from patients.schedule import at_or_above_cutoff
from patients.summary import INDETERMINATE_REVIEW, summary_status

MAX_SHIFT_DAYS = 180

#: Calendar dates typed into short labels ("C3D1 2025-03-04", "seen 4/3/25") would undo the shift.
_DATE_IN_TEXT = re.compile(r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\b")


def scrub(text: str) -> str:
    """A short free-text label without calendar dates in it."""
    return _DATE_IN_TEXT.sub("[date]", text or "")


def _digest(purpose: str, study_id: str) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), f"{purpose}:{study_id}".encode(), hashlib.sha256).digest()


def pseudonym(study_id: str) -> str:
    return "S-" + _digest("pseudonym", study_id).hex()[:12].upper()


def shift_days(study_id: str) -> int:
    """The patient's secret offset in days, in [-MAX_SHIFT_DAYS, MAX_SHIFT_DAYS]."""
    n = int.from_bytes(_digest("date-shift", study_id)[:8], "big")
    return n % (2 * MAX_SHIFT_DAYS + 1) - MAX_SHIFT_DAYS


def _shift(value: dt.date | dt.datetime | None, days: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    return (value + dt.timedelta(days=days)).isoformat()


def export_queryset(patients):  # noqa: ANN001, ANN201 - Patient queryset in, same out
    return patients.select_related("cancer_type", "trial", "arm").prefetch_related(
        "treatment_lines", "clinical_events", "draws__summary",
        # the domain status of each draw (one query): the checks only, not the uploads' other fields
        Prefetch("draws__uploads", queryset=ImagingUpload.objects.only("id", "draw_id", "status", "domain_check")),
    ).order_by("pk")


def patient_record(patient: Patient) -> dict[str, Any]:
    days = shift_days(patient.study_id)
    cutoff = patient.cancer_type.ctc_cutoff
    draws = []
    for i, d in enumerate(sorted(patient.draws.all(), key=lambda d: (d.drawn_at, d.pk)), start=1):
        s = d.summary_or_none
        domain = drawdomain.of_uploads(d.uploads.all()) if s else None
        ctc_status = summary_status(d, s)[0] if s else None
        draws.append({
            "draw_seq": i,
            "drawn_on": _shift(d.drawn_at, days),
            "timepoint": scrub(d.timepoint),
            "volume_ml": float(d.volume_ml),
            "events_analysed": s.events_analysed if s else None,
            "ctc_count": s.ctc_count if s else None,
            "ctc_per_7_5ml": s.ctc_per_7_5ml if s else None,
            "malignant_fraction": s.malignant_fraction if s else None,
            "unfavorable": at_or_above_cutoff(s.ctc_per_7_5ml, cutoff)
            if s and ctc_status != INDETERMINATE_REVIEW else None,
            "status": s.status if s else None,
            "model_version": s.model_version if s else None,
            "domain_status": domain.status if domain else None,
            "ctc_status": ctc_status,
        })
    return {
        "pseudo_id": pseudonym(patient.study_id),
        "cancer_type": patient.cancer_type.code,
        "ctc_cutoff": cutoff,
        "stage": patient.stage,
        "trial": patient.trial.code if patient.trial else None,
        "arm": patient.arm.code if patient.arm else None,
        "diagnosis_date": _shift(patient.diagnosis_date, days),
        "enrolled_on": _shift(patient.enrolled_on, days),
        "treatment_lines": [
            {"line_number": t.line_number, "regimen": scrub(t.regimen), "agents": scrub(t.agents), "intent": t.intent,
             "start_date": _shift(t.start_date, days), "end_date": _shift(t.end_date, days),
             "stop_reason": t.stop_reason}
            for t in patient.treatment_lines.all()
        ],
        "clinical_events": [
            {"date": _shift(e.date, days), "kind": e.kind, "recist": e.recist} for e in patient.clinical_events.all()
        ],
        "draws": draws,
    }


CSV_PATIENT_FIELDS = ["pseudo_id", "cancer_type", "ctc_cutoff", "stage", "trial", "arm", "diagnosis_date",
                      "enrolled_on"]
CSV_DRAW_FIELDS = ["draw_seq", "drawn_on", "timepoint", "volume_ml", "events_analysed", "ctc_count",
                   "ctc_per_7_5ml", "malignant_fraction", "unfavorable", "status", "model_version", "domain_status",
                   "ctc_status"]


def csv_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per draw (patients without draws get one row with empty draw columns)."""
    rows = []
    for r in records:
        base = {k: r[k] for k in CSV_PATIENT_FIELDS}
        for d in r["draws"] or [dict.fromkeys(CSV_DRAW_FIELDS)]:
            row = {**base, **{k: d[k] for k in CSV_DRAW_FIELDS}}
            # User-typed text (e.g. a timepoint) must not become a spreadsheet formula.
            rows.append({k: safe_cell(v) for k, v in row.items()})
    return rows
