"""Checks on clinical dates and identifiers shared by the dashboard forms, the API serializers and the admin.

A blood draw or a clinical event cannot have happened in the future: a draw dated
ahead hides the overdue flag of the visit schedule, an event ahead misplaces the
timeline. One function per kind, so every entry point gives the same message.
"""

from __future__ import annotations

import datetime as dt
import re

from django.core.exceptions import ValidationError
from django.db.models import Max
from django.utils import timezone

#: Clock skew allowed between the recording device and the server.
DRAW_FUTURE_TOLERANCE = dt.timedelta(hours=1)


def check_drawn_at(drawn_at: dt.datetime | None, now: dt.datetime | None = None) -> None:
    """Refuse a draw time more than an hour ahead of now."""
    if drawn_at is None:
        return
    now = now or timezone.now()
    if timezone.is_naive(drawn_at):
        drawn_at = timezone.make_aware(drawn_at)
    if drawn_at > now + DRAW_FUTURE_TOLERANCE:
        shown = timezone.localtime(drawn_at).strftime("%d %b %Y %H:%M")
        raise ValidationError(
            f"The draw time {shown} is in the future; record a draw once the blood has been drawn.",
            code="future_draw",
        )


def check_event_date(date: dt.date | None, today: dt.date | None = None) -> None:
    """Refuse a clinical event dated after today."""
    if date is None:
        return
    today = today or timezone.localdate()
    if isinstance(date, dt.datetime):
        date = date.date()
    if date > today:
        raise ValidationError(
            f"The event date {date:%d %b %Y} is in the future; record events that have happened.",
            code="future_event",
        )


def check_outcomes(patient, today: dt.date | None = None) -> None:  # noqa: ANN001
    """Refuse outcome dates that cannot be right, with a message per field.

    Future dates; progression or death before the diagnosis; death before a recorded
    progression is allowed (death counts for PFS too) but progression after death is not;
    a last follow-up before the patient's last blood draw, or after their death.
    """
    today = today or timezone.localdate()
    errors: dict[str, list[str]] = {}
    fields = {"progression_date": "progression", "death_date": "death", "last_follow_up": "last follow-up"}
    diagnosed = patient.diagnosis_date
    for name, words in fields.items():
        value = getattr(patient, name)
        if value is None:
            continue
        if value > today:
            errors.setdefault(name, []).append(
                f"The {words} date {value:%d %b %Y} is in the future; record outcomes that have happened.")
        elif diagnosed and value < diagnosed:
            errors.setdefault(name, []).append(
                f"The {words} date {value:%d %b %Y} is before the diagnosis ({diagnosed:%d %b %Y}).")
    death, progression, follow_up = patient.death_date, patient.progression_date, patient.last_follow_up
    if death and progression and progression > death:
        errors.setdefault("progression_date", []).append(
            f"Progression ({progression:%d %b %Y}) is after death ({death:%d %b %Y}).")
    if death and follow_up and follow_up > death:
        errors.setdefault("last_follow_up", []).append(
            f"The last follow-up ({follow_up:%d %b %Y}) is after death ({death:%d %b %Y}).")
    if follow_up and patient.pk:
        last_draw = patient.draws.aggregate(last=Max("drawn_at"))["last"]
        if last_draw is not None:
            last_day = timezone.localtime(last_draw).date()
            if follow_up < last_day:
                errors.setdefault("last_follow_up", []).append(
                    f"The last follow-up ({follow_up:%d %b %Y}) is before the last blood draw "
                    f"({last_day:%d %b %Y}): the patient was seen then.")
    if errors:
        raise ValidationError(errors)


# --- Identifiers -----------------------------------------------------------------------------------
#
# Study IDs and timepoints end up in places that give characters a meaning: file names in
# Content-Disposition headers, CSV cells a spreadsheet may run as formulas, Plotly labels that
# render their own markup, URLs and log lines. Both are short codes, so the character set is
# small and documented (docs/security.md): nothing that quotes, separates, breaks a line or
# starts a formula. Existing records are not rewritten; every output still escapes on its own.

#: Study ID: a letter or digit, then letters, digits, ``.``, ``_``, ``-`` (ASCII), at most 40.
STUDY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
#: Timepoint: a letter or digit, then letters, digits, space and ``. _ - / # ( ) +``, at most 40.
TIMEPOINT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/#()+-]{0,39}")


def check_study_id(value: str | None) -> None:
    """Refuse a study ID outside :data:`STUDY_ID_RE` (the message names the allowed characters)."""
    if value is None or not STUDY_ID_RE.fullmatch(value):
        raise ValidationError(
            "A study ID is 1-40 characters: letters A-Z, digits, '.', '_' or '-', starting with a letter or "
            "digit (no spaces, quotes, line breaks or markup).",
            code="invalid_study_id",
        )


def check_timepoint(value: str | None) -> None:
    """Refuse a timepoint outside :data:`TIMEPOINT_RE`, with a message that says what is allowed."""
    if value is None or not TIMEPOINT_RE.fullmatch(value) or value != value.strip():
        raise ValidationError(
            "A timepoint is 1-40 characters: letters A-Z, digits, spaces and . _ - / # ( ) +, starting with a "
            "letter or digit, e.g. 'baseline', 'C3D1', 'week 12' (no quotes, line breaks or markup).",
            code="invalid_timepoint",
        )
