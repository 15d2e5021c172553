"""The pages people use: patient list and timeline, draw gallery, review queue, cohort, models.

Every view requires a signed-in user, reads through ``for_user`` (out of scope is a
404), checks actions with ``patients.roles.can`` (a forbidden action on a visible
object is a 403) and records the read with ``patients.audit.record``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
from functools import lru_cache
from pathlib import Path

import plotly
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Prefetch, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from dashboard import figures
from dashboard.access import actions_for, require
from dashboard.forms import CohortFilterForm, DrawForm, PatientFilterForm, UploadForm, errors_text
from dashboard.labels import call_category_disagree, category_label
from dashboard.review_labels import attribute_label, branch_label
from patients import cohort as cohort_stats
from patients import registry, schedule
from patients.audit import record
from patients.duplicates import refuse_duplicates
from patients.models import (
    BloodDraw,
    Call,
    CellEvent,
    ClassifierVersion,
    ClinicalEvent,
    DrawSummary,
    ImagingUpload,
    Patient,
    TreatmentLine,
    UploadStatus,
)
from patients.roles import Action, can
from patients.summary import Reading, reading_of, significant_trend
from patients.uploads import UploadRequest, create_upload, draw_is_final, withdraw_upload

PATIENTS_PER_PAGE = 25
CELLS_PER_PAGE = 48
SWIMMER_LANES = 40
EMBEDDING_POINTS = 3000


def base_context(request: HttpRequest, **extra) -> dict:
    actions = actions_for(request)
    ctx = {"can": {a.value: (a in actions) for a in Action}}
    ctx.update(extra)
    return ctx


# --- plotly.js from the installed package (clinics are often offline: no CDN) -----------

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@lru_cache(maxsize=1)
def _plotly_bytes() -> tuple[bytes, bytes, str]:
    raw = PLOTLY_JS.read_bytes()
    return raw, gzip.compress(raw, compresslevel=6), hashlib.sha256(raw).hexdigest()[:16]


@require_GET
def plotly_js(request: HttpRequest, version: str) -> HttpResponse:
    """The plotly.js bundled with the Python package; the URL carries the version, so cache forever."""
    if version != plotly.__version__:
        return redirect("dashboard:plotly_js", version=plotly.__version__)
    raw, packed, etag = _plotly_bytes()
    if request.headers.get("If-None-Match") == f'"{etag}"':
        response = HttpResponse(status=304)
    elif "gzip" in request.headers.get("Accept-Encoding", ""):
        response = HttpResponse(packed, content_type="application/javascript; charset=utf-8")
        response["Content-Encoding"] = "gzip"
    else:
        response = HttpResponse(raw, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["ETag"] = f'"{etag}"'
    response["Vary"] = "Accept-Encoding"
    return response


# --- Patient list ---------------------------------------------------------------------------


@login_required
def patient_list(request: HttpRequest) -> HttpResponse:
    visible = Patient.objects.for_user(request.user)
    form = PatientFilterForm(request.GET or None, patients=visible)
    qs = form.apply(visible) if form.is_bound else visible
    overdue_only = form.is_bound and form.is_valid() and form.cleaned_data["overdue"]
    if overdue_only:
        qs = qs.filter(pk__in=schedule.overdue_ids(qs))
    qs = qs.select_related("cancer_type", "care_team", "trial", "arm").order_by("study_id")
    page = Paginator(qs, PATIENTS_PER_PAGE).get_page(request.GET.get("page"))
    patients = list(page.object_list)
    # Draws of this page's patients only (one query, summaries joined, no cell events): the
    # last draw, the number of draws, the latest two analysed counts.
    draws: dict[int, list[tuple]] = {p.pk: [] for p in patients}
    readings: dict[int, list[Reading]] = {p.pk: [] for p in patients}
    for patient_id, drawn_at, value, status, timepoint, volume, count, cmin, cmax in (
        BloodDraw.objects.filter(patient__in=[p.pk for p in patients])
        .order_by("patient_id", "-drawn_at", "-pk")
        .values_list("patient_id", "drawn_at", "summary__ctc_per_7_5ml", "summary__status", "timepoint",
                     "volume_ml", "summary__ctc_count", "summary__ctc_count_min", "summary__ctc_count_max")
    ):
        draws[patient_id].append((drawn_at, value, status))
        if value is not None:  # issue 14: counts and volumes for the interval, the range and the change test
            readings[patient_id].append(Reading(timepoint, value, count, float(volume), status, cmin, cmax))
    today = timezone.localdate()
    for p in patients:
        mine = draws[p.pk]
        analysed = [(v, st) for _, v, st in mine if v is not None]
        latest = analysed[0] if analysed else None
        p.n_draws = len(mine)
        p.last_drawn = mine[0][0] if mine else None
        p.latest_value = latest[0] if latest else None
        p.latest_status = latest[1] if latest else ""
        p.unfavorable = schedule.ctc_status(p.latest_value, p.cancer_type.ctc_cutoff) == schedule.UNFAVORABLE
        mine_r = readings[p.pk]
        # Arrows only for changes beyond counting noise (exact two-rate test, alpha 0.05).
        p.trend, p.trend_test = significant_trend(mine_r[1] if len(mine_r) > 1 else None,
                                                  mine_r[0] if mine_r else None)
        p.status_text, p.interval_note = (mine_r[0].status(p.cancer_type.ctc_cutoff) if mine_r else (None, ""))
        p.ci = mine_r[0].ci() if mine_r else None
        due = schedule.due(p.last_drawn, p.trial.draw_interval_days if p.trial else None, today)
        p.next_due, p.days_overdue = due.next_due, due.days_overdue
    record(request, "view", object_type="PatientList", detail={"page": page.number, "filters": request.GET.dict()})
    return render(request, "dashboard/patient_list.html", base_context(
        request, nav="patients", form=form, page=page, patients=patients, total=page.paginator.count,
        overdue_only=overdue_only,
        # Nobody's patients vs. filters that match none: an empty page says which.
        no_patients_at_all=page.paginator.count == 0 and not visible.exists()))


# --- Patient page ---------------------------------------------------------------------------

DAY0_CHOICES = [("diagnosis", "Diagnosis"), ("treatment", "First treatment"), ("enrolment", "Enrolment")]


def _patient_timeline(patient: Patient, draws: list[BloodDraw], lines: list[TreatmentLine],
                      events: list[ClinicalEvent], day0_key: str, relative: bool) -> tuple[dict, dt.date | None]:
    starts = {
        "diagnosis": patient.diagnosis_date,
        "treatment": lines[0].start_date if lines else None,
        "enrolment": patient.enrolled_on,
    }
    day0 = starts.get(day0_key)
    fig = figures.timeline_figure(
        [figures.TimelineDraw(
            d.pk, d.get_absolute_url(), timezone.localtime(d.drawn_at), d.timepoint, float(d.volume_ml),
            d.summary_row.ctc_count if d.summary_row else None,
            d.summary_row.ctc_per_7_5ml if d.summary_row else None,
            d.summary_row.malignant_fraction if d.summary_row else None,
            d.summary_row.status if d.summary_row else "",
            d.summary_row.ctc_count_min if d.summary_row else None,
            d.summary_row.ctc_count_max if d.summary_row else None,
        ) for d in draws],
        [figures.TimelineLine(ln.line_number, ln.regimen, ln.start_date, ln.end_date, ln.stop_reason) for ln in lines],
        [figures.TimelineEvent(e.date, e.kind, e.get_kind_display(), e.recist, e.note) for e in events],
        cutoff=patient.cancer_type.ctc_cutoff, day0=day0, relative=relative, today=timezone.localdate(),
    )
    return figures.to_json(fig), day0


def _patient_data(request: HttpRequest, pk: int) -> tuple[Patient, list[BloodDraw], list, list]:
    patient = get_object_or_404(
        Patient.objects.for_user(request.user).select_related("cancer_type", "care_team", "trial", "arm"), pk=pk)
    draws = list(
        patient.draws.select_related("summary")
        .prefetch_related(Prefetch("uploads", queryset=ImagingUpload.objects.only(
            "id", "draw_id", "status", "progress", "created_at").order_by("-created_at")))
        .order_by("drawn_at", "pk")
    )
    for d in draws:
        d.summary_row = d.summary_or_none
        d.latest_upload = d.uploads.all()[0] if d.uploads.all() else None
        # Issue 14: the count's 95 % interval and the status words (indeterminate until reviewed / at this volume).
        d.reading = reading_of(d)
        d.unfavorable = schedule.ctc_status(d.reading.value if d.reading else None,
                                            patient.cancer_type.ctc_cutoff) == schedule.UNFAVORABLE
        d.ci = d.reading.ci() if d.reading else None
        d.status_text, d.interval_note = (d.reading.status(patient.cancer_type.ctc_cutoff) if d.reading
                                          else (None, ""))
    lines = list(patient.treatment_lines.order_by("line_number"))
    events = list(patient.clinical_events.order_by("date", "pk"))
    return patient, draws, lines, events


@login_required
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    patient, draws, lines, events = _patient_data(request, pk)
    day0_key = request.GET.get("day0", "diagnosis")
    if day0_key not in dict(DAY0_CHOICES):
        day0_key = "diagnosis"
    relative = request.GET.get("axis", "calendar") == "relative"
    fig, day0 = _patient_timeline(patient, draws, lines, events, day0_key, relative)
    due = schedule.due(draws[-1].drawn_at if draws else None,
                       patient.trial.draw_interval_days if patient.trial else None)
    record(request, "view", patient)
    return render(request, "dashboard/patient_detail.html", base_context(
        request, nav="patients", patient=patient, draws=list(reversed(draws)), lines=lines, events=events, figure=fig,
        day0_key=day0_key, day0=day0, relative=relative, day0_choices=DAY0_CHOICES,
        day0_missing=relative and day0 is None,
        sentence=schedule.sentence_for_draws(draws, patient.cancer_type.ctc_cutoff),
        next_due=due.next_due, days_overdue=due.days_overdue, interval=due.interval,
        draw_form=DrawForm.from_session(request),
    ))


@login_required
@require_POST
def draw_create(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    require(request, Action.EDIT_RECORDS)
    form = DrawForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The draw was not saved: " + errors_text(form))
        DrawForm.keep_typed(request)  # issue 13: the patient page shows the typed values again
        return redirect(patient)
    draw = form.save(commit=False)
    draw.patient = patient
    draw.created_by = request.user
    draw.save()
    messages.success(request, f"Draw {draw.timepoint} recorded. Upload its imaging below.")
    return redirect(draw)


@login_required
def patient_print(request: HttpRequest, pk: int) -> HttpResponse:
    patient, draws, lines, events = _patient_data(request, pk)
    fig, _ = _patient_timeline(patient, draws, lines, events, "diagnosis", relative=False)
    record(request, "view", patient, detail={"format": "print"})
    from patients.report import representative_cells, sign_offs

    signed = sign_offs([d.pk for d in draws])
    for d in draws:
        d.sign_off = signed.get(d.pk)
    analysed = [d for d in draws if d.summary_row]
    latest = analysed[-1] if analysed else None
    return render(request, "dashboard/patient_print.html", base_context(
        request, patient=patient, draws=draws, lines=lines, events=events, figure=fig,
        sentence=schedule.sentence_for_draws(draws, patient.cancer_type.ctc_cutoff), printed_at=timezone.now(),
        latest=latest, cells=representative_cells(latest.pk) if latest else [],
        recent_draws=draws[-8:], older_draws=max(0, len(draws) - 8)))


def _csv_response(filename: str, rows) -> StreamingHttpResponse:  # noqa: ANN001 - iterable of lists
    class Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Echo())
    response = StreamingHttpResponse((writer.writerow(r) for r in rows), content_type="text/csv; charset=utf-8")
    # Django's RFC 6266 helper: quotes and backslashes escaped, anything else non-printable (a CR/LF
    # in a study ID stored before identifiers were checked) as filename*=utf-8''..., never raw.
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "no-store"
    return response


@login_required
def patient_export(request: HttpRequest, pk: int) -> HttpResponse:
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    require(request, Action.EXPORT)
    courses = cohort_stats.patient_courses(Patient.objects.filter(pk=patient.pk))
    record(request, "export", patient, detail={"format": "csv"})
    return _csv_response(f"{patient.study_id}-draws.csv", cohort_stats.csv_rows(courses))


# --- Draw page ------------------------------------------------------------------------------


def _decorate_cells(cells: list[CellEvent]) -> None:
    """Precompute what a cell card shows (template filters such as floatformat are slow per cell)."""
    for c in cells:
        c.channels = ",".join(c.upload.result_channels or c.upload.channels)
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

def model_threshold(metadata: dict | None) -> float | None:
    """The operating point a version calls CTC at (``P(CTC) >= threshold``), from its metadata."""
    value = (metadata or {}).get("threshold")
    return float(value) if isinstance(value, int | float) else None


def _call_thresholds(versions: set[str]) -> list[tuple[str, float]]:
    """``(model version, threshold)`` for the versions that produced a draw's results (one query)."""
    if not versions:
        return []
    rows = ClassifierVersion.objects.filter(version__in=versions).values_list("version", "metadata")
    return sorted((v, t) for v, meta in rows if (t := model_threshold(meta)) is not None)


