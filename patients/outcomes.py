"""Outcomes and survival by CTC status: the second question CTC enumeration answers.

*In this cohort, does CTC status separate outcomes?* (Cristofanilli, NEJM 2004: baseline
>= 5 CTC/7.5 mL, median PFS 2.7 vs 7.0 months; Heller, JCO 2018: CTC0 and conversion at
first follow-up.) This module

- checks the outcome dates a person records on a patient (``check_outcomes``, which lives
  with the other date checks in ``patients.validation`` and is re-exported here);
- derives progression-free and overall survival from them and **day 0** (enrolment, else
  the first treatment line, else the diagnosis; each record says which) in
  :func:`survival_records`. A progression clinical event on or after day 0 counts as
  progression even when the outcome field is empty; the earlier of the two is used;
- groups patients by baseline CTC status, CTC0 at first follow-up or conversion class (a patient
  whose baseline, or conversion, is indeterminate until reviewed is in no group, and the notes say
  how many were left out), and fits Kaplan–Meier curves, the log-rank test, a Cox model of baseline status (adjusted for
  the trial arm when there are several) and its Harrell c-index with **lifelines**, not
  hand-written estimators (:func:`survival_analysis`);
- writes the draws export of the cohort and patient pages (:func:`draws_csv_rows`: one row per
  draw of the courses, ``patients.cohort``, with the status words, the treatment line, the
  outcome dates and PFS/OS). It lives here, above the courses and the survival records it joins,
  so that ``cohort`` never imports this module back.

Censoring: a patient without the event is censored at the last follow-up date, else at
the latest date the record knows of (last draw or clinical event), since that is the last
time they were seen. Times are in months (days / 30.4375), as the trials report them.

**First follow-up** is the first analysed draw after the baseline, or the draw at a landmark
timepoint the coordinator chooses (``C2D1``, ``C3D1``, ...), as trials define it.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from django.db.models import Max, Min, QuerySet
from django.utils import timezone

from patients import drawdomain
from patients.cohort import (
    CONVERSION_LABELS,
    INDETERMINATE,
    PERSISTENT_FAVORABLE,
    PERSISTENT_UNFAVORABLE,
    TO_FAVORABLE,
    TO_UNFAVORABLE,
    DrawPoint,
    PatientCourse,
    conversion_of,
    patient_courses,
)
from patients.csvsafe import safe_row
from patients.models import ClinicalEvent, Patient, TreatmentLine
from patients.schedule import UNFAVORABLE
from patients.stats import per_7_5ml_ci
from patients.summary import INDETERMINATE_REVIEW, draw_status
from patients.validation import check_outcomes

DAYS_PER_MONTH = 30.4375

ENDPOINTS = {"pfs": "Progression-free survival", "os": "Overall survival"}
GROUPINGS = {
    "baseline": "CTC status at baseline",
    "ctc0": "CTC0 at first follow-up",
    "conversion": "CTC conversion, baseline to first follow-up",
}

#: Below these a group's estimate is shown with a warning, not hidden (issue 14, point 5).
MIN_PATIENTS = 10
MIN_EVENTS = 5

#: At-risk table columns, months.
AT_RISK_STEP_MONTHS = 3


# --- recording outcomes ---------------------------------------------------------------------------


def record_outcomes(patient, user, **dates: dt.date | None) -> None:  # noqa: ANN001
    """Set outcome dates, check them and save, noting who recorded them (simple-history audits the change)."""
    for name in ("progression_date", "death_date", "last_follow_up"):
        if name in dates:
            setattr(patient, name, dates[name])
    check_outcomes(patient)
    patient.outcome_recorded_by = user
    patient.outcome_recorded_at = timezone.now()
    patient.save()


# --- per-patient survival data --------------------------------------------------------------------


@dataclass(frozen=True)
class SurvivalRecord:
    """One patient's times (months from day 0), events and CTC groups."""

    patient_id: int
    study_id: str
    trial: str
    arm: str
    day0: dt.date | None
    day0_source: str  # "enrolment" | "first treatment" | "diagnosis" | ""
    pfs_months: float | None
    pfs_event: bool
    os_months: float | None
    os_event: bool
    baseline: str | None  # favorable | unfavorable | "indeterminate until reviewed" | None (no analysed baseline)
    baseline_per_7_5ml: float | None
    ctc0: str | None  # "ctc0" | "ctc_pos" | None (no follow-up)
    conversion: str | None
    #: the CTC group rests on a count nobody has fully reviewed
    preliminary: bool

    def group(self, by: str) -> str | None:
        return {"baseline": self.baseline, "ctc0": self.ctc0, "conversion": self.conversion}[by]

    def undecided(self, by: str) -> bool:
        """Its group under ``by`` rests on a count indeterminate until reviewed: it is in no group."""
        return self.group(by) in (INDETERMINATE_REVIEW, INDETERMINATE)


