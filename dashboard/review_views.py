"""Review pages (issue 13): one draw's cells as a dense keyboard-first grid, and the queue.

The draw review mode shows every cell of a draw as a thumbnail tile with its call; a reviewer
moves with the arrows, presses ``C`` / ``N`` to set CTC / not CTC (an override asks for a reason
from a short list), and "confirm the remaining calls" finalises the rest in one audited action.
The cross-draw queue keeps its uncertainty order with the same grid, filtered by patient, draw
and clinic date, next to a per-draw queue ordered by clinic date (finishing a draw finishes it).

Every action works without JavaScript (a plain form post and a redirect back to the cell);
with it, ``review.js`` posts with ``fetch`` (``Accept: application/json``) and updates the tile
in place, so focus stays where the reviewer is.
"""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import BooleanField, Count, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from dashboard.access import actions_for, record_for, require, rights_on
from dashboard.labels import CATEGORY_LABELS, call_category_disagree, category_label
from dashboard.review_labels import attribute_label, branch_label
from dashboard.templatetags.review_tags import kappa_table
from dashboard.views.common import base_context
from dashboard.views.draws import shifted_uploads
from patients import cohort as cohort_stats
from patients.adjudication import adjudication_list, requires_second_review
from patients.audit import record
from patients.models import BloodDraw, Call, CellEvent, CellReview, DrawSummary, Patient, UploadStatus
from patients.review import (
    CATEGORIES,
    OVERRIDE_REASONS,
    SHIFT_ACKNOWLEDGEMENT,
    confirm_remaining,
    reason_text,
    review_event,
)
from patients.roles import Action, action_filter
from patients.thumbnails import label_cells

#: A 200-cell draw fits one page of the draw review grid; the queue shows 48 (six rows of eight).
DRAW_GRID_MAX = 300
QUEUE_PER_PAGE = 48

def rank_order() -> tuple:
    """Most uncertain first on the logit scale (``review_rank``); events stored before it existed
    fall back to the probability margin."""
    return (F("review_rank").asc(nulls_last=True), "margin", "pk")


def decorate(cells: list[CellEvent]) -> str:
    """What a grid tile shows, computed once per cell (template filters are slow per tile). Returns the
    note on channels the uploads did not record (patients.thumbnails: a 3-channel upload's AF tile)."""
    channels_note = label_cells(cells)
    for c in cells:
        c.prob_text = f"{c.ctc_probability:.2f}"
        c.category_text = category_label(c.final_category)
        c.model_category_text = category_label(c.category)
        c.disagree = not c.reviewed_call and call_category_disagree(c.call, c.category)
        c.state_text = state_text(c)
        expl = c.explanation or {}
        c.branches = [(branch_label(n), n, f"{float(w) * 100:.0f}%") for n, w in
                      (expl.get("branch_contributions") or {}).items()]
        c.attrs = [{"label": attribute_label(a.get("name", "")), "name": a.get("name", ""),
                    "value": f"{float(a.get('value', 0)):.2f}",
                    "toward": a.get("direction") == "toward_ctc" or float(a.get("effect", 0)) > 0}
                   for a in (expl.get("top_attributes") or [])[:3] if isinstance(a, dict)]
    return channels_note


def state_text(c: CellEvent) -> str:
    """What a tile says about the cell's review (two-reviewer mode included)."""
    if c.reviewed_call:
        return "override" if c.reviewed_call != c.call else "confirmed"
    if c.adjudication_pending:
        return "reviewers disagree: adjudicate"
    if getattr(c, "first_by", None):
        return f"1st review by {c.first_by}: a 2nd reviewer is needed"
    return "⚠ check" if c.disagree else ""