SORTS = {
    # Issue 13: on the logit scale (CellEvent.review_rank): P 0.01 is sure, not uncertain.
    "uncertainty": (F("review_rank").asc(nulls_last=True), "margin", "pk"),
    "probability": ("-ctc_probability", "pk"),
    "index": ("upload_id", "index"),
}


def _final_call_q(call: str) -> Q:
    return Q(reviewed_call=call) | Q(reviewed_call="", call=call)


@login_required
def draw_detail(request: HttpRequest, pk: int) -> HttpResponse:
    draw = get_object_or_404(
        BloodDraw.objects.for_user(request.user).select_related("patient__cancer_type", "summary"), pk=pk)
    summary = draw.summary_or_none
    uploads = list(draw.uploads.annotate(n_files=Count("files")).select_related("created_by", "withdrawn_by"))
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
    page = Paginator(shown, CELLS_PER_PAGE).get_page(request.GET.get("page"))
    cells = list(page.object_list)
    _decorate_cells(cells)
    categories = sorted(events.order_by().values_list("category", flat=True).distinct())
    # Only the embedding out of each explanation (a JSON key lookup in the database): decoding
    # whole explanations for up to 3,000 events was a fixed cost of every draw page.
    points = [
        (pk_, reviewed_call or model_call, source, prob, embedding if isinstance(embedding, list) else [])
        for pk_, model_call, reviewed_call, source, prob, embedding in events.order_by("pk").values_list(
            "pk", "call", "reviewed_call", "source", "ctc_probability", "explanation__embedding")[:EMBEDDING_POINTS]
    ]
    embedding = figures.to_json(figures.embedding_figure(points)) if any(p[4] for p in points) else None
    last_channels = next((",".join(u.channels) for u in uploads if u.channels), UploadForm.DEFAULT_CHANNELS)
    thresholds = _call_thresholds(
        {u.model_version for u in uploads if u.status == UploadStatus.DONE and u.model_version})
    cutoff = draw.patient.cancer_type.ctc_cutoff
    # The same words as the patient page: Poisson interval, and "indeterminate until reviewed"
    # while a preliminary count's model range straddles the cut-off (patients.summary).
    reading = reading_of(draw)
    status_text, interval_note = reading.status(cutoff) if reading else (None, "")
    record(request, "view", draw, patient=draw.patient)
    return render(request, "dashboard/draw_detail.html", base_context(
        request, nav="patients", draw=draw, patient=draw.patient, summary=summary, uploads=uploads, page=page,
        cells=cells,
        categories=categories, filters={"call": call, "category": category, "sort": sort, "reviewed": reviewed},
        embedding=embedding, upload_form=UploadForm(initial={"channels": last_channels}),
        active_uploads=[u for u in uploads if u.status in (UploadStatus.QUEUED, UploadStatus.RUNNING)],
        cutoff=draw.patient.cancer_type.ctc_cutoff, thresholds=thresholds,
        categories_labelled=[(c, category_label(c)) for c in categories],
        draw_final=summary is not None and summary.status in ("final", "amended"),
        domain_shifted=_domain_shifted(uploads),
        reading=reading, status_text=status_text, interval_note=interval_note,
    ))


