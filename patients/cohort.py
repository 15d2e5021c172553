"""Cohort statistics per trial and arm, for coordinators (dashboard and API share them).

The unit is a patient's *course*: their analysed draws in time order, each
favorable or unfavorable against the cancer type's cut-off, or "indeterminate until reviewed"
(preliminary, its model range straddling the cut-off: ``patients.summary.draw_status``, the status
every page and export words). From it:

- **baseline**: the draw labelled ``baseline`` (case-insensitive), else the first
  analysed draw;
- **follow-up**: the latest analysed draw after the baseline, or, when the coordinator chooses a
  landmark (``C2D1``, ``C3D1``, ... as trials define it), the draw with that timepoint;
- **conversion**: unfavorable at baseline and favorable at follow-up ("to favorable",
  which goes with longer survival, SWOG S0500), the reverse ("to unfavorable"), or
  persistent either way; when the baseline or the follow-up is indeterminate until reviewed,
  *indeterminate* (:data:`INDETERMINATE`): counted and shown on its own, never as a conversion,
  and left out of the conversion rates and their intervals;
- **change from baseline** in percent of the baseline count (for the waterfall); a
  rise from 0 has no percentage and is capped at :data:`CHANGE_CAP` percent.

A draw is *analysed* when it has a summary (its imaging went through the pipeline).
Functions take querysets already scoped with ``for_user``; :func:`patient_courses`
costs two queries whatever the cohort size and never touches cell events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from django.core.cache import cache
from django.db.models import QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from patients.cache import data_stamp
from patients.models import BloodDraw, TreatmentLine
from patients.schedule import FAVORABLE, UNFAVORABLE
from patients.stats import proportion_ci
from patients.summary import INDETERMINATE_REVIEW, draw_status

T = TypeVar("T")

#: How long a cached cohort result may live. Writes invalidate it at once (patients/cache.py);
#: this only bounds an edit made in another process while the cache is per-process memory.
CACHE_SECONDS = 120

#: Waterfall bars are capped here (percent); a rise from a baseline of 0 is drawn at the cap.
CHANGE_CAP = 200.0

TO_FAVORABLE = "to_favorable"
TO_UNFAVORABLE = "to_unfavorable"
PERSISTENT_UNFAVORABLE = "persistent_unfavorable"
PERSISTENT_FAVORABLE = "persistent_favorable"
#: the baseline or the follow-up is indeterminate until reviewed: no conversion class can be told yet
INDETERMINATE = "indeterminate"

CONVERSION_LABELS = {
    TO_FAVORABLE: "Converted to favorable",
    TO_UNFAVORABLE: "Converted to unfavorable",
    PERSISTENT_UNFAVORABLE: "Persistently unfavorable",
    PERSISTENT_FAVORABLE: "Persistently favorable",
    INDETERMINATE: "Indeterminate until reviewed",
}


@dataclass(frozen=True)
class DrawPoint:
    draw_id: int
    date: dt.date
    timepoint: str
    ctc_count: int | None
    per_7_5ml: float | None  # None: not analysed yet
    #: favorable | unfavorable | "indeterminate until reviewed" (patients.summary.draw_status) | None
    status: str | None
    summary_status: str  # preliminary | final | amended | "" (no summary)
    volume_ml: float | None = None
    events_analysed: int | None = None
    malignant_fraction: float | None = None
    model_version: str = ""
    #: the model's range of the count (patients.summary); None: not known
    count_min: int | None = None
    count_max: int | None = None

    @property
    def preliminary(self) -> bool:
        """Analysed, but from machine calls not all reviewed yet."""
        return self.per_7_5ml is not None and self.summary_status == "preliminary"

    @property
    def indeterminate(self) -> bool:
        """Preliminary, and its model range straddles the cut-off: no side can be told yet."""
        return self.status == INDETERMINATE_REVIEW


@dataclass
class PatientCourse:
    patient_id: int
    study_id: str
    cancer_type: str
    cutoff: int
    trial: str
    arm: str
    site: str
    start: dt.date | None  # enrolment, else diagnosis (swimmer plot origin)
    draws: list[DrawPoint] = field(default_factory=list)
    lines: list[tuple[int, str, dt.date, dt.date | None, str]] = field(default_factory=list)
    #: the follow-up timepoint chosen by the coordinator ("" = the latest draw after baseline)
    landmark: str = ""

    @property
    def analysed(self) -> list[DrawPoint]:
        return [d for d in self.draws if d.per_7_5ml is not None]

    def ends(self) -> tuple[DrawPoint | None, DrawPoint | None]:
        """(baseline, follow-up) in one pass over the draws; the properties below read it.

        The cohort statistics ask for both of every patient several times: one pass each
        instead of re-scanning the analysed draws per property was a third of the page.
        """
        analysed = self.analysed
        if not analysed:
            return None, None
        base = next((d for d in analysed if d.timepoint.strip().lower() == "baseline"), analysed[0])
        after = (base.date, base.draw_id)
        last = None
        want = self.landmark.strip().lower()
        for d in analysed:  # the last one after the baseline (or the landmark's), in the course's order
            if (d.date, d.draw_id) > after and (not want or d.timepoint.strip().lower() == want):
                last = d
                if want:
                    break
        return base, last

    @property
    def baseline(self) -> DrawPoint | None:
        return self.ends()[0]

    @property
    def follow_up(self) -> DrawPoint | None:
        return self.ends()[1]

    @property
    def conversion(self) -> str | None:
        return conversion_of(*self.ends())

    @property
    def change_pct(self) -> float | None:
        """Change of CTC/7.5 mL from baseline to follow-up, percent of baseline (capped)."""
        base, last = self.ends()
        if base is None or last is None:
            return None
        return change_from_baseline(base.per_7_5ml, last.per_7_5ml)


def conversion_of(base: DrawPoint | None, last: DrawPoint | None) -> str | None:
    """The conversion class from a baseline and a follow-up draw (None without both); :data:`INDETERMINATE`
    when either is indeterminate until reviewed (it is not a conversion, nor a persistent status)."""
    if base is None or last is None:
        return None
    if base.indeterminate or last.indeterminate:
        return INDETERMINATE
    if base.status == UNFAVORABLE:
        return TO_FAVORABLE if last.status == FAVORABLE else PERSISTENT_UNFAVORABLE
    return TO_UNFAVORABLE if last.status == UNFAVORABLE else PERSISTENT_FAVORABLE


def change_from_baseline(baseline: float, value: float) -> float:
    """Percent change, capped at +:data:`CHANGE_CAP`; 0 -> 0 is 0, 0 -> more is the cap."""
    if baseline <= 0:
        return 0.0 if value <= 0 else CHANGE_CAP
    return round(min(CHANGE_CAP, (value - baseline) / baseline * 100.0), 1)


def patient_courses(patients: QuerySet, with_lines: bool = False, landmark: str = "") -> list[PatientCourse]:
    """The course of each patient in ``patients`` (two or three queries in all).

    ``landmark``: the follow-up timepoint (``C2D1``, ...); "" keeps the latest draw after baseline.
    """
    courses: dict[int, PatientCourse] = {}
    rows = patients.order_by("study_id").values_list(
        "pk", "study_id", "cancer_type__name", "cancer_type__ctc_cutoff", "trial__code", "arm__code",
        "care_team__site", "enrolled_on", "diagnosis_date",
    )
    for pk, study_id, ctype, cutoff, trial, arm, site, enrolled, diagnosed in rows:
        courses[pk] = PatientCourse(pk, study_id, ctype, cutoff, trial or "", arm or "", site or "",
                                    enrolled or diagnosed, landmark=(landmark or "")[:40])
    if not courses:
        return []
    draws = (
        BloodDraw.objects.filter(patient__in=patients.order_by().values("pk"))
        .order_by("patient_id", "drawn_at", "pk")
        # The local calendar day computed by the database (TruncDate uses the current time zone).
        .annotate(day=TruncDate("drawn_at"))
        .values_list("patient_id", "pk", "day", "timepoint", "summary__ctc_count", "summary__ctc_per_7_5ml",
                     "summary__status", "volume_ml", "summary__events_analysed", "summary__malignant_fraction",
                     "summary__model_version", "summary__ctc_count_min", "summary__ctc_count_max")
    )
    for (patient_id, pk, day, timepoint, count, value, sstatus, volume, n_events, fraction, version, cmin,
         cmax) in draws:
        course = courses.get(patient_id)
        if course is None:
            continue
        volume = None if volume is None else float(volume)
        # the status the pages and exports word: "indeterminate until reviewed" included
        status = draw_status(value, course.cutoff, preliminary=sstatus == "preliminary", count=count,
                             count_min=cmin, count_max=cmax, volume_ml=volume)[0]
        course.draws.append(DrawPoint(pk, day, timepoint, count, value, status, sstatus or "", volume, n_events,
                                      fraction, version or "", cmin, cmax))
    if with_lines:
        lines = (
            TreatmentLine.objects.filter(patient__in=patients.order_by().values("pk"))
            .order_by("patient_id", "line_number")
            .values_list("patient_id", "line_number", "regimen", "start_date", "end_date", "stop_reason")
        )
        for patient_id, number, regimen, start, end, reason in lines:
            if patient_id in courses:
                courses[patient_id].lines.append((number, regimen, start, end, reason or ""))
    return list(courses.values())


@dataclass
class ArmSummary:
    trial: str
    arm: str
    patients: int = 0
    with_baseline: int = 0
    baseline_unfavorable: int = 0
    with_follow_up: int = 0
    follow_up_unfavorable: int = 0
    to_favorable: int = 0
    to_unfavorable: int = 0
    persistent_unfavorable: int = 0
    persistent_favorable: int = 0
    #: patients whose baseline or follow-up status rests on a preliminary (unreviewed) count
    preliminary: int = 0
    #: patients with a follow-up whose baseline or follow-up is indeterminate until reviewed: in no
    #: conversion class and in neither rate (:data:`INDETERMINATE`)
    indeterminate: int = 0
    #: of ``with_baseline`` / ``with_follow_up``: those whose draw is indeterminate until reviewed (not
    #: in ``baseline_unfavorable`` / ``follow_up_unfavorable``, and not favorable either)
    baseline_indeterminate: int = 0
    follow_up_indeterminate: int = 0

    @property
    def conversion_rate(self) -> float | None:
        """Share of baseline-unfavorable patients with a follow-up who became favorable (indeterminate
        conversions are in neither the numerator nor the denominator)."""
        n = self.to_favorable + self.persistent_unfavorable
        return self.to_favorable / n if n else None

    @property
    def reverse_rate(self) -> float | None:
        """Share of baseline-favorable patients with a follow-up who became unfavorable."""
        n = self.to_unfavorable + self.persistent_favorable
        return self.to_unfavorable / n if n else None

    @property
    def conversion_ci(self) -> tuple[float, float] | None:
        """Exact 95 % interval of :attr:`conversion_rate` (2 of 2 is 16-100 %)."""
        return proportion_ci(self.to_favorable, self.to_favorable + self.persistent_unfavorable)

    @property
    def reverse_ci(self) -> tuple[float, float] | None:
        """Exact 95 % interval of :attr:`reverse_rate`."""
        return proportion_ci(self.to_unfavorable, self.to_unfavorable + self.persistent_favorable)

    @property
    def label(self) -> str:
        if not self.trial:
            return "Not in a trial"
        return f"{self.trial} / {self.arm}" if self.arm else f"{self.trial} (no arm)"


def arm_summaries(courses: Iterable[PatientCourse]) -> list[ArmSummary]:
    """Baseline and follow-up status and conversions per (trial, arm), sorted by label."""
    arms: dict[tuple[str, str], ArmSummary] = {}
    for c in courses:
        s = arms.setdefault((c.trial, c.arm), ArmSummary(c.trial, c.arm))
        s.patients += 1
        base, last = c.ends()
        if base is None:
            continue
        s.with_baseline += 1
        s.baseline_unfavorable += base.status == UNFAVORABLE
        s.baseline_indeterminate += base.indeterminate
        s.preliminary += base.preliminary or (last is not None and last.preliminary)
        if last is None:
            continue
        s.with_follow_up += 1
        s.follow_up_unfavorable += last.status == UNFAVORABLE
        s.follow_up_indeterminate += last.indeterminate
        conv = conversion_of(base, last)
        setattr(s, conv, getattr(s, conv) + 1)
    # Trials first (by code, arm), patients outside a trial last.
    return sorted(arms.values(), key=lambda s: (not s.trial, s.trial, s.arm))


def waterfall(courses: Iterable[PatientCourse]) -> list[tuple[str, str, float, str]]:
    """``(study_id, arm label, change %, conversion)`` per patient with a follow-up, largest rise first."""
    bars = []
    for c in courses:
        base, last = c.ends()
        if base is not None and last is not None:
            arm = f"{c.trial} / {c.arm}" if c.trial else "Not in a trial"
            bars.append((c.study_id, arm, change_from_baseline(base.per_7_5ml, last.per_7_5ml),
                         conversion_of(base, last) or ""))
    bars.sort(key=lambda b: (-b[2], b[0]))
    return bars


def conversion_by_arm(courses: Iterable[PatientCourse]) -> dict[str, dict[str, int]]:
    """``{arm label: {conversion: patients}}`` for the stacked conversion chart."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CONVERSION_LABELS, 0))
    for c in courses:
        conv = conversion_of(*c.ends())
        if conv:
            out[f"{c.trial} / {c.arm}" if c.trial else "Not in a trial"][conv] += 1
    return dict(out)


