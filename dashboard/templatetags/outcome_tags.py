"""The patient page's outcome card: PFS and OS derived from what the page already loaded (no query)."""

from __future__ import annotations

from django import template
from django.utils import timezone

from patients.outcomes import patient_times

register = template.Library()


@register.simple_tag
def patient_outcome(patient, lines, events, draws) -> dict:  # noqa: ANN001
    """``{day0, source, pfs, pfs_event, os, os_event, form}`` for the card (times in months)."""
    from dashboard.outcome_views import OutcomeForm

    first_line = min((ln.start_date for ln in lines), default=None)
    progressions = [e.date for e in events if e.kind == "progression"]
    known = [e.date for e in events] + [timezone.localtime(d.drawn_at).date() for d in draws]
    day0, source, pfs, pfs_event, os_, os_event = patient_times(
        patient.enrolled_on, patient.diagnosis_date, first_line, patient.progression_date, patient.death_date,
        patient.last_follow_up, progressions, known)
    return {"day0": day0, "source": source, "pfs": pfs, "pfs_event": pfs_event, "os": os_, "os_event": os_event,
            "form": OutcomeForm.for_patient(patient)}
