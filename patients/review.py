"""A reviewer confirms or overrides the machine's call for one cell.

One function for the dashboard and the API: the reason is required for an
override (and recorded with the history), the draw summary is recomputed at once.

A cell is reviewed once: a second review (another reviewer on a stale page) is
refused with :class:`AlreadyReviewed`, unless the caller explicitly asks to
*change* the review (``change=True``), which needs a reason and leaves an
``AuditEvent`` with the old and the new call (the history keeps the old row too).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from patients.audit import client_ip
from patients.models import AuditEvent, Call, CellEvent
from patients.roles import Action, can
from patients.summary import recompute_summary


class AlreadyReviewed(ValidationError):  # noqa: N818 - reads as the situation, like Django's DoesNotExist
    """The cell already has a reviewer's call and the request did not ask to change it."""

    def __init__(self, event: CellEvent) -> None:
        self.event = event
        who = event.reviewed_by.username if event.reviewed_by_id and event.reviewed_by else "another reviewer"
        when = timezone.localtime(event.reviewed_at).strftime("%d %b %Y %H:%M") if event.reviewed_at else "?"
        label = Call(event.reviewed_call).label if event.reviewed_call in Call.values else event.reviewed_call
        super().__init__(
            f"Already reviewed by {who} at {when} as {label}. Use “Change review” (with a reason) to change it.",
            code="already_reviewed",
        )


def _review_state(event: CellEvent) -> dict:
    return {
        "call": event.reviewed_call,
        "by": event.reviewed_by.username if event.reviewed_by_id and event.reviewed_by else None,
        "at": event.reviewed_at.isoformat() if event.reviewed_at else None,
        "reason": event.review_reason,
    }


def review_event(
    event: CellEvent, user, call: str, reason: str = "", *, change: bool = False, request=None,  # noqa: ANN001
) -> CellEvent:
    """Record ``user``'s call for ``event``; ``reason`` is required when it differs from the model.

    Raises :class:`AlreadyReviewed` (nothing changes) when the cell is already reviewed and
    ``change`` is false; with ``change`` a reason is required and the change is audited.
    """
    if not can(user, Action.REVIEW):
        raise PermissionDenied("Only reviewers and oncologists may review calls.")
    if call not in Call.values:
        raise ValidationError(f"Unknown call {call!r}: use 'ctc' or 'non_ctc'.", code="call")
    reason = (reason or "").strip()
    if call != event.call and not reason:
        raise ValidationError("Give a reason when you override the model's call.", code="reason_required")
    with transaction.atomic():
        # The check happens under the row lock: two reviewers posting at once cannot both pass it.
        locked = CellEvent.objects.select_for_update().get(pk=event.pk)
        changing = bool(locked.reviewed_call)
        if changing and not change:
            raise AlreadyReviewed(locked)
        if changing and not reason:
            raise ValidationError("Give a reason when you change an existing review.", code="reason_required")
        old = _review_state(locked) if changing else None
        locked.reviewed_call = call
        locked.reviewed_by = user
        locked.review_reason = reason[:2000]
        locked.reviewed_at = timezone.now()
        prefix = "review changed" if changing else "review"
        locked._change_reason = f"{prefix}: {call}" + (f" ({reason[:80]})" if reason else "")
        # The history row must name the reviewer even outside a web request (API task, shell):
        # simple-history only knows the user from the request middleware otherwise.
        locked._history_user = user
        locked.save(update_fields=["reviewed_call", "reviewed_by", "review_reason", "reviewed_at"])
        if changing:
            AuditEvent.objects.create(
                user=user, action=AuditEvent.Action.REVIEW, object_type="CellEvent", object_id=str(locked.pk),
                patient_id=locked.draw.patient_id if locked.draw_id else None,
                ip_address=client_ip(request) if request is not None else None,
                path=request.get_full_path()[:300] if request is not None else "",
                detail={"change": True, "old": old, "new": _review_state(locked), "reason": reason[:2000],
                        "model_call": locked.call},
            )
        recompute_summary(locked.draw)
    return locked
