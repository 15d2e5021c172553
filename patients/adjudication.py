"""Second review, adjudication and agreement (issue 13, point 2).

A lab can require two reviewers per draw (``CareTeam.second_review`` or ``Trial.second_review``).
Then a cell's call only counts (``CellEvent.reviewed_call``) once two *different* reviewers agree,
or an adjudicator (a third reviewer) decides where they disagree; until then the draw stays
preliminary, because the summary counts only cells with a ``reviewed_call``. Each reviewer's own
call is a ``CellReview`` row, so agreement is measured per reviewer: Cohen's kappa reviewer-model
and reviewer-reviewer.

Cohen's kappa is computed here with numpy (scikit-learn, whose ``cohen_kappa_score`` is the
reference, is not in this venv): ``(p_o - p_e) / (1 - p_e)`` over the 2x2 table of the two raters.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet

from patients.models import BloodDraw, Call, CellEvent, CellReview
from patients.roles import Action, action_filter, can

LABELS = (Call.NON_CTC.value, Call.CTC.value)


def requires_second_review(draw: BloodDraw) -> bool:
    """The draw's care team or trial asks for two reviewers."""
    patient = draw.patient
    return bool(patient.care_team.second_review or (patient.trial_id and patient.trial.second_review))


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' calls on the same cells; None with no cells.

    Both raters constant and equal (p_e = 1): 1.0, the convention of perfect agreement."""
    if not a or len(a) != len(b):
        return None
    idx = {label: i for i, label in enumerate(LABELS)}
    table = np.zeros((2, 2))
    for x, y in zip(a, b, strict=True):
        table[idx[x], idx[y]] += 1
    n = table.sum()
    p_o = np.trace(table) / n
    p_e = float((table.sum(axis=1) / n) @ (table.sum(axis=0) / n))
    if p_e >= 1.0:
        return 1.0
    return float((p_o - p_e) / (1 - p_e))


def record_review(event: CellEvent, user, call: str, reason: str, category: str) -> tuple[str, CellEvent]:  # noqa: ANN001
    """Two-reviewer mode, under the caller's row lock on ``event``: store ``user``'s review.

    Returns ``(kind, event)``; ``event.reviewed_call`` is set only when the second reviewer agrees
    with the first (or the adjudicator decides). Raises ``ValidationError`` for a reviewer who
    already reviewed the cell.
    """
    reviews = {r.kind: r for r in CellReview.objects.filter(event=event)}
    first, second = reviews.get(CellReview.Kind.FIRST), reviews.get(CellReview.Kind.SECOND)
    if first is None:
        CellReview.objects.create(event=event, reviewer=user, kind=CellReview.Kind.FIRST, call=call,
                                  category=category, reason=reason)
        return CellReview.Kind.FIRST, event
    if first.reviewer_id == user.pk or (second is not None and second.reviewer_id == user.pk):
        raise ValidationError("You already reviewed this cell; the second review (or the adjudication) must be "
                              "someone else's.", code="same_reviewer")
    if second is None:
        CellReview.objects.create(event=event, reviewer=user, kind=CellReview.Kind.SECOND, call=call,
                                  category=category, reason=reason)
        if call == first.call:
            event.reviewed_call = call
            event.reviewed_category = category or first.category
            event.review_reason = "; ".join(r for r in (first.reason, reason) if r)
        else:
            event.adjudication_pending = True
        return CellReview.Kind.SECOND, event
    if not event.adjudication_pending:
        raise ValidationError("Both reviewers agreed on this cell; use “Change review” to change it.",
                              code="already_reviewed")
    CellReview.objects.create(event=event, reviewer=user, kind=CellReview.Kind.ADJUDICATION, call=call,
                              category=category, reason=reason)
    event.reviewed_call = call
    event.reviewed_category = category
    event.review_reason = reason
    event.adjudication_pending = False
    return CellReview.Kind.ADJUDICATION, event


def adjudication_list(user) -> QuerySet:  # noqa: ANN001
    """Cells in scope where the two reviewers disagree and nobody has decided yet, of the patients
    ``user`` may review (their role in the patient's care team: ``patients.roles``)."""
    if not can(user, Action.REVIEW):
        raise PermissionDenied("Only reviewers and oncologists adjudicate.")
    cells = CellEvent.objects.for_user(user).filter(adjudication_pending=True)
    q = action_filter(user, Action.REVIEW, "draw__patient__")
    return cells if q is None else cells.filter(q)


@dataclass
class ReviewerAgreement:
    reviewer: str
    cells: int
    agree_model: float | None
    kappa_model: float | None
    paired: int
    kappa_reviewers: float | None


def agreement_by_reviewer(reviews: QuerySet) -> list[ReviewerAgreement]:
    """Per reviewer: Cohen's kappa with the model's calls, and with the other reviewer of the same
    cells (first vs second review), over ``reviews`` (CellReview rows already scoped)."""
    rows = list(reviews.exclude(kind=CellReview.Kind.ADJUDICATION)
                .values_list("event_id", "kind", "reviewer__username", "call", "event__call"))
    by_event: dict[int, dict[str, tuple[str, str]]] = defaultdict(dict)
    mine: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for event_id, kind, name, call, model_call in rows:
        who = name or "(deleted user)"
        by_event[event_id][kind] = (who, call)
        mine[who][0].append(call)
        mine[who][1].append(model_call)
    pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for kinds in by_event.values():
        if CellReview.Kind.FIRST in kinds and CellReview.Kind.SECOND in kinds:
            (a_who, a), (b_who, b) = kinds[CellReview.Kind.FIRST], kinds[CellReview.Kind.SECOND]
            pairs[a_who][0].append(a)
            pairs[a_who][1].append(b)
            pairs[b_who][0].append(b)
            pairs[b_who][1].append(a)
    out = []
    for who, (calls, model) in mine.items():
        mine_pairs = pairs.get(who, ([], []))
        out.append(ReviewerAgreement(
            reviewer=who, cells=len(calls),
            agree_model=sum(x == y for x, y in zip(calls, model, strict=True)) / len(calls) if calls else None,
            kappa_model=cohen_kappa(calls, model), paired=len(mine_pairs[0]),
            kappa_reviewers=cohen_kappa(*mine_pairs)))
    return sorted(out, key=lambda r: -r.cells)
