"""The draw page: the result (count, interval, status words), the cell gallery and the embedding."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import Count, F, Q, QuerySet, Window
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from dashboard import figures
from dashboard.access import rights_on
from dashboard.forms import UploadForm
from dashboard.labels import call_category_disagree, category_label
from dashboard.review_labels import attribute_label, branch_label
from dashboard.views.common import base_context
from patients import registry, schedule
from patients.audit import record
from patients.models import BloodDraw, Call, CellEvent, ImagingUpload, UploadStatus
from patients.summary import reading_of
from patients.thumbnails import label_cells

CELLS_PER_PAGE = 48
EMBEDDING_POINTS = 3000


def _decorate_cells(cells: list[CellEvent]) -> str:
    """Precompute what a cell card shows (template filters such as floatformat are slow per cell).
    Returns the note on channels the uploads did not record (patients.thumbnails)."""
    channels_note = label_cells(cells)
    for c in cells:
        expl = c.explanation or {}
        c.prob_text = f"{c.ctc_probability:.2f}"
        c.category_text = category_label(c.category)
        c.disagree = not c.reviewed_call and call_category_disagree(c.call, c.category)
        # Issue 13: plain words on the page, the technical name on hover (dashboard/review_labels.py).
        c.branches = [(branch_label(name), f"{float(w) * 100:.0f}%", f"{float(w):.3f}", name)
                      for name, w in (expl.get("branch_contributions") or {}).items()]
        c.branch_title = ", ".join(f"{name} {pct}" for name, pct, _, _ in c.branches)
        c.attrs = [
            {"name": a.get("name", ""), "label": attribute_label(a.get("name", "")),
             "value": f"{float(a.get('value', 0)):.2f}",
             "toward": a.get("direction") == "toward_ctc" or float(a.get("effect", 0)) > 0}
            for a in (expl.get("top_attributes") or [])[:3] if isinstance(a, dict)
        ]
    return channels_note


SORTS = {
    # Issue 13: on the logit scale (CellEvent.review_rank): P 0.01 is sure, not uncertain.
    "uncertainty": (F("review_rank").asc(nulls_last=True), "margin", "pk"),
    "probability": ("-ctc_probability", "pk"),
    "index": ("upload_id", "index"),
}


def _final_call_q(call: str) -> Q:
    return Q(reviewed_call=call) | Q(reviewed_call="", call=call)


#: uploads whose channel list is never proposed again: a withdrawn one is often one sent in the wrong
#: order, a failed one often failed because of its channel list
_NOT_PROPOSED = (UploadStatus.WITHDRAWN, UploadStatus.FAILED)


def _latest_channels(rows: list[tuple[str, list]]) -> list | None:
    """The channels of the first finished upload among ``rows`` (``(status, channels)``, newest first),
    else of the first queued or running one (it was just sent; nothing says it is wrong yet)."""
    usable = [(status, channels) for status, channels in rows if channels and status not in _NOT_PROPOSED]
    done = next((channels for status, channels in usable if status == UploadStatus.DONE), None)
    return done if done is not None else next((channels for _, channels in usable), None)


def _channels_default(draw: BloodDraw, uploads: list[ImagingUpload]) -> str:
    """The upload form's channel list: the channels of this draw's latest finished upload, else of the
    patient's latest (a lab keeps its instrument: the partner lab's three channels), else the four-channel
    default. Withdrawn and failed uploads are never proposed. ``uploads``: the draw's, newest first."""
    newest_first = sorted(uploads, key=lambda u: (u.created_at, u.pk), reverse=True)
    latest = _latest_channels([(u.status, u.channels) for u in newest_first])
    if latest is None:  # a new draw: the patient's other draws (one query, only then)
        earlier = (ImagingUpload.objects.filter(draw__patient_id=draw.patient_id)
                   .exclude(status__in=_NOT_PROPOSED).order_by("-created_at", "-pk")
                   .values_list("status", "channels")[:20])
        latest = _latest_channels(list(earlier))
    return ",".join(latest) if latest else UploadForm.DEFAULT_CHANNELS


#: page numbers above this go to ``Paginator.get_page`` (the last page) without a query of their own
_MAX_GALLERY_PAGE = 10**6


def _gallery_page(shown: QuerySet, number: str | None) -> Page:
    """The gallery's page of ``shown`` (the filtered, ordered cells), its total counted by the same
    query (``COUNT(*) OVER ()``) rather than by a ``COUNT`` of its own; as ``Paginator.get_page``:
    not a number is page 1, past the last page or below 1 the last page (then with a ``COUNT``).
    With the category choices taken from the embedding's rows, this gives back the queries the page's
    per-patient rights (``rights_on``: the user's roles on this patient) cost."""
    try:
        n = int(number) if number is not None else 1
    except ValueError:
        n = 1
    # a draw holds at most a few hundred pages: a larger number (an OFFSET past bigint) is past the end
    if 1 <= n <= _MAX_GALLERY_PAGE:
        bottom = (n - 1) * CELLS_PER_PAGE
        cells = list(shown.annotate(gallery_total=Window(Count("pk")))[bottom:bottom + CELLS_PER_PAGE])
        if cells or n == 1:
            paginator = Paginator(shown, CELLS_PER_PAGE)
            paginator.__dict__["count"] = cells[0].gallery_total if cells else 0  # the cached property
            return Page(cells, n, paginator)
    return Paginator(shown, CELLS_PER_PAGE).get_page(number)