def _mark_my_reviews(request: HttpRequest, cells: list[CellEvent]) -> None:
    """Two-reviewer mode: who gave the first review, and the cells this user has already reviewed
    (shown as done for them: the second review must be someone else's)."""
    rows = CellReview.objects.filter(event__in=[c.pk for c in cells if not c.reviewed_call]).values_list(
        "event_id", "kind", "reviewer_id", "reviewer__username", "call")
    by_event: dict[int, list] = {}
    for event_id, kind, reviewer_id, name, call in rows:
        by_event.setdefault(event_id, []).append((kind, reviewer_id, name, call))
    for c in cells:
        reviews = by_event.get(c.pk, [])
        c.first_by = next((name for kind, _, name, _ in reviews if kind == "first"), None)
        c.done_for_me = bool(c.reviewed_call) or any(rid == request.user.pk for _, rid, _, _ in reviews)
        c.review_calls = " · ".join(f"{kind}: {'CTC' if call == 'ctc' else 'not CTC'} ({name})"
                                    for kind, _, name, call in reviews)


def _grid_context(request: HttpRequest, cells: list[CellEvent], **extra) -> dict:
    _mark_my_reviews(request, cells)
    channels_note = decorate(cells)
    return base_context(
        request, nav="review", cells=cells, reasons=OVERRIDE_REASONS, channels_note=channels_note,
        categories=[(c, CATEGORY_LABELS.get(c, c)) for c in CATEGORIES],
        review_error=request.session.pop("review_error", None), **extra)


def _summary_json(draw: BloodDraw) -> dict:
    s = DrawSummary.objects.filter(draw=draw).first()
    if s is None:
        return {}
    return {"status": s.status, "status_label": s.get_status_display(), "reviewed": s.reviewed_events,
            "analysed": s.events_analysed, "ctc_count": s.ctc_count, "ctc_per_7_5ml": s.ctc_per_7_5ml}


@login_required
def draw_review(request: HttpRequest, pk: int) -> HttpResponse:
    """One draw's cells as a dense grid (review mode), most uncertain first or by probability."""
    draw = get_object_or_404(BloodDraw.objects.for_user(request.user).select_related("patient"), pk=pk)
    sort = request.GET.get("sort", "uncertainty")
    events = CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE).select_related(
        "upload", "reviewed_by")
    order = ("-ctc_probability", "pk") if sort == "probability" else rank_order()
    cells = list(events.order_by(*order)[:DRAW_GRID_MAX])
    # The review controls follow the user's role in *this* patient's care team (review_cell's check):
    # ``rights.review``; without it the page shows the cells read-only.
    context = _grid_context(request, cells, rights=rights_on(request, draw))
    remaining = [c.pk for c in cells if not c.done_for_me and not c.adjudication_pending]
    record(request, "view", draw, object_type="DrawReview", patient=draw.patient)
    return render(request, "dashboard/review_draw.html", dict(
        context, draw=draw, second_review=requires_second_review(draw), sort=sort, remaining=remaining,
        # the draw page's warning (dashboard/_domain_warning.html); bulk confirmation then needs the
        # acknowledgement (patients.review.confirm_remaining)
        domain_shifted=shifted_uploads(draw), shift_acknowledgement=SHIFT_ACKNOWLEDGEMENT,
        summary=_summary_json(draw),
        truncated=events.count() > DRAW_GRID_MAX, next_path=request.get_full_path(),
        adjudication_pending=sum(c.adjudication_pending for c in cells)))


class _CountedPaginator(Paginator):
    """A paginator told its count: ``COUNT(*)`` over millions of pending cells is the slow part."""

    def __init__(self, object_list, per_page: int, count: int) -> None:  # noqa: ANN001
        super().__init__(object_list, per_page)
        self.__dict__["count"] = count