def first_follow_up(course: PatientCourse, base: DrawPoint | None, landmark: str = "") -> DrawPoint | None:
    """The first analysed draw after the baseline, or the one labelled ``landmark`` (case-insensitive)."""
    if base is None:
        return None
    after = [d for d in course.analysed if (d.date, d.draw_id) > (base.date, base.draw_id)]
    if landmark:
        want = landmark.strip().lower()
        return next((d for d in after if d.timepoint.strip().lower() == want), None)
    return after[0] if after else None


def _months(start: dt.date, end: dt.date) -> float:
    return round((end - start).days / DAYS_PER_MONTH, 3)


def patient_times(enrolled: dt.date | None, diagnosed: dt.date | None, first_line: dt.date | None,
                  progressed: dt.date | None, died: dt.date | None, seen: dt.date | None,
                  progression_events: Iterable[dt.date], known: Iterable[dt.date | None],
                  ) -> tuple[dt.date | None, str, float | None, bool, float | None, bool]:
    """``(day0, day0 source, PFS months, PFS event, OS months, OS event)`` of one patient.

    Pure (no query): the survival page and the patient page derive the same times.
    ``known``: other dates the record knows of (draws, clinical events), for censoring
    when no last follow-up is recorded.
    """
    if enrolled:
        day0, source = enrolled, "enrolment"
    elif first_line:
        day0, source = first_line, "first treatment"
    elif diagnosed:
        day0, source = diagnosed, "diagnosis"
    else:
        return None, "", None, False, None, False
    pfs = os_ = None
    pfs_event = os_event = False
    dates = [d for d in (seen, died, *known) if d]
    censor = seen or (max(dates) if dates else day0)
    prog_dates = [d for d in [progressed, *progression_events] if d and d >= day0]
    prog = min(prog_dates) if prog_dates else None
    if died and died >= day0:
        os_, os_event = _months(day0, died), True
    elif censor >= day0:
        os_ = _months(day0, censor)
    first_event = min([d for d in (prog, died if died and died >= day0 else None) if d], default=None)
    if first_event is not None:
        pfs, pfs_event = _months(day0, first_event), True
    elif censor >= day0:
        pfs = _months(day0, censor)
    return day0, source, pfs, pfs_event, os_, os_event


def survival_records(patients: QuerySet, landmark: str = "") -> list[SurvivalRecord]:
    """The survival record of each patient in ``patients`` (already scoped with ``for_user``).

    A handful of queries whatever the cohort size (courses, outcome fields, first lines,
    progression events, latest clinical events).
    """
    courses = {c.patient_id: c for c in patient_courses(patients)}
    if not courses:
        return []
    ids = list(courses)
    outcome = {
        pk: (enrolled, diagnosed, progressed, died, seen)
        for pk, enrolled, diagnosed, progressed, died, seen in Patient.objects.filter(pk__in=ids).values_list(
            "pk", "enrolled_on", "diagnosis_date", "progression_date", "death_date", "last_follow_up")
    }
    first_line = dict(
        TreatmentLine.objects.filter(patient_id__in=ids).values("patient_id").annotate(d=Min("start_date"))
        .values_list("patient_id", "d")
    )
    progressions: dict[int, list[dt.date]] = {}
    for pid, date in ClinicalEvent.objects.filter(patient_id__in=ids, kind=ClinicalEvent.Kind.PROGRESSION) \
            .values_list("patient_id", "date"):
        progressions.setdefault(pid, []).append(date)
    last_event = dict(
        ClinicalEvent.objects.filter(patient_id__in=ids).values("patient_id").annotate(d=Max("date"))
        .values_list("patient_id", "d")
    )
    out = []
    for pid, course in courses.items():
        enrolled, diagnosed, progressed, died, seen = outcome[pid]
        t = patient_times(enrolled, diagnosed, first_line.get(pid), progressed, died, seen,
                          progressions.get(pid, []), [last_event.get(pid), *(p.date for p in course.draws)])
        day0, source, pfs, pfs_event, os_, os_event = t
        base, _ = course.ends()
        follow = first_follow_up(course, base, landmark)
        ctc0 = None
        if follow is not None and follow.ctc_count is not None:
            lo = follow.ctc_count if follow.count_min is None else follow.count_min
            hi = follow.ctc_count if follow.count_max is None else follow.count_max
            # a preliminary count whose unsure calls decide whether it is 0 is neither group yet
            undecided = follow.preliminary and lo == 0 < hi
            ctc0 = INDETERMINATE if undecided else "ctc0" if follow.ctc_count == 0 else "ctc_pos"
        out.append(SurvivalRecord(
            patient_id=pid, study_id=course.study_id, trial=course.trial, arm=course.arm, day0=day0,
            day0_source=source, pfs_months=pfs, pfs_event=pfs_event, os_months=os_, os_event=os_event,
            baseline=base.status if base else None, baseline_per_7_5ml=base.per_7_5ml if base else None,
            ctc0=ctc0, conversion=conversion_of(base, follow),
            preliminary=bool((base and base.preliminary) or (follow and follow.preliminary)),
        ))
    return out


