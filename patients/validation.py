"""Checks on clinical dates shared by the dashboard forms, the API serializers and the admin.

A blood draw or a clinical event cannot have happened in the future: a draw dated
ahead hides the overdue flag of the visit schedule, an event ahead misplaces the
timeline. One function per kind, so every entry point gives the same message.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
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