def _date(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


@login_required
def review_queue(request: HttpRequest) -> HttpResponse:
    """Pending cells of the draws the user may review, most uncertain first, with filters, and the
    per-draw queue (draws with cells to review, oldest clinic date first).

    The queue (cells, pending count, draws to review) holds only patients the user may review:
    a visible cell of a team where their role does not review would answer 403. The agreement
    figures and recent reviews beside it are read-only statistics over every visible review (as on
    the Models page); a recent review offers "Change review" only where the user may review it."""
    draws = BloodDraw.objects.for_user(request.user)
    # The draws whose cells the user may review: their role in the patient's care team (or as its
    # trial's coordinator) carries ``review`` (patients.roles, the rule review_cell enforces).
    may_review = Action.REVIEW in actions_for(request)
    q = action_filter(request.user, Action.REVIEW, "patient__") if may_review else None

    def reviewable_of(qs):  # noqa: ANN001, ANN202 - a BloodDraw queryset
        return qs.none() if not may_review else qs if q is None else qs.filter(q)

    all_reviewable = reviewable_of(draws)
    draw_id, patient_q = request.GET.get("draw", ""), request.GET.get("patient", "").strip()
    date_from, date_to = _date(request.GET.get("from", "")), _date(request.GET.get("to", ""))
    draw = None
    if draw_id.isdigit():
        draw = get_object_or_404(draws.select_related("patient"), pk=draw_id)
        draws = BloodDraw.objects.filter(pk=draw.pk)
    if patient_q:
        draws = draws.filter(patient__study_id__icontains=patient_q)
    if date_from:
        draws = draws.filter(drawn_at__date__gte=date_from)
    if date_to:
        draws = draws.filter(drawn_at__date__lte=date_to)
    visible = CellEvent.objects.filter(draw__in=draws.values("pk"), upload__status=UploadStatus.DONE)
    reviewable = reviewable_of(draws)
    pending = CellEvent.objects.filter(draw__in=reviewable.values("pk"), upload__status=UploadStatus.DONE,
                                       reviewed_call="")
    total = DrawSummary.objects.filter(draw__in=reviewable.values("pk")).aggregate(
        n=Sum(F("events_analysed") - F("reviewed_events")))["n"] or 0
    page = _CountedPaginator(pending.select_related("upload", "draw__patient").order_by(*rank_order()),
                             QUEUE_PER_PAGE, total).get_page(request.GET.get("page"))
    cells = list(page.object_list)
    # The per-draw queue: draws with cells to review, by clinic date (oldest first), from the summaries.
    draw_queue = list(
        DrawSummary.objects.filter(draw__in=reviewable.values("pk"), events_analysed__gt=F("reviewed_events"))
        .select_related("draw__patient").order_by("draw__drawn_at", "draw_id")[:50])
    for s in draw_queue:
        s.pending = s.events_analysed - s.reviewed_events
    reviewed = visible.exclude(reviewed_call="")
    # Both agreement figures read every review in scope (read-only statistics, whatever the user's
    # review rights): one cache entry per visible patients and filters, refreshed when a review
    # moves the data stamp. The adjudication count beside them is the user's own (review_tags).
    by_reviewer, kappa = cohort_stats.cached(
        Patient.objects.for_user(request.user),
        f"review-agreement:{draw.pk if draw else 'all'}:{patient_q}:{date_from}:{date_to}",
        lambda: (list(reviewed.values("reviewed_by__username")
                      .annotate(n=Count("pk"), agree=Count("pk", filter=Q(reviewed_call=F("call")))).order_by("-n")),
                 kappa_table(request.user)),
    )
    for r in by_reviewer:
        r["rate"] = r["agree"] / r["n"] if r["n"] else None
    n_reviewed, n_agree = sum(r["n"] for r in by_reviewer), sum(r["agree"] for r in by_reviewer)
    agreement = {"reviewed": n_reviewed, "agree": n_agree, "rate": n_agree / n_reviewed if n_reviewed else None}
    recent = reviewed.select_related("reviewed_by", "draw__patient").order_by("-reviewed_at")
    if may_review:  # "Change review" only where the user may review (the same query)
        recent = recent.annotate(may_review=ExpressionWrapper(Q(draw__in=all_reviewable.values("pk")),
                                                              output_field=BooleanField()))
    recent = list(recent[:10])
    # The adjudication link counts what the adjudication page lists (patients.adjudication.adjudication_list):
    # the user's own figure, not part of the cached statistics.
    adjudication = (CellEvent.objects.filter(draw__in=all_reviewable.values("pk"), adjudication_pending=True).count()
                    if may_review else 0)
    record(request, "view", draw, object_type="ReviewQueue", patient=draw.patient if draw else None)
    filters = {"patient": patient_q, "draw": draw_id, "from": request.GET.get("from", ""),
               "to": request.GET.get("to", "")}
    return render(request, "dashboard/review_queue.html", _grid_context(
        request, cells, page=page, draw=draw, agreement=agreement, by_reviewer=by_reviewer[:10], recent=recent,
        pending_total=total, draw_queue=draw_queue, kappa={**kappa, "pending": adjudication}, filters=filters,
        next_path=request.get_full_path(), oldest=draw_queue[0] if draw_queue else None))


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _next(request: HttpRequest) -> str:
    nxt = request.POST.get("next", "")
    return nxt if url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}) else ""