# --- the analysis ---------------------------------------------------------------------------------


GROUP_LABELS = {
    "baseline": {UNFAVORABLE: "Baseline ≥ cut-off (unfavorable)", "favorable": "Baseline < cut-off (favorable)"},
    "ctc0": {"ctc0": "CTC0 at first follow-up", "ctc_pos": "CTC ≥ 1 at first follow-up"},
    "conversion": dict(CONVERSION_LABELS),
}
GROUP_ORDER = {
    "baseline": ["favorable", UNFAVORABLE],
    "ctc0": ["ctc0", "ctc_pos"],
    "conversion": [PERSISTENT_FAVORABLE, TO_FAVORABLE, TO_UNFAVORABLE, PERSISTENT_UNFAVORABLE],
}


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 3)


def _p(p: float) -> float | None:
    """A p-value to three significant digits (0.0004 stays 0.0004, not 0.0)."""
    return None if p is None or not math.isfinite(float(p)) else float(f"{float(p):.3g}")


def _km_group(key: str, label: str, times: list[float], events: list[bool], grid: list[float]) -> dict:
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    kmf = KaplanMeierFitter().fit(times, event_observed=events, label=key)
    sf = kmf.survival_function_[key]
    ci = median_survival_times(kmf.confidence_interval_)
    lo, hi = (float(v) for v in ci.iloc[0]) if len(ci) else (math.inf, math.inf)
    n_events = int(sum(events))
    return {
        "key": key,
        "name": label,
        "n": len(times),
        "events": n_events,
        "median": _finite(kmf.median_survival_time_),
        "median_ci95": [_finite(lo), _finite(hi)],
        "times": [round(float(t), 3) for t in sf.index],
        "survival": [round(float(s), 4) for s in sf.values],
        "censored_times": sorted(round(t, 3) for t, e in zip(times, events, strict=True) if not e),
        "at_risk": [sum(1 for t in times if t >= g) for g in grid],
        "reliable": len(times) >= MIN_PATIENTS and n_events >= MIN_EVENTS,
    }


