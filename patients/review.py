"""A reviewer confirms or overrides the machine's call for one cell.

One function for the dashboard and the API: the reason is required for an
override (and recorded with the history), the draw summary is recomputed at once.

A cell is reviewed once: a second review (another reviewer on a stale page) is
refused with :class:`AlreadyReviewed`, unless the caller explicitly asks to
*change* the review (``change=True``), which needs a reason and leaves an
``AuditEvent`` with the old and the new call (the history keeps the old row too).
Every review writes its ``review`` audit row here (``patients.audit.record``), so the
dashboard and the API leave the same row.

"Confirm the remaining calls" of a draw whose images differ from the validated ones (its merged
domain check says ``shifted``, ``patients.drawdomain``) needs the reviewer's explicit
acknowledgement (:data:`SHIFT_ACKNOWLEDGEMENT`): those calls may be wrong while they look
confident, and one key must not settle them unseen. One cell's review needs none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from patients import drawdomain
from patients.adjudication import record_review, requires_second_review
from patients.audit import record
from patients.models import AuditEvent, BloodDraw, Call, CellEvent, CellReview, UploadStatus
from patients.roles import Action, can_on
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


#: The cell categories a reviewer may set (the classifier's category head; training labels).
CATEGORIES: tuple[str, ...] = ("ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact")

#: The short list an override's reason is chosen from (free text as "other"): what CellSearch
#: reviewers actually write, and few enough to pick with one key.
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("no_nucleus", "No nucleus (DAPI negative)"),
    ("cd45_positive", "CD45 positive: leukocyte"),
    ("ck_weak", "CK weak or not cytoplasmic"),
    ("debris", "Debris or artifact"),
    ("morphology", "Morphology: intact CTC"),
    ("out_of_focus", "Out of focus or cut off"),
)
REASON_LABELS = dict(OVERRIDE_REASONS)

#: What a reviewer ticks (the review page) or sends (API ``"acknowledge_shifted": true``) to confirm
#: the remaining calls of a draw whose images differ from the validated ones in one action.
SHIFT_ACKNOWLEDGEMENT = "I have looked at these images: they differ from the validated ones"
#: the refusal without it (the API adds how to send it)
SHIFT_REFUSED = (
    "This draw's images differ from the validated domain: review every call. Confirming its remaining "
    f"calls in one action needs the acknowledgement “{SHIFT_ACKNOWLEDGEMENT}”; nothing was confirmed. "
    "Reviewing cells one by one needs none."
)


def reason_text(code: str, other: str = "") -> str:
    """The stored reason: the list entry's words, or the free text for "other"."""
    code = (code or "").strip()
    if code in REASON_LABELS:
        return REASON_LABELS[code] + (f": {other.strip()}" if other and other.strip() else "")
    return (other or code).strip()