@login_required
@require_POST
def review_cell(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, override (reason from the list or free text) or change one cell's call and category."""
    event = record_for(request, CellEvent.objects.select_related("draw__patient"), pk, Action.REVIEW)
    call = request.POST.get("call", "")
    nxt = _next(request) or reverse("dashboard:review")
    change = request.POST.get("change") == "1"
    reason = reason_text(request.POST.get("reason_code", ""), request.POST.get("reason", ""))
    category = request.POST.get("category", "")
    try:
        event = review_event(event, request.user, call, reason, change=change, request=request, category=category)
    except ValidationError as err:
        message = " ".join(err.messages)
        if _wants_json(request):
            return JsonResponse({"error": message, "code": getattr(err, "code", "")}, status=400)
        # Shown inside the cell's tile (the redirect lands on it), not at the top of the page.
        request.session["review_error"] = {"cell": event.pk, "message": message}
        messages.error(request, f"{event.source}: {message}")  # also when the cell has left the page
        return redirect(nxt + f"#cell-{event.pk}")
    # The review's audit row is written by review_event (the same for the API).
    verb = "changed to" if change else ("confirmed as" if call == event.call else "overridden as")
    text = f"{event.source}: call {verb} {Call(call).label}."
    kind = getattr(event, "review_kind", "")
    if kind == "first" and not event.reviewed_call and requires_second_review(event.draw):
        text = f"{event.source}: first review saved as {Call(call).label}; a second reviewer is needed."
    elif kind == "second" and event.adjudication_pending:
        text = f"{event.source}: the two reviews disagree; the cell goes to adjudication."
    event.first_by = request.user.get_username() if kind == "first" else None
    event.disagree = False
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": text, "cell": {
            "state_text": state_text(event), "kind": kind,
            "id": event.pk, "final_call": event.final_call, "reviewed_call": event.reviewed_call,
            "override": event.reviewed_call != event.call, "category": event.final_category,
            "category_label": category_label(event.final_category), "reason": event.review_reason,
            "by": request.user.get_username()}, "summary": _summary_json(event.draw)})
    messages.success(request, text)
    return redirect(nxt + f"#cell-{event.pk}")


@login_required
@require_POST
def review_confirm_remaining(request: HttpRequest, pk: int) -> HttpResponse:
    """"Confirm the remaining calls": one audited action over the unreviewed cells the page showed."""
    draw = record_for(request, BloodDraw.objects.select_related("patient"), pk, Action.REVIEW)
    ids = [int(v) for v in request.POST.get("cells", "").split(",") if v.strip().isdigit()]
    # images unlike the validated ones: the form's acknowledgement box must be ticked (patients.review)
    acknowledged = request.POST.get("acknowledge_shifted") in ("1", "on", "true")
    try:
        confirmed = confirm_remaining(draw, request.user, ids, request=request, acknowledge_shifted=acknowledged)
    except ValidationError as err:
        message = " ".join(err.messages)
        if _wants_json(request):
            return JsonResponse({"error": message, "code": getattr(err, "code", "")}, status=400)
        messages.error(request, message)
        return redirect(_next(request) or reverse("dashboard:draw_review", args=[draw.pk]))
    summary = _summary_json(draw)
    text = f"{len(confirmed)} remaining call{'s' if len(confirmed) != 1 else ''} confirmed."
    if summary.get("status") in ("final", "amended"):
        text += f" The draw is {summary['status_label'].lower()}."
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": text, "confirmed": confirmed, "summary": summary})
    messages.success(request, text)
    return redirect(_next(request) or reverse("dashboard:draw_review", args=[draw.pk]))


