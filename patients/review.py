"""A reviewer confirms or overrides the machine's call for one cell.

One function for the dashboard and the API: the reason is required for an
override (and recorded with the history), the draw summary is recomputed at once.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from patients.models import Call, CellEvent
from patients.roles import Action, can
from patients.summary import recompute_summary


def review_event(event: CellEvent, user, call: str, reason: str = "") -> CellEvent:  # noqa: ANN001
    """Record ``user``'s call for ``event``; ``reason`` is required when it differs from the model."""
    if not can(user, Action.REVIEW):
        raise PermissionDenied("Only reviewers and oncologists may review calls.")
    if call not in Call.values:
        raise ValidationError(f"Unknown call {call!r}: use 'ctc' or 'non_ctc'.", code="call")
    reason = (reason or "").strip()
    if call != event.call and not reason:
        raise ValidationError("Give a reason when you override the model's call.", code="reason_required")
    with transaction.atomic():
        locked = CellEvent.objects.select_for_update().get(pk=event.pk)
        locked.reviewed_call = call
        locked.reviewed_by = user
        locked.review_reason = reason[:2000]
        locked.reviewed_at = timezone.now()
        locked._change_reason = f"review: {call}" + (f" ({reason[:80]})" if reason else "")
        # The history row must name the reviewer even outside a web request (API task, shell):
        # simple-history only knows the user from the request middleware otherwise.
        locked._history_user = user
        locked.save(update_fields=["reviewed_call", "reviewed_by", "review_reason", "reviewed_at"])
        recompute_summary(locked.draw)
    return locked