def _domain_shifted(uploads: list[ImagingUpload]) -> list[ImagingUpload]:
    """Analysed uploads whose images differ from the model's validated domain (classifier.domain):
    the draw page says so above the result, with the reasons, so every call gets reviewed."""
    return [u for u in uploads if u.status == UploadStatus.DONE and isinstance(u.domain_check, dict)
            and u.domain_check.get("status") == "shifted"]


def _upload_json(upload: ImagingUpload) -> dict:
    return {
        "id": upload.pk,
        "status": upload.status,
        "status_label": upload.get_status_display(),
        "progress": upload.progress,
        "stage": upload.stage,
        "error": upload.error,
        "status_url": reverse("dashboard:upload_status", args=[upload.pk]),
        "draw_url": reverse("dashboard:draw", args=[upload.draw_id]),
    }


@login_required
@require_POST
def upload_create(request: HttpRequest, pk: int) -> JsonResponse:
    """The upload form posts here (fetch); JSON back: the upload and where to poll its status."""
    draw = get_object_or_404(BloodDraw.objects.for_user(request.user), pk=pk)
    if not can(request.user, Action.UPLOAD):
        return JsonResponse({"error": "Your role does not allow uploads."}, status=403)
    form = UploadForm(request.POST, request.FILES)
    files = request.FILES.getlist("files")
    if not files:
        return JsonResponse({"error": "Choose at least one image file."}, status=400)
    if not form.is_valid():
        errors = {k: v for k, v in form.errors.items() if k != "files"}
        if errors:
            msg = "; ".join(f"{form.fields[k].label}: {' '.join(v)}" for k, v in errors.items())
            return JsonResponse({"error": msg}, status=400)
    data = form.cleaned_data
    if draw_is_final(draw) and request.POST.get("confirm_final") not in ("1", "on", "true"):
        return JsonResponse({"error": "This draw is final; adding imaging makes it preliminary again. "
                                      "Tick the confirmation to upload anyway."}, status=400)
    try:
        # Issue 13: the same files again are refused unless the user ticks the confirmation.
        refuse_duplicates(draw, files, bool(data.get("confirm_duplicates")))
    except ValidationError as err:
        return JsonResponse({"error": " ".join(err.messages), "duplicate": True}, status=409)
    try:
        upload = create_upload(draw, UploadRequest(files=files, channels=data.get("channels") or "",
                                                   kind=data.get("kind") or ImagingUpload.Kind.EVENTS,
                                                   pixel_size_um=data.get("pixel_size_um")), request.user)
    except ValidationError as err:
        return JsonResponse({"error": " ".join(err.messages)}, status=400)
    record(request, "create", upload, patient=draw.patient, detail={"files": len(files)})
    for warning in upload.warnings:
        messages.warning(request, warning)  # shown on the draw page the progress bar reloads
    return JsonResponse({**_upload_json(upload), "warnings": upload.warnings}, status=201)