@login_required
def adjudication(request: HttpRequest) -> HttpResponse:
    """Cells where the two reviewers disagree (two-reviewer mode), oldest clinic date first;
    the same grid: C / N decide (a reason when the decision overrides the model)."""
    require(request, Action.REVIEW)
    cells = list(adjudication_list(request.user).select_related("upload", "draw__patient")
                 .order_by("draw__drawn_at", "draw_id", "pk")[:DRAW_GRID_MAX])
    record(request, "view", None, object_type="Adjudication")
    return render(request, "dashboard/review_adjudication.html", _grid_context(
        request, cells, next_path=request.get_full_path()))


@login_required
def training_set(request: HttpRequest) -> HttpResponse:
    """The reviewed cells the user may see (optionally one of their care teams) as a zip of the
    labelled folder (``labels.csv`` + multi-channel TIFFs) the classifier's finetune reads; audited."""
    from django.http import Http404

    from patients.models import CareTeam
    from patients.trainingset import training_set_zip

    require(request, Action.EXPORT)
    team = None
    team_id = request.GET.get("team", "")
    if team_id:
        team = CareTeam.objects.filter(pk=team_id if team_id.isdigit() else 0, memberships__user=request.user).first()
        if team is None:
            raise Http404("No such care team of yours.")
    data, summary = training_set_zip(request.user, team)
    record(request, "export", None, object_type="TrainingSet",
           detail={"cells": summary.cells, "ctc": summary.ctc, "draws": summary.draws,
                   "team": team.pk if team else None, "channels": summary.channels})
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = 'attachment; filename="training-set.zip"'
    return response


# --- Lab model training (issue 13, point 4) ------------------------------------------------------


def _my_teams(user):  # noqa: ANN001, ANN202
    from patients.models import CareTeam
    from patients.scoping import is_admin

    return CareTeam.objects.all() if is_admin(user) else CareTeam.objects.filter(memberships__user=user)


@login_required
@require_POST
def training_start(request: HttpRequest) -> HttpResponse:
    """An admin starts a lab-model training for one of their care teams (Celery ``training`` queue)."""
    from django.http import Http404

    from patients.training_tasks import start_training

    require(request, Action.MANAGE_MODELS)
    team_id = request.POST.get("team", "")
    team = _my_teams(request.user).filter(pk=team_id if team_id.isdigit() else 0).first()
    if team is None:
        raise Http404("No such care team of yours.")
    job = start_training(team, request.user)
    messages.success(request, f"Training {job.pk} of a lab model for {team.name} queued.")
    return redirect(reverse("dashboard:models") + f"#training-{job.pk}")


@login_required
def training_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the models page's progress bar."""
    from patients.models import LabTraining

    require(request, Action.MANAGE_MODELS)
    job = get_object_or_404(LabTraining.objects.filter(team__in=_my_teams(request.user)), pk=pk)
    response = JsonResponse({"id": job.pk, "status": job.status, "progress": job.progress, "stage": job.stage,
                             "error": job.error, "candidate": job.candidate.version if job.candidate else None})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def model_shadow(request: HttpRequest, pk: int) -> HttpResponse:
    """Put a (non-active) version in shadow on new uploads, or take it out; audited."""
    from patients.models import ClassifierVersion

    require(request, Action.MANAGE_MODELS)
    version = get_object_or_404(ClassifierVersion.objects.filter(is_active=False, retired=False), pk=pk)
    on = request.POST.get("on") == "1"
    version.metadata = {**(version.metadata or {}), "shadow": on}
    version.save(update_fields=["metadata"])
    record(request, "update", version, detail={"action": "shadow" if on else "unshadow"})
    messages.success(request, f"{version.version} {'now analyses new uploads in shadow' if on else 'left shadow'}.")
    return redirect(reverse("dashboard:models") + "#lab-training")
