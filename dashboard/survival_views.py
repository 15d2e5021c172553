"""The cohort survival page (issue 14): Kaplan–Meier by CTC status for trial coordinators.

The figures come from ``patients.outcomes.survival_analysis`` (lifelines), the same function
as ``GET /api/cohort/survival/``; this module only draws them: step curves with censoring
ticks, an at-risk table under them, medians with their 95 % CI, log-rank p, the Cox hazard
ratio of baseline status adjusted for arm and Harrell's c-index, and the notes that say what
the figures rest on (small groups are shown with a warning, not hidden). Filters are the
cohort page's (cancer type, trial, arm, site), plus endpoint, grouping and the follow-up landmark.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.access import require
from dashboard.figures import FONT, INK, MUTED, Figure, base_layout, to_json, trace
from dashboard.plotly_text import plain
from dashboard.views.cohorts import cohort_patients
from dashboard.views.common import base_context, csv_response
from patients import outcomes
from patients.audit import record
from patients.csvsafe import safe_row
from patients.roles import Action, patients_for_action
from patients.stats import p_words

#: One colour per group, in GROUP_ORDER: favorable / CTC0 / persistently favorable are green,
#: the unfavorable ends red, the converters between.
GROUP_COLOURS = {
    "favorable": "#2e7d5b", "unfavorable": "#b03a2e",
    "ctc0": "#2e7d5b", "ctc_pos": "#b03a2e",
    "persistent_favorable": "#2e7d5b", "to_favorable": "#1f5f8b", "to_unfavorable": "#c0792b",
    "persistent_unfavorable": "#b03a2e",
}


class SurvivalOptionsForm(forms.Form):
    endpoint = forms.ChoiceField(choices=list(outcomes.ENDPOINTS.items()), required=False, label="Endpoint")
    by = forms.ChoiceField(choices=list(outcomes.GROUPINGS.items()), required=False, label="Group by")
    follow_up = forms.CharField(required=False, max_length=40, label="First follow-up",
                                widget=forms.TextInput(attrs={"placeholder": "first after baseline, or C2D1…"}))


def km_figure(result: dict) -> Figure:
    """Step curves (``line.shape = hv``) per group with censoring ticks ("+")."""
    fig = Figure()
    for g in result["groups"]:
        colour = GROUP_COLOURS.get(g["key"], INK)
        name = plain(f"{g['name']} (n={g['n']}, events={g['events']})")
        fig.add_trace(trace("scatter", name=name, x=g["times"], y=g["survival"], mode="lines",
                            line={"shape": "hv", "color": colour, "width": 2.2}, legendgroup=g["key"],
                            hovertemplate="%{x:.1f} months: %{y:.2f}<extra>" + plain(g["name"]) + "</extra>"))
        ticks = g["censored_times"]
        if ticks:
            fig.add_trace(trace("scatter", name=f"censored ({plain(g['name'])})", x=ticks,
                                y=[_at(g["times"], g["survival"], t) for t in ticks], mode="markers",
                                marker={"symbol": "line-ns-open", "size": 9, "color": colour},
                                legendgroup=g["key"], showlegend=False,
                                hovertemplate="censored at %{x:.1f} months<extra></extra>"))
    fig.update_layout(**base_layout(
        420, hovermode="closest",
        xaxis={"title": {"text": "Months from day 0"}, "rangemode": "tozero", "gridcolor": "#eef1f4",
               "dtick": outcomes.AT_RISK_STEP_MONTHS},
        yaxis={"title": {"text": f"{result['endpoint_label']} (probability)"}, "range": [0, 1.02],
               "gridcolor": "#eef1f4"},
        margin={"l": 60, "r": 20, "t": 20, "b": 90},
        legend={"orientation": "h", "y": -0.22, "yanchor": "top", "x": 0, "font": {"family": FONT, "color": MUTED}},
    ))
    return fig


def _at(times: list[float], survival: list[float], t: float) -> float:
    """S(t) of a step curve (the last step at or before t)."""
    value = 1.0
    for x, s in zip(times, survival, strict=True):
        if x > t:
            break
        value = s
    return value


@login_required
def survival(request: HttpRequest) -> HttpResponse:
    require(request, Action.COHORT)
    form, patients = cohort_patients(request)
    options = SurvivalOptionsForm(request.GET or None)
    opts = options.cleaned_data if options.is_valid() else {}
    endpoint = opts.get("endpoint") or "pfs"
    by = opts.get("by") or "baseline"
    landmark = (opts.get("follow_up") or "").strip()
    records = outcomes.survival_records(patients, landmark=landmark)
    result = outcomes.survival_analysis(records, endpoint=endpoint, by=by)
    groups = result["groups"]
    for g in groups:
        g["median_text"] = _months(g["median"], "not reached")
        lo, hi = g["median_ci95"]
        g["ci_text"] = f"{_months(lo, '—')} to {_months(hi, 'not reached')}"
        g["colour"] = GROUP_COLOURS.get(g["key"], INK)
    cox = result["cox"]
    record(request, "view", object_type="Survival",
           detail={"filters": request.GET.dict(), "patients": len(records)})
    return render(request, "dashboard/survival.html", base_context(
        request, nav="survival", form=form, options=options, result=result, groups=groups,
        figure=to_json(km_figure(result)) if groups else None, endpoint=endpoint, by=by, landmark=landmark,
        logrank_text=p_words(result["logrank_p"]) if result["logrank_p"] is not None else None,
        cox=cox, cox_p=p_words(cox["p"]) if cox else None, n_patients=len(records),
        events_total=sum(g["events"] for g in groups), query=request.GET.urlencode(),
        synthetic=any(r.study_id.startswith("DEMO-") for r in records),
        today=timezone.localdate(),
    ))


def _months(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.1f}"


@login_required
def survival_export(request: HttpRequest) -> HttpResponse:
    """Per-patient survival data (time, event, group) as CSV, audited."""
    require(request, Action.COHORT)
    require(request, Action.EXPORT)
    _, patients = cohort_patients(request)
    patients = patients_for_action(request.user, Action.EXPORT, patients)  # rights are per care team
    landmark = request.GET.get("follow_up", "")[:40]
    records = outcomes.survival_records(patients, landmark=landmark)
    record(request, "export", object_type="Survival", detail={"format": "csv", "filters": request.GET.dict(),
                                                              "patients": len(records)})
    header = outcomes.SURVIVAL_CSV_HEADER
    rows = [header] + [safe_row([_cell(r[k]) for k in header]) for r in outcomes.survival_rows(records)]
    return csv_response(f"survival-{timezone.localdate():%Y%m%d}.csv", rows)


def _cell(value):  # noqa: ANN001, ANN202
    return "" if value is None else value