def review_rank(probability: float, threshold: float) -> float:
    """How unsure a call is: the distance of P(CTC) from the threshold on the logit scale.

    On the probability scale with a threshold of 0.2, P 0.01 (a sure "not CTC") sat nearer the
    threshold than counted cells at 0.35-0.50; on the logit scale 0.01 is 3.2 away, 0.35 only 0.77.
    """
    def logit(p: float) -> float:
        p = min(max(float(p), 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    return abs(logit(probability) - logit(threshold))


def _review_state(event: CellEvent) -> dict:
    return {
        "call": event.reviewed_call,
        "category": event.reviewed_category,
        "by": event.reviewed_by.username if event.reviewed_by_id and event.reviewed_by else None,
        "at": event.reviewed_at.isoformat() if event.reviewed_at else None,
        "reason": event.review_reason,
    }


def _audit_review(request, event: CellEvent, user, call: str, kind: str) -> None:  # noqa: ANN001
    """The ``review`` audit row of a first (or, with two reviewers, second) review: the same row
    whether the review came from the dashboard or the API (a change writes its own, with old and new)."""
    record(request, AuditEvent.Action.REVIEW, event, user=user,
           patient_id=event.draw.patient_id if event.draw_id else None,
           detail={"call": call, "model_call": event.call, "category": event.reviewed_category, "kind": str(kind)})


def review_event(
    event: CellEvent, user, call: str, reason: str = "", *, change: bool = False, request=None,  # noqa: ANN001
    category: str = "",
) -> CellEvent:
    """Record ``user``'s call for ``event``; ``reason`` is required when it differs from the model.

    Raises :class:`AlreadyReviewed` (nothing changes) when the cell is already reviewed and
    ``change`` is false; with ``change`` a reason is required and the change is audited.
    """
    if not can_on(user, Action.REVIEW, event):  # the role in this patient's care team (patients.roles)
        raise PermissionDenied("Only reviewers and oncologists may review calls.")
    if call not in Call.values:
        raise ValidationError(f"Unknown call {call!r}: use 'ctc' or 'non_ctc'.", code="call")
    reason = (reason or "").strip()
    category = (category or "").strip()
    if category and category not in CATEGORIES:
        raise ValidationError(f"Unknown category {category!r}.", code="category")
    if category == event.category:
        category = ""  # agrees with the model: nothing to correct
    if call != event.call and not reason:
        raise ValidationError("Give a reason when you override the model's call.", code="reason_required")
    with transaction.atomic():
        # The check happens under the row lock: two reviewers posting at once cannot both pass it.
        locked = CellEvent.objects.select_for_update().get(pk=event.pk)
        if not locked.reviewed_call and requires_second_review(locked.draw):
            # Two reviewers per draw (patients/adjudication.py): the call counts once two agree.
            kind, locked = record_review(locked, user, call, reason[:2000], category)
            locked.reviewed_by = user if locked.reviewed_call else None
            locked.reviewed_at = timezone.now() if locked.reviewed_call else None
            locked._change_reason = f"{kind} review: {call}" + (f" ({reason[:80]})" if reason else "")
            locked._history_user = user
            locked.save(update_fields=["reviewed_call", "reviewed_by", "review_reason", "reviewed_at",
                                       "reviewed_category", "adjudication_pending"])
            _audit_review(request, locked, user, call, kind)
            recompute_summary(locked.draw)
            locked.review_kind = kind
            return locked
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
        locked.reviewed_category = category
        prefix = "review changed" if changing else "review"
        locked._change_reason = f"{prefix}: {call}" + (f" ({reason[:80]})" if reason else "")
        # The history row must name the reviewer even outside a web request (API task, shell):
        # simple-history only knows the user from the request middleware otherwise.
        locked._history_user = user
        locked.save(update_fields=["reviewed_call", "reviewed_by", "review_reason", "reviewed_at",
                                   "reviewed_category"])
        if changing:
            record(request, AuditEvent.Action.REVIEW, locked, user=user,
                   patient_id=locked.draw.patient_id if locked.draw_id else None,
                   detail={"change": True, "old": old, "new": _review_state(locked), "reason": reason[:2000],
                           "model_call": locked.call})
        else:
            CellReview.objects.get_or_create(event=locked, kind=CellReview.Kind.FIRST, defaults={
                "reviewer": user, "call": call, "category": category, "reason": reason[:2000]})
            _audit_review(request, locked, user, call, CellReview.Kind.FIRST)
        recompute_summary(locked.draw)
    locked.review_kind = "change" if changing else CellReview.Kind.FIRST
    return locked


def draw_is_shifted(draw: BloodDraw) -> bool:
    """Whether the draw's finished uploads' merged domain check says ``shifted`` (patients.drawdomain)."""
    domain = drawdomain.for_draws([draw.pk]).get(draw.pk)
    return bool(domain and domain.shifted)


def confirm_remaining(draw: BloodDraw, user, cell_ids: Iterable[int] | None = None, request=None,  # noqa: ANN001
                      acknowledge_shifted: bool = False) -> list[int]:
    """Confirm the model's call of every still unreviewed cell of ``draw`` in one audited action.

    ``cell_ids`` (what the reviewer's page showed as remaining) limits the action to those cells,
    so a cell that arrived after the page was drawn is never confirmed unseen. One ``AuditEvent``
    (``review``, ``bulk_confirm``) lists the cells it covered; each cell's history row names the
    reviewer. Returns the ids confirmed.

    A draw whose images differ from the validated ones (:func:`draw_is_shifted`) is refused
    (``ValidationError``, code ``domain_shifted``, :data:`SHIFT_REFUSED`) unless
    ``acknowledge_shifted``: the reviewer's :data:`SHIFT_ACKNOWLEDGEMENT`, kept in the audit row.
    """
    if not can_on(user, Action.REVIEW, draw):  # the role in this patient's care team (patients.roles)
        raise PermissionDenied("Only reviewers and oncologists may review calls.")
    shifted = draw_is_shifted(draw)
    if shifted and not acknowledge_shifted:
        raise ValidationError(SHIFT_REFUSED, code="domain_shifted")
    with transaction.atomic():
        qs = (CellEvent.objects.select_for_update()
              .filter(draw=draw, reviewed_call="", upload__status=UploadStatus.DONE).order_by("pk"))
        if cell_ids is not None:
            qs = qs.filter(pk__in=list(cell_ids))
        cells = list(qs)
        now = timezone.now()
        two = requires_second_review(draw)
        if two:
            # Two reviewers: this user's review of each cell they have not reviewed yet; a cell
            # awaiting adjudication needs an explicit decision, not a bulk confirmation.
            seen = set(CellReview.objects.filter(event__in=cells, reviewer=user).values_list("event_id", flat=True))
            cells = [c for c in cells if c.pk not in seen and not c.adjudication_pending]
        for cell in cells:
            if two:
                kind, cell = record_review(cell, user, cell.call, "", "")
                cell.reviewed_by = user if cell.reviewed_call else None
                cell.reviewed_at = now if cell.reviewed_call else None
            else:
                cell.reviewed_call = cell.call
                cell.reviewed_by = user
                cell.reviewed_at = now
                cell.review_reason = ""
                CellReview.objects.get_or_create(event=cell, kind=CellReview.Kind.FIRST,
                                                 defaults={"reviewer": user, "call": cell.call})
            cell._change_reason = "review: confirm remaining"
            cell._history_user = user
            cell.save(update_fields=["reviewed_call", "reviewed_by", "reviewed_at", "review_reason",
                                     "reviewed_category", "adjudication_pending"])
        ids = [c.pk for c in cells]
        record(
            request, AuditEvent.Action.REVIEW, draw, user=user, patient_id=draw.patient_id,
            detail={"bulk_confirm": True, "cells": ids, "n": len(ids), "second_review": two,
                    "calls": {"ctc": sum(c.call == Call.CTC for c in cells),
                              "non_ctc": sum(c.call == Call.NON_CTC for c in cells)},
                    **({"acknowledged_shifted": True} if shifted else {})},
        )
        recompute_summary(draw)
    return ids