@login_required
def draw_detail(request: HttpRequest, pk: int) -> HttpResponse:
    draw = get_object_or_404(
        BloodDraw.objects.for_user(request.user).select_related("patient__cancer_type", "summary"), pk=pk)
    summary = draw.summary_or_none
    # Newest first (ImagingUpload.Meta.ordering), said explicitly: the GROUP BY of the file count drops
    # the Meta ordering, and the table then listed the oldest first.
    uploads = list(draw.uploads.annotate(n_files=Count("files")).select_related("created_by", "withdrawn_by")
                   .order_by("-created_at", "-pk"))
    events = CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE)
    call = request.GET.get("call", "")
    category = request.GET.get("category", "")
    sort = request.GET.get("sort", "uncertainty")
    reviewed = request.GET.get("reviewed", "")
    shown = events
    if call in Call.values:
        shown = shown.filter(_final_call_q(call))
    if category:
        shown = shown.filter(category=category)
    if reviewed == "no":
        shown = shown.filter(reviewed_call="")
    elif reviewed == "yes":
        shown = shown.exclude(reviewed_call="")
    shown = shown.select_related("upload", "reviewed_by").order_by(*SORTS.get(sort, SORTS["uncertainty"]))
    page = _gallery_page(shown, request.GET.get("page"))
    cells = list(page.object_list)
    channels_note = _decorate_cells(cells)
    # Only the embedding out of each explanation (a JSON key lookup in the database): decoding
    # whole explanations for up to 3,000 events was a fixed cost of every draw page. One row more
    # than the map shows says whether these are all the draw's events: then the category filter's
    # choices come from them, without a second pass over the events.
    rows = list(events.order_by("pk").values_list(
        "pk", "call", "reviewed_call", "source", "ctc_probability", "explanation__embedding",
        "category")[:EMBEDDING_POINTS + 1])
    points = [
        (pk_, reviewed_call or model_call, source, prob, embedding if isinstance(embedding, list) else [])
        for pk_, model_call, reviewed_call, source, prob, embedding, _ in rows[:EMBEDDING_POINTS]
    ]
    categories = (sorted({row[6] for row in rows}) if len(rows) <= EMBEDDING_POINTS
                  else sorted(events.order_by().values_list("category", flat=True).distinct()))
    embedding = figures.to_json(figures.embedding_figure(points)) if any(p[4] for p in points) else None
    last_channels = _channels_default(draw, uploads)
    thresholds = registry.thresholds(
        {u.model_version for u in uploads if u.status == UploadStatus.DONE and u.model_version})
    cutoff = draw.patient.cancer_type.ctc_cutoff
    # The same words as the patient page: Poisson interval, and "indeterminate until reviewed"
    # while a preliminary count's model range straddles the cut-off (patients.summary).
    reading = reading_of(draw)
    status_text, interval_note = reading.status(cutoff) if reading else (None, "")
    # The count itself against the cut-off (schedule.at_or_above_cutoff owns the rule): red when at or above
    # it, also while the status reads "indeterminate until reviewed", as on the patient page and list.
    unfavorable = schedule.at_or_above_cutoff(reading.value if reading else None, cutoff)
    record(request, "view", draw, patient=draw.patient)
    return render(request, "dashboard/draw_detail.html", base_context(
        request, nav="patients", draw=draw, patient=draw.patient, summary=summary, uploads=uploads, page=page,
        cells=cells, channels_note=channels_note,
        categories=categories, filters={"call": call, "category": category, "sort": sort, "reviewed": reviewed},
        embedding=embedding, upload_form=UploadForm(initial={"channels": last_channels}),
        active_uploads=[u for u in uploads if u.status in (UploadStatus.QUEUED, UploadStatus.RUNNING)],
        cutoff=cutoff, thresholds=thresholds,
        categories_labelled=[(c, category_label(c)) for c in categories],
        draw_final=summary is not None and summary.status in ("final", "amended"),
        domain_shifted=_domain_shifted(uploads),
        # finished uploads and no summary: every one found no cell (an empty field, a blank DAPI)
        analysed_nothing=0 if summary else sum(u.status == UploadStatus.DONE for u in uploads),
        reading=reading, status_text=status_text, interval_note=interval_note, unfavorable=unfavorable,
        # The upload form, "Withdraw upload", "Review this draw", "Change review" and the re-run form
        # follow the role in *this* patient's care team (the checks of the views they post to).
        rights=rights_on(request, draw),
    ))


def _domain_shifted(uploads: list[ImagingUpload]) -> list[ImagingUpload]:
    """Analysed uploads whose images differ from the model's validated domain (classifier.domain):
    the draw page says so above the result, with the reasons, so every call gets reviewed."""
    return [u for u in uploads if u.status == UploadStatus.DONE and isinstance(u.domain_check, dict)
            and u.domain_check.get("status") == "shifted"]


def shifted_uploads(draw: BloodDraw) -> list[ImagingUpload]:
    """:func:`_domain_shifted` of the draw's finished uploads (newest first, with ``n_files``) for a page
    that has not loaded them: the review page shows the same warning (dashboard/_domain_warning.html)."""
    return _domain_shifted(list(draw.uploads.filter(status=UploadStatus.DONE, domain_check__status="shifted")
                                .annotate(n_files=Count("files")).order_by("-created_at", "-pk")))
