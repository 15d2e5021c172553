"""The patient list, the patient page (timeline, draws, schedule), a new draw, the printable
summary and the patient's CSV."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import figures
from dashboard.access import patient_for, rights_on
from dashboard.forms import DrawForm, PatientFilterForm, errors_text
from dashboard.views.common import base_context, csv_response
from patients import cohort as cohort_stats
from patients import drawdomain, outcomes, schedule
from patients.audit import record
from patients.models import BloodDraw, ClinicalEvent, ImagingUpload, Patient, TreatmentLine
from patients.report import representative_cells, sign_offs
from patients.roles import Action
from patients.summary import Reading, change_sentence, reading_of, sentence_for_draws, significant_trend

PATIENTS_PER_PAGE = 25


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
    analysed: dict[int, list[tuple[int, Reading]]] = {p.pk: [] for p in patients}
    for patient_id, pk, drawn_at, value, status, timepoint, volume, count, cmin, cmax in (
        BloodDraw.objects.filter(patient__in=[p.pk for p in patients])
        .order_by("patient_id", "-drawn_at", "-pk")
        .values_list("patient_id", "pk", "drawn_at", "summary__ctc_per_7_5ml", "summary__status", "timepoint",
                     "volume_ml", "summary__ctc_count", "summary__ctc_count_min", "summary__ctc_count_max")
    ):
        draws[patient_id].append((drawn_at, value, status, pk))
        if value is not None:  # issue 14: counts and volumes for the interval, the range and the change test
            analysed[patient_id].append((pk, Reading(timepoint, value, count, float(volume), status, cmin, cmax)))
    latest_of = {pid: next((d for d in mine if d[1] is not None), None) for pid, mine in draws.items()}
    # the latest two counts' domain checks (one query): a count from images unlike the validated ones is
    # flagged here too, and a change resting on one is not tested (patients.summary.untested_reason)
    domains = drawdomain.for_draws(pk for mine in analysed.values() for pk, _ in mine[:2])
    readings = {pid: [replace(r, shifted=pk in domains and domains[pk].shifted) for pk, r in mine[:2]]
                for pid, mine in analysed.items()}
    today = timezone.localdate()
    for p in patients:
        mine = draws[p.pk]
        latest = latest_of[p.pk]
        p.n_draws = len(mine)
        p.last_drawn = mine[0][0] if mine else None
        p.latest_value = latest[1] if latest else None
        p.latest_status = latest[2] if latest else ""
        p.latest_url = reverse("dashboard:draw", args=[latest[3]]) if latest else ""
        p.latest_domain = domains.get(latest[3]) if latest else None
        p.unfavorable = schedule.at_or_above_cutoff(p.latest_value, p.cancer_type.ctc_cutoff)
        mine_r = readings[p.pk]
        # Arrows only for changes beyond counting noise (exact two-rate test, alpha 0.05).
        previous_r, latest_r = (mine_r[1] if len(mine_r) > 1 else None), (mine_r[0] if mine_r else None)
        p.trend, p.trend_test = significant_trend(previous_r, latest_r, p.cancer_type.ctc_cutoff)
        p.change_sentence = change_sentence(previous_r, latest_r, p.cancer_type.ctc_cutoff)
        p.status_text, p.interval_note = (mine_r[0].status(p.cancer_type.ctc_cutoff) if mine_r else (None, ""))
        p.ci = mine_r[0].ci() if mine_r else None
        p.latest_range = (mine_r[0].count_min, mine_r[0].count_max) if mine_r else (None, None)
        due = schedule.due(p.last_drawn, p.trial.draw_interval_days if p.trial else None, today)
        p.next_due, p.days_overdue = due.next_due, due.days_overdue
    record(request, "view", object_type="PatientList", detail={"page": page.number, "filters": request.GET.dict()})
    return render(request, "dashboard/patient_list.html", base_context(
        request, nav="patients", form=form, page=page, patients=patients, total=page.paginator.count,
        overdue_only=overdue_only,
        # Nobody's patients vs. filters that match none: an empty page says which.
        no_patients_at_all=page.paginator.count == 0 and not visible.exists()))


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
            shifted=bool(d.domain and d.domain.shifted), domain_reasons=d.domain.reasons if d.domain else (),
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
            "id", "draw_id", "status", "progress", "created_at", "domain_check").order_by("-created_at")))
        .order_by("drawn_at", "pk")
    )
    for d in draws:
        d.summary_row = d.summary_or_none
        d.latest_upload = d.uploads.all()[0] if d.uploads.all() else None
        # Beside the count only: a draw without one (not analysed, no cell found) shows no flag.
        d.domain = drawdomain.of_uploads(d.uploads.all()) if d.summary_row else None
        # Issue 14: the count's 95 % interval and the status words (indeterminate until reviewed / at this volume).
        d.reading = reading_of(d, d.domain)
        d.unfavorable = schedule.at_or_above_cutoff(d.reading.value if d.reading else None,
                                                    patient.cancer_type.ctc_cutoff)
        d.ci = d.reading.ci() if d.reading else None
        d.status_text, d.interval_note = (d.reading.status(patient.cancer_type.ctc_cutoff) if d.reading
                                          else (None, ""))
    lines = list(patient.treatment_lines.order_by("line_number"))
    events = list(patient.clinical_events.order_by("date", "pk"))
    return patient, draws, lines, events


def _domains(draws: list[BloodDraw]) -> dict[int, drawdomain.DrawDomain]:
    """The domain checks :func:`_patient_data` read, by draw id (for the status sentence)."""
    return {d.pk: d.domain for d in draws if d.domain is not None}


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
        sentence=sentence_for_draws(draws, patient.cancer_type.ctc_cutoff, _domains(draws)),
        next_due=due.next_due, days_overdue=due.days_overdue, interval=due.interval,
        draw_form=DrawForm.from_session(request),
        # Export, "Record a blood draw" and the outcomes form follow the role in *this* patient's team.
        rights=rights_on(request, patient),
    ))


@login_required
@require_POST
def draw_create(request: HttpRequest, pk: int) -> HttpResponse:
    patient = patient_for(request, pk, Action.EDIT_RECORDS)
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
    signed = sign_offs([d.pk for d in draws])
    for d in draws:
        d.sign_off = signed.get(d.pk)
    analysed = [d for d in draws if d.summary_row]
    latest = analysed[-1] if analysed else None
    return render(request, "dashboard/patient_print.html", base_context(
        request, patient=patient, draws=draws, lines=lines, events=events, figure=fig,
        sentence=sentence_for_draws(draws, patient.cancer_type.ctc_cutoff, _domains(draws)), printed_at=timezone.now(),
        latest=latest, cells=representative_cells(latest.pk) if latest else [],
        recent_draws=draws[-8:], older_draws=max(0, len(draws) - 8)))


@login_required
def patient_export(request: HttpRequest, pk: int) -> HttpResponse:
    patient = patient_for(request, pk, Action.EXPORT)
    courses = cohort_stats.patient_courses(Patient.objects.filter(pk=patient.pk))
    record(request, "export", patient, detail={"format": "csv"})
    return csv_response(f"{patient.study_id}-draws.csv", outcomes.draws_csv_rows(courses))
