"""The cohort page (arms, waterfall, conversion, swimmer lanes, overdue draws; cached) and its CSV."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from dashboard import figures
from dashboard.access import require
from dashboard.forms import CohortFilterForm
from dashboard.views.common import base_context, csv_response
from patients import cohort as cohort_stats
from patients import drawdomain, outcomes, schedule
from patients.audit import record
from patients.models import Patient
from patients.roles import Action, patients_for_action

SWIMMER_LANES = 40


def cohort_patients(request: HttpRequest) -> tuple[CohortFilterForm, QuerySet]:
    """The cohort filter form and the visible patients it selects (the survival page uses it too):
    those whose care team (or trial) gives the user the cohort right (rights are per team)."""
    visible = patients_for_action(request.user, Action.COHORT, Patient.objects.for_user(request.user))
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
    # the draws' domain checks for the lanes shown only (one query): a count from images unlike the
    # validated ones gets an amber outline and says so on hover, as on the patient page
    domains = drawdomain.for_draws(d.draw_id for c in lanes_src[:SWIMMER_LANES] for d in c.analysed)
    lanes = [figures.SwimmerLane(
        c.study_id, reverse("dashboard:patient", args=[c.patient_id]),
        c.start or (c.lines[0][2] if c.lines else c.draws[0].date),
        c.lines, [(d.date, d.timepoint, d.per_7_5ml, d.status) for d in c.draws],
        shifted=[d.per_7_5ml is not None and d.draw_id in domains and domains[d.draw_id].shifted for d in c.draws],
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
        # conversions resting on a count indeterminate until reviewed: apart, in neither rate
        "indeterminate": sum(a.indeterminate for a in arms),
        "overdue_total": len(overdue), "landmark": landmark,
    })
    return {"html": str(html), "n_patients": len(courses)}


@login_required
def cohort(request: HttpRequest) -> HttpResponse:
    require(request, Action.COHORT)
    form, patients = cohort_patients(request)
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
    form, patients = cohort_patients(request)
    patients = patients_for_action(request.user, Action.EXPORT, patients)  # the patients they may export
    courses = cohort_stats.patient_courses(patients, landmark=form.landmark())
    record(request, "export", object_type="Cohort", detail={"format": "csv", "filters": request.GET.dict(),
                                                            "patients": len(courses)})
    return csv_response(f"cohort-{timezone.localdate():%Y%m%d}.csv", outcomes.draws_csv_rows(courses))