def _cox(rows: list[tuple[float, bool, int, str]]) -> tuple[dict | None, float | None, str | None]:
    """Cox model of unfavorable baseline (1/0), adjusted for arm when there are several.

    ``rows``: (time, event, unfavorable, arm label). Returns (cox dict, c-index, note).
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    df = pd.DataFrame(rows, columns=["T", "E", "unfavorable_baseline", "arm"])
    if df["unfavorable_baseline"].nunique() < 2 or df["E"].sum() == 0:
        return None, None, "Cox model not fitted: it needs patients in both baseline groups and at least one event."
    adjusted = []
    arms = sorted(df["arm"].unique())
    if len(arms) > 1:
        dummies = pd.get_dummies(df["arm"], prefix="arm", drop_first=True, dtype=float)
        df = pd.concat([df.drop(columns="arm"), dummies], axis=1)
        adjusted = ["arm"]
    else:
        df = df.drop(columns="arm")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cph = CoxPHFitter().fit(df, duration_col="T", event_col="E")
    except Exception as err:  # noqa: BLE001 - lifelines raises several kinds on separation/convergence
        return None, None, f"Cox model did not converge ({type(err).__name__}); too few events or perfect separation."
    shaky = any("convergence" in str(w.message).lower() or "separation" in str(w.message).lower() for w in caught)
    row = cph.summary.loc["unfavorable_baseline"]
    cox = {
        "hr": _finite(row["exp(coef)"]),
        "ci95": [_finite(row["exp(coef) lower 95%"]), _finite(row["exp(coef) upper 95%"])],
        "p": _p(row["p"]),
        "adjusted_for": adjusted,
        "covariate": "baseline CTC at or above the cut-off (vs below)",
    }
    note = ("Cox model: lifelines reports a convergence problem (collinearity or near-separation, e.g. an arm "
            "with no events); read the hazard ratio with caution.") if shaky else None
    return cox, _finite(cph.concordance_index_), note


def survival_analysis(records: Iterable[SurvivalRecord], endpoint: str = "pfs", by: str = "baseline") -> dict:
    """Kaplan–Meier by group, log-rank p, Cox HR of baseline status and c-index, with notes.

    The shape is the API contract (``GET /api/cohort/survival/``, docs/api.md): ``endpoint``,
    ``by``, ``groups`` (``name``, ``n``, ``events``, ``median``, ``median_ci95``, ``times``,
    ``survival``, ``at_risk``), ``logrank_p``, ``cox`` (``hr``, ``ci95``, ``p``, ``adjusted_for``),
    ``c_index``, ``notes``; plus ``at_risk_times`` (the months the at-risk counts are taken at).
    """
    from lifelines.statistics import multivariate_logrank_test

    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    records = list(records)
    notes: list[str] = []

    def te(r: SurvivalRecord) -> tuple[float | None, bool]:
        return (r.pfs_months, r.pfs_event) if endpoint == "pfs" else (r.os_months, r.os_event)

    usable = [r for r in records if te(r)[0] is not None]
    no_day0 = sum(1 for r in records if r.day0 is None)
    if no_day0:
        notes.append(f"{no_day0} patient(s) without enrolment, treatment or diagnosis date are left out (no day 0).")
    grouped = [r for r in usable if r.group(by) is not None]
    ungrouped = len(usable) - len(grouped)
    if ungrouped:
        need = "an analysed baseline draw" if by == "baseline" else "a baseline and a first follow-up draw"
        notes.append(f"{ungrouped} patient(s) without {need} are not in a curve.")
    # a status nobody can tell yet is no group: such patients are left out, and counted here
    undecided = sum(1 for r in grouped if r.undecided(by))
    if undecided and by == "ctc0":  # zero or not: a question of its own, not the cut-off's
        notes.append(f"{undecided} patient(s) whose first follow-up count could be 0 or 1 or more, depending on "
                     "calls not yet reviewed, are left out of the groups.")
    elif undecided:
        which = "baseline count" if by == "baseline" else "baseline or first follow-up count"
        notes.append(f"{undecided} patient(s) whose {which} is indeterminate until reviewed are left out of the "
                     "groups" + (" and the Cox model." if by == "baseline" else "."))
        grouped = [r for r in grouped if not r.undecided(by)]
    prelim = sum(1 for r in grouped if r.preliminary)
    if prelim:
        notes.append(f"{prelim} of {len(grouped)} patients are grouped on a preliminary (not fully reviewed) count.")
    sources = sorted({r.day0_source for r in grouped if r.day0_source})
    notes.append("Day 0: enrolment, else first treatment, else diagnosis"
                 + (f" (used here: {', '.join(sources)})." if sources else "."))

    horizon = max((te(r)[0] for r in grouped), default=0.0)
    grid = [float(m) for m in range(0, int(horizon) + AT_RISK_STEP_MONTHS, AT_RISK_STEP_MONTHS)]
    groups = []
    labels: list[str] = []
    durations: list[float] = []
    events: list[bool] = []
    for key in GROUP_ORDER[by]:
        members = [r for r in grouped if r.group(by) == key]
        if not members:
            continue
        t = [te(r)[0] for r in members]
        e = [te(r)[1] for r in members]
        g = _km_group(key, GROUP_LABELS[by][key], t, e, grid)
        groups.append(g)
        if not g["reliable"]:
            notes.append(f"{g['name']}: {g['n']} patients, {g['events']} events: not a reliable estimate "
                         f"(needs at least {MIN_PATIENTS} patients and {MIN_EVENTS} events).")
        labels += [key] * len(t)
        durations += t
        events += e

    logrank_p = None
    if len(groups) >= 2 and sum(events):
        logrank_p = _p(multivariate_logrank_test(durations, labels, events).p_value)
    elif len(groups) < 2:
        notes.append("Log-rank test not computed: fewer than two groups have patients.")

    base_rows = [(te(r)[0], te(r)[1], int(r.baseline == UNFAVORABLE), r.arm or "none")
                 for r in usable if r.baseline is not None and not r.undecided("baseline")]
    undecided_base = sum(1 for r in usable if r.undecided("baseline"))
    if undecided_base and by != "baseline":
        notes.append(f"{undecided_base} patient(s) whose baseline count is indeterminate until reviewed are left "
                     "out of the Cox model.")
    cox, c_index, cox_note = _cox(base_rows) if base_rows else (None, None, "Cox model not fitted: no patients.")
    if cox_note:
        notes.append(cox_note)
    return {
        "endpoint": endpoint,
        "endpoint_label": ENDPOINTS[endpoint],
        "by": by,
        "by_label": GROUPINGS[by],
        "time_unit": "months",
        "at_risk_times": grid,
        "groups": groups,
        "logrank_p": logrank_p,
        "cox": cox,
        "c_index": c_index,
        "patients": len(records),
        "notes": notes,
    }


SURVIVAL_CSV_HEADER = ["study_id", "trial", "arm", "day0", "day0_source", "pfs_months", "pfs_event", "os_months",
                       "os_event", "baseline_status", "baseline_ctc_per_7_5ml", "ctc0_first_follow_up",
                       "conversion", "preliminary"]


def survival_rows(records: Iterable[SurvivalRecord]) -> list[dict]:
    """Per-patient survival data (time, event, groups) for the CSV and JSON exports."""
    rows = []
    for r in records:
        d = asdict(r)
        rows.append({
            "study_id": r.study_id, "trial": r.trial, "arm": r.arm,
            "day0": r.day0.isoformat() if r.day0 else None, "day0_source": r.day0_source,
            "pfs_months": d["pfs_months"], "pfs_event": int(r.pfs_event), "os_months": d["os_months"],
            "os_event": int(r.os_event), "baseline_status": r.baseline, "baseline_ctc_per_7_5ml":
            r.baseline_per_7_5ml, "ctc0_first_follow_up": r.ctc0, "conversion": r.conversion,
            "preliminary": int(r.preliminary),
        })
    return rows


# --- the draws export (cohort and patient CSV) ----------------------------------------------------


#: New columns go at the end: statisticians' scripts read the older ones by position.
DRAWS_CSV_HEADER = [
    "study_id", "cancer_type", "cutoff_per_7_5ml", "trial", "arm", "site", "draw_id", "date", "timepoint",
    "ctc_count", "ctc_per_7_5ml", "ctc_status", "result_status", "is_baseline", "conversion",
    "volume_ml", "events_analysed", "malignant_fraction", "model_version",
    # issue 14: count intervals, the status in words, the line at the draw, outcomes and survival
    "ctc_per_7_5ml_ci95_low", "ctc_per_7_5ml_ci95_high", "status_words", "treatment_line", "regimen",
    "progression_date", "death_date", "last_follow_up", "day0", "pfs_months", "pfs_event", "os_months",
    "os_event",
    # the classifier's domain check of the images behind the count (patients.drawdomain): in_domain |
    # shifted (the count may be wrong: review) | blank (not analysed, or analysed before the check)
    "domain_status", "domain_score", "domain_reasons"]


def _blank(value):  # noqa: ANN001, ANN202
    return "" if value is None else value


def _extras(courses: list[PatientCourse]) -> tuple[dict, dict, dict]:
    """Lines, outcomes and survival records of the courses' patients (a few queries)."""
    ids = [c.patient_id for c in courses]
    lines: dict[int, list] = defaultdict(list)
    for pid, number, regimen, start, end in TreatmentLine.objects.filter(patient_id__in=ids).order_by(
            "patient_id", "line_number").values_list("patient_id", "line_number", "regimen", "start_date", "end_date"):
        lines[pid].append((number, regimen, start, end))
    outcome = {pk: rest for pk, *rest in Patient.objects.filter(pk__in=ids).values_list(
        "pk", "progression_date", "death_date", "last_follow_up")}
    survival = {r.patient_id: r for r in survival_records(Patient.objects.filter(pk__in=ids))}
    return lines, outcome, survival


