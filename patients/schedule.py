"""The visit schedule and the CTC status over time.

Two questions clinicians ask of every patient:

- *Is a blood draw overdue?* Draws are planned every ``Trial.draw_interval_days`` (or
  ``settings.DEFAULT_DRAW_INTERVAL_DAYS`` outside a trial); a draw is overdue once the
  next one is later than that interval plus ``settings.DRAW_GRACE_DAYS``.
- *How did the CTC status move?* Each analysed draw is favorable (below the cancer
  type's cut-off per 7.5 mL) or unfavorable (at or above it);
  :func:`status_sentence` says it in words, e.g. "Unfavorable at baseline, favorable
  since C3D1" (``patients.summary.sentence_for_draws`` says it of a patient's draws).

Everything here is pure: functions over plain values or one queryset, no request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

FAVORABLE = "favorable"
UNFAVORABLE = "unfavorable"


def interval_days(trial_interval: int | None) -> int:
    """Planned days between draws: the trial's interval, else the site default."""
    return int(trial_interval) if trial_interval else int(settings.DEFAULT_DRAW_INTERVAL_DAYS)


def next_due(last_draw: dt.date | None, interval: int) -> dt.date | None:
    """The date the next draw is planned for (None without a previous draw)."""
    return last_draw + dt.timedelta(days=interval) if last_draw else None


def days_overdue(last_draw: dt.date | None, interval: int, today: dt.date | None = None) -> int:
    """Days past the planned date once the grace period is over; 0 when not overdue.

    The count starts at the planned date (not at the end of the grace period), so
    "overdue by 9 days" means nine days later than planned.
    """
    due = next_due(last_draw, interval)
    if due is None:
        return 0
    today = today or timezone.localdate()
    late = (today - due).days
    return late if late > int(settings.DRAW_GRACE_DAYS) else 0


@dataclass(frozen=True)
class Due:
    """Where one patient stands against the draw schedule."""

    interval: int  # planned days between draws
    next_due: dt.date | None  # None without a previous draw
    days_overdue: int  # 0 when not overdue


def due(last_drawn: dt.datetime | dt.date | None, trial_interval: int | None, today: dt.date | None = None) -> Due:
    """The schedule of a patient whose latest draw was ``last_drawn`` (a stored datetime: its local
    day counts) in a trial drawing every ``trial_interval`` days (None: the site default)."""
    last = _as_date(last_drawn) if last_drawn else None
    interval = interval_days(trial_interval)
    return Due(interval, next_due(last, interval), days_overdue(last, interval, today))


@dataclass(frozen=True)
class Overdue:
    patient_id: int
    study_id: str
    trial: str
    arm: str
    last_draw: dt.date
    due: dt.date
    days_overdue: int


def overdue_patients(patients: QuerySet, today: dt.date | None = None) -> list[Overdue]:
    """Patients of ``patients`` whose next draw is overdue, most overdue first (one query).

    A patient without any draw has no schedule yet and is never overdue here.
    """
    today = today or timezone.localdate()
    rows = (
        patients.order_by()
        .annotate(last_drawn=Max("draws__drawn_at"))
        .filter(last_drawn__isnull=False)
        .values_list("pk", "study_id", "trial__code", "arm__code", "trial__draw_interval_days", "last_drawn")
    )
    out = []
    for pk, study_id, trial, arm, trial_interval, last_drawn in rows:
        when = due(last_drawn, trial_interval, today)
        if when.days_overdue:
            out.append(Overdue(pk, study_id, trial or "", arm or "", _as_date(last_drawn), when.next_due,
                               when.days_overdue))
    out.sort(key=lambda o: (-o.days_overdue, o.study_id))
    return out


def overdue_ids(patients: QuerySet, today: dt.date | None = None) -> list[int]:
    """Primary keys of the overdue patients (for filtering a list)."""
    return [o.patient_id for o in overdue_patients(patients, today)]


def _as_date(value: dt.datetime | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    return value


# --- CTC status -------------------------------------------------------------------------


def ctc_status(per_7_5ml: float | None, cutoff: int | float) -> str | None:
    """'unfavorable' at or above the cut-off, 'favorable' below it, None when not analysed."""
    if per_7_5ml is None:
        return None
    return UNFAVORABLE if per_7_5ml >= cutoff else FAVORABLE


def at_or_above_cutoff(per_7_5ml: float | None, cutoff: int | float) -> bool:
    """The count itself at or above the cut-off (False when not analysed).

    This is the bare comparison that colours a count red and fills the API's ``unfavorable``;
    the status a clinician reads (which says "indeterminate until reviewed" while a preliminary
    count's model range straddles the cut-off) is ``patients.summary.draw_status``."""
    return ctc_status(per_7_5ml, cutoff) == UNFAVORABLE


def trend(latest: float | None, previous: float | None) -> str:
    """'up', 'down', 'same' or '' (fewer than two analysed draws)."""
    if latest is None or previous is None:
        return ""
    if abs(latest - previous) < 1e-9:
        return "same"
    return "up" if latest > previous else "down"


def _label(timepoint: str) -> str:
    t = (timepoint or "").strip()
    return "baseline" if t.lower() == "baseline" else (t or "an unlabelled draw")


def status_sentence(points: Iterable[tuple], cutoff: int | float) -> str:
    """One sentence on the CTC status over time.

    ``points`` are ``(timepoint, ctc_per_7_5ml)`` in time order; draws not analysed
    yet (``None``) are skipped. Examples::

        Unfavorable at baseline, favorable since C3D1.
        Unfavorable at baseline and C2D1, favorable since C3D1.
        Favorable at baseline, unfavorable from C2D1 to C4D1, favorable since C6D1.
        Persistently unfavorable since baseline (4 draws).
    """
    # A point may carry its own status as a third element ("indeterminate until reviewed", issue 14).
    statuses = [(_label(p[0]), p[2] if len(p) > 2 and p[2] else ctc_status(p[1], cutoff))
                for p in points if p[1] is not None]
    if not statuses:
        return "No analysed draws yet."
    runs: list[list] = []  # [status, first label, last label, number of draws]
    for label, status in statuses:
        if runs and runs[-1][0] == status:
            runs[-1][2] = label
            runs[-1][3] += 1
        else:
            runs.append([status, label, label, 1])

    def span(first: str, last: str, n: int) -> str:
        if n == 1:
            return f"at {first}"
        return f"at {first} and {last}" if n == 2 else f"from {first} to {last}"

    if len(runs) == 1:
        status, first, _, n = runs[0]
        text = f"{status} at {first}" if n == 1 else f"persistently {status} since {first} ({n} draws)"
    else:
        parts = []
        for i, (status, first, last, n) in enumerate(runs):
            parts.append(f"{status} since {first}" if i == len(runs) - 1 else f"{status} {span(first, last, n)}")
        text = ", ".join(parts)
    return text[0].upper() + text[1:] + "."


def preliminary_note(result_statuses: Iterable[str | None]) -> str:
    """``"(preliminary: 2 of 6 draws reviewed)"`` when any analysed draw is not final, else ``""``.

    ``result_statuses``: the summary status of each analysed draw (preliminary | final | amended).
    Counts shown from machine calls that nobody has reviewed must say so wherever they are
    summarised (the status sentence, the printable summary, the cohort tables).
    """
    statuses = [s for s in result_statuses if s]
    if not statuses:
        return ""
    reviewed = sum(s != "preliminary" for s in statuses)
    if reviewed == len(statuses):
        return ""
    noun = "draw" if len(statuses) == 1 else "draws"
    return f"(preliminary: {reviewed} of {len(statuses)} {noun} reviewed)"