@dataclass(frozen=True)
class PreliminaryShare:
    """How much of a cohort's figures rests on preliminary (not fully reviewed) counts."""

    draws: int  # analysed draws
    preliminary_draws: int
    patients: int  # patients with a baseline (their status is in the tables)
    preliminary_patients: int  # of those, baseline or follow-up preliminary


def preliminary_share(courses: Iterable[PatientCourse]) -> PreliminaryShare:
    draws = prelim_draws = patients = prelim_patients = 0
    for c in courses:
        for d in c.analysed:
            draws += 1
            prelim_draws += d.preliminary
        base, last = c.ends()
        if base is not None:
            patients += 1
            prelim_patients += base.preliminary or (last is not None and last.preliminary)
    return PreliminaryShare(draws, prelim_draws, patients, prelim_patients)


# --- Cache ------------------------------------------------------------------------------------


_MISSING = object()


def scope_key(patients: QuerySet) -> str:
    """A digest of the primary keys in ``patients`` (one query): who is in the cohort.

    Keying by the patients themselves, not by user or filter, is what keeps the cache
    scoped: two users share an entry only when they see exactly the same patients.
    """
    ids = sorted(patients.order_by().values_list("pk", flat=True))
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def cached(patients: QuerySet, part: str, build: Callable[[], T], timeout: int = CACHE_SECONDS) -> T:
    """``build()`` for the cohort ``patients``, from the cache while nothing it reads has changed.

    ``part`` names what is built (and anything else it depends on, such as the day); the key
    adds the visible patients, the data stamp (patients/cache.py) and the time zone, which
    decides the calendar day of each draw. Costs two small queries on a hit.
    """
    stamp = f"{data_stamp()}|{timezone.get_current_timezone_name()}|{scope_key(patients)}|{part}"
    key = "patients:cohort:" + hashlib.sha256(stamp.encode()).hexdigest()
    hit = cache.get(key, _MISSING)
    if hit is not _MISSING:
        return hit
    value = build()
    cache.set(key, value, timeout)
    return value