def _line_at(lines: list, day: dt.date) -> tuple[int | str, str]:
    """The treatment line running on ``day`` (the latest started before it), else blanks."""
    current = ("", "")
    for number, regimen, start, end in lines:
        if start <= day and (end is None or day <= end):
            current = (number, regimen)
    return current


def draws_csv_rows(courses: Iterable[PatientCourse]) -> Iterable[list]:
    """One row per draw (header first): the cohort export for statisticians, and the patient page's.

    ``ctc_status`` is the draw's status as the pages word it (favorable | unfavorable | "indeterminate
    until reviewed") and ``conversion`` the patient's class (``patients.cohort``; "indeterminate" when
    the baseline or follow-up is). Issue 14 appends the count's 95 % interval, the status in words
    ("indeterminate until reviewed" included), the treatment line at the draw, the outcome dates and PFS/OS
    (months from day 0, event 1/0; :func:`survival_records`); then the domain check of the
    images behind each count (:mod:`patients.drawdomain`; one more query).
    """
    courses = list(courses)
    yield list(DRAWS_CSV_HEADER)
    if not courses:
        return
    lines, outcome, survival = _extras(courses)
    domains = drawdomain.for_draws(d.draw_id for c in courses for d in c.draws if d.per_7_5ml is not None)
    for c in courses:
        base, last = c.ends()
        conversion = conversion_of(base, last) or ""
        progression, death, follow_up = outcome.get(c.patient_id, (None, None, None))
        rec = survival.get(c.patient_id)
        tail_patient = [_iso(progression), _iso(death), _iso(follow_up), _iso(rec.day0) if rec else "",
                        _blank(rec.pfs_months) if rec else "", int(rec.pfs_event) if rec and rec.pfs_months is not None
                        else "", _blank(rec.os_months) if rec else "",
                        int(rec.os_event) if rec and rec.os_months is not None else ""]
        for d in c.draws:
            analysed = d.per_7_5ml is not None
            lo = hi = words = ""
            if analysed and d.ctc_count is not None and d.volume_ml:
                lo, hi = per_7_5ml_ci(d.ctc_count, d.volume_ml)
                status, note = draw_status(d.per_7_5ml, c.cutoff, preliminary=d.preliminary, count=d.ctc_count,
                                           count_min=d.count_min, count_max=d.count_max, volume_ml=d.volume_ml)
                words = f"{status}; {note}" if note else (status or "")
            number, regimen = _line_at(lines.get(c.patient_id, []), d.date)
            domain = domains.get(d.draw_id)
            # safe_row: user-typed text (study id, timepoint, regimen; file names inside a domain reason)
            # must not become a spreadsheet formula.
            yield safe_row([c.study_id, c.cancer_type, c.cutoff, c.trial, c.arm, c.site, d.draw_id,
                            d.date.isoformat(), d.timepoint, _blank(d.ctc_count), _blank(d.per_7_5ml),
                            d.status or "", d.summary_status, int(base is not None and base.draw_id == d.draw_id),
                            conversion, _blank(d.volume_ml), _blank(d.events_analysed) if analysed else "",
                            _blank(d.malignant_fraction) if analysed else "", d.model_version if analysed else "",
                            lo, hi, words, number, regimen, *tail_patient,
                            *_domain_cells(domain)])


def _domain_cells(domain: drawdomain.DrawDomain | None) -> list:
    """``domain_status, domain_score, domain_reasons`` of one row (blanks without a check)."""
    if domain is None:
        return ["", "", ""]
    return [domain.status, _blank(domain.score), domain.reasons_text]


def _iso(value: dt.date | None) -> str:
    return value.isoformat() if value else ""


__all__ = [
    "DRAWS_CSV_HEADER", "ENDPOINTS", "GROUPINGS", "SurvivalRecord", "check_outcomes", "draws_csv_rows",
    "first_follow_up", "record_outcomes",
    "survival_analysis", "survival_records", "survival_rows", "TO_FAVORABLE", "TO_UNFAVORABLE",
]