@login_required
@require_POST
def upload_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw a mistaken upload (reason required): its events leave the draw's count."""
    upload = get_object_or_404(ImagingUpload.objects.for_user(request.user).select_related("draw"), pk=pk)
    require(request, Action.UPLOAD)
    try:
        withdraw_upload(upload, request.user, request.POST.get("reason", ""), request=request)
    except ValidationError as err:
        messages.error(request, f"Upload {upload.pk}: {' '.join(err.messages)}")
    else:
        messages.success(request, f"Upload {upload.pk} withdrawn: its cells no longer count for this draw.")
    return redirect(upload.draw)


@login_required
@require_GET
def upload_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the progress bar about once a second: not audited per poll (the upload's
    creation and the draw page are), to keep the audit trail readable."""
    upload = get_object_or_404(ImagingUpload.objects.for_user(request.user), pk=pk)
    data = _upload_json(upload)
    if upload.status == UploadStatus.DONE:
        data["events"] = upload.events.count()
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response


# --- Review: dashboard/review_views.py (issue 13) ------------------------------------------


# --- Cohort ---------------------------------------------------------------------------------


def _cohort_patients(request: HttpRequest):  # noqa: ANN202
    visible = Patient.objects.for_user(request.user)
    form = CohortFilterForm(request.GET or None, patients=visible)
    return form, (form.apply(visible) if form.is_bound else visible)


def _cohort_body(patients: QuerySet, today: dt.date, landmark: str = "") -> dict:
    """The data part of the cohort page, rendered: what :func:`cohort` caches.

    Building 1,000 courses, three figures and the overdue table is most of the page's
    time; none of it depends on who asks beyond which patients they see, which is in
    the cache key (``cohort_stats.cached``).
    """
    extra = {"landmark": landmark} if landmark else {}
    courses = cohort_stats.patient_courses(patients, with_lines=True, **extra)
    arms = cohort_stats.arm_summaries(courses)
    bars = cohort_stats.waterfall(courses)
    by_arm = cohort_stats.conversion_by_arm(courses)
    lanes_src = [c for c in courses if c.lines or c.draws]
    lanes = [figures.SwimmerLane(
        c.study_id, reverse("dashboard:patient", args=[c.patient_id]),
        c.start or (c.lines[0][2] if c.lines else c.draws[0].date),
        c.lines, [(d.date, d.timepoint, d.per_7_5ml, d.status) for d in c.draws],
    ) for c in lanes_src[:SWIMMER_LANES]]
    overdue = schedule.overdue_patients(patients, today)
    html = render_to_string("dashboard/_cohort_body.html", {
        "arms": arms,
        "waterfall": figures.to_json(figures.waterfall_figure(bars, cohort_stats.CHANGE_CAP)) if bars else None,
        "conversion": figures.to_json(figures.conversion_figure(by_arm, cohort_stats.CONVERSION_LABELS))
        if by_arm else None,
        "swimmer": figures.to_json(figures.swimmer_figure(lanes, today)) if lanes else None,
        "lanes_total": len(lanes_src), "lanes_shown": len(lanes), "overdue": overdue[:100],
        "prelim": cohort_stats.preliminary_share(courses),
        "overdue_total": len(overdue), "landmark": landmark,
    })
    return {"html": str(html), "n_patients": len(courses)}


@login_required
def cohort(request: HttpRequest) -> HttpResponse:
    require(request, Action.COHORT)
    form, patients = _cohort_patients(request)
    today = timezone.localdate()
    # Keyed by the visible (filtered) patients and a data stamp bumped by every write the
    # page reads (patients/cache.py): a new summary shows at once, and users who see
    # different patients never share an entry. The day is in the key: "overdue" moves with it.
    landmark = form.landmark()  # issue 14: the follow-up timepoint the coordinator chose ("" = latest)
    body = cohort_stats.cached(patients, f"dashboard-page:{today.isoformat()}:{landmark}",
                               lambda: _cohort_body(patients, today, landmark))
    record(request, "view", object_type="Cohort",
           detail={"filters": request.GET.dict(), "patients": body["n_patients"]})
    return render(request, "dashboard/cohort.html", base_context(
        request, nav="cohort", form=form, n_patients=body["n_patients"],
        body=mark_safe(body["html"]),  # noqa: S308 - our own template's output, escaped when rendered
        query=request.GET.urlencode(), landmark=landmark,
    ))


@login_required
def cohort_export(request: HttpRequest) -> HttpResponse:
    require(request, Action.COHORT)
    require(request, Action.EXPORT)
    form, patients = _cohort_patients(request)
    courses = cohort_stats.patient_courses(patients, landmark=form.landmark())
    record(request, "export", object_type="Cohort", detail={"format": "csv", "filters": request.GET.dict(),
                                                            "patients": len(courses)})
    return _csv_response(f"cohort-{timezone.localdate():%Y%m%d}.csv", cohort_stats.csv_rows(courses))


# --- Models ---------------------------------------------------------------------------------


_METRIC_KEYS = {
    "n": ("n", "n_eval"),
    "accuracy": ("accuracy", "acc"),
    "balanced_accuracy": ("balanced_accuracy",),
    "auc": ("roc_auc", "auc"),
    "sensitivity": ("sensitivity", "recall"),
    "specificity": ("specificity",),
    "ece": ("ece", "expected_calibration_error"),
    "brier": ("brier",),
}


def _one_evaluation(name: str, src: dict) -> dict | None:
    out: dict = {"name": name}
    for key, candidates in _METRIC_KEYS.items():
        out[key] = next((src[k] for k in candidates if isinstance(src.get(k), int | float)), None)
    cm = src.get("confusion_matrix", src.get("confusion"))
    if isinstance(cm, dict) and {"tp", "fp", "tn", "fn"} <= set(cm):
        out["confusion"] = [[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]
        out["confusion_labels"] = ["Not CTC", "CTC"]
    elif isinstance(cm, list) and cm and all(isinstance(r, list) for r in cm):
        out["confusion"] = cm
        out["confusion_labels"] = src.get("confusion_labels") or (
            ["Not CTC", "CTC"] if len(cm) == 2 else [str(i) for i in range(len(cm))])
    roc = src.get("roc") or src.get("roc_curve")
    if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
        out["roc"] = (roc["fpr"], roc["tpr"])
    if out["accuracy"] is None and out["auc"] is None and "confusion" not in out:
        return None
    return out


def _evaluations(meta: dict) -> list[dict]:
    """Evaluation results in a version's metadata: ``metrics`` may hold one result or one per data set
    (the classifier writes ``{"synthetic_test": {...}, "<folder>": {...}}``)."""
    metrics = meta.get("metrics")
    found: list[dict] = []
    if isinstance(metrics, dict):
        flat = _one_evaluation("evaluation", metrics)
        if flat is not None:
            found.append(flat)
        else:
            for name, src in metrics.items():
                if isinstance(src, dict) and (one := _one_evaluation(name.replace("_", " "), src)):
                    found.append(one)
    elif (flat := _one_evaluation("evaluation", meta)) is not None:
        found.append(flat)
    return found


@login_required
def models_page(request: HttpRequest) -> HttpResponse:
    versions = list(ClassifierVersion.objects.order_by("-is_active", "retired", "-created_at"))
    counts = {
        row["model_version"]: row
        for row in DrawSummary.objects.for_user(request.user).order_by().values("model_version")
        .annotate(draws=Count("pk"), events=Sum("events_analysed"), ctc=Sum("ctc_count"))
    }
    for v in versions:
        meta = v.metadata or {}
        v.evaluations = _evaluations(meta)
        v.threshold = model_threshold(meta)
        v.threshold_rule = meta.get("threshold_rule") or ""
        v.counts = counts.get(v.version, {"draws": 0, "events": 0, "ctc": 0})
        training = meta.get("training_data") or meta.get("training") or ""
        if isinstance(training, dict):
            training = ", ".join(f"{k}: {val}" for k, val in training.items() if not isinstance(val, dict | list))
        v.training = training
        v.figures = []
        for i, ev in enumerate(v.evaluations[:3]):
            if "confusion" in ev:
                v.figures.append((f"fig-cm-{v.pk}-{i}", f"Confusion matrix · {ev['name']}",
                                  figures.to_json(figures.confusion_figure(ev["confusion"], ev["confusion_labels"]))))
            if "roc" in ev:
                v.figures.append((f"fig-roc-{v.pk}-{i}", f"ROC · {ev['name']}",
                                  figures.to_json(figures.roc_figure(*ev["roc"], ev.get("auc")))))
    record(request, "view", object_type="ClassifierVersions")
    return render(request, "dashboard/models.html", base_context(request, nav="models", versions=versions))


@login_required
@require_POST
def model_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    version = get_object_or_404(ClassifierVersion, pk=pk)
    require(request, Action.MANAGE_MODELS)
    if action == "promote":
        registry.promote(version, request)
        messages.success(request, f"{version.version} is now the active model for new uploads.")
    elif action == "retire":
        registry.retire(version, request)
        messages.success(request, f"{version.version} is retired; its past results are kept.")
    else:
        raise Http404("Unknown action")
    return redirect("dashboard:models")
