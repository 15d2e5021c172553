"""The draw summary: CTC count per 7.5 mL of blood, the malignant fraction, and how sure the count is.

Two uncertainties travel with every count (issue 14):

- **counting** (Poisson): the exact 95 % interval of the count (:func:`count_interval`,
  patients/stats.py), carried to CTC/7.5 mL through the analysed volume;
- **the model's**: a count made of machine calls the classifier is unsure of. We keep a
  *range* (``ctc_count_min`` .. ``ctc_count_max``) rather than an expected count from
  probabilities: the P(CTC) of the shipped model is not calibrated at the low end (its
  operating point is 0.163), so an "expected count" would be a number nobody can check,
  while the range says exactly which cells decide the status and a reviewer can settle it
  cell by cell. An unreviewed call is *unsure* (:func:`unsure_q`) when its P(CTC) lies within
  :data:`UNSURE_MARGIN` of the call threshold, when the category head disagrees with the
  call (the "call and category disagree" flag on the cards), or when its upload's domain check
  says ``shifted`` (images unlike the validated ones: "review every call"). The minimum drops unsure CTC
  calls, the maximum adds unsure non-CTC calls. Reviewed cells are certain.

While a draw is preliminary and that range straddles the cut-off, its status is
"indeterminate until reviewed" (:func:`draw_status`), on every page and export.

The change between two draws is tested against counting noise (:func:`change`) only when both counts
can bear it: :func:`untested_reason` (the one rule) says why not when either is indeterminate until
reviewed or comes from images unlike the validated ones, and the sentence, the list's arrow and the
chart's marks then say the change without a p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q

from patients import drawdomain
from patients.models import BloodDraw, CellEvent, DrawSummary, SummaryStatus, UploadStatus
from patients.schedule import ctc_status, preliminary_note, status_sentence
from patients.stats import RateChange, count_ci, per_7_5ml_ci, rate_change, side_of_cutoff

#: CellSearch convention: counts are reported per 7.5 mL of blood.
REFERENCE_VOLUME_ML = 7.5

#: An unreviewed call is unsure when |P(CTC) - threshold| is below this (CellEvent.margin).
UNSURE_MARGIN = 0.1

#: The category codes the classifier's category head gives a CTC.
CTC_CATEGORY = "ctc"

#: an upload's domain check (classifier.domain) when its images differ from the validated ones
SHIFTED = "shifted"

INDETERMINATE_REVIEW = "indeterminate until reviewed"
INDETERMINATE_VOLUME = "indeterminate at this volume"
CLEAR_ABOVE = "95% CI wholly at or above the cut-off"
CLEAR_BELOW = "95% CI wholly below the cut-off"


def unsure_q() -> Q:
    """Unreviewed cell events whose call the model is unsure of (see the module docstring)."""
    disagree = (Q(call="ctc") & ~Q(category=CTC_CATEGORY) & Q(category__in=_KNOWN_CATEGORIES)) | (
        Q(call="non_ctc") & Q(category=CTC_CATEGORY))
    # images unlike the validated ones: the calls may be wrong while looking confident (a CK-dim CTC
    # at P 0.02), so none of them is settled until a reviewer has seen it
    shifted = Q(upload__domain_check__status=SHIFTED)
    return Q(reviewed_call="") & (Q(margin__lt=UNSURE_MARGIN) | disagree | shifted)


#: Categories the disagreement flag knows (dashboard.labels.CATEGORY_LABELS): an unknown
#: category from a future model is not taken as a disagreement.
_KNOWN_CATEGORIES = ("ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact")


def per_7_5ml(count: int, volume_ml: float) -> float:
    """Normalise a count to 7.5 mL: ``count * 7.5 / volume_ml``."""
    if volume_ml <= 0:
        raise ValueError("volume_ml must be positive")
    return count * REFERENCE_VOLUME_ML / float(volume_ml)


def recompute_summary(draw: BloodDraw) -> DrawSummary | None:
    """Recount the draw from its events of finished uploads, honouring reviews.

    Final once every event is reviewed; a final summary changed by a later review
    becomes amended (FHIR's status follows this). A draw with no event of a finished upload
    (every upload withdrawn, or a field in which no cell was found) has no summary: nothing
    analysed is not a count of 0 CTCs, which every page and export would read as favorable.
    """
    events = CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE)
    agg = events.aggregate(
        n=Count("pk"),
        reviewed=Count("pk", filter=~Q(reviewed_call="")),
        ctc=Count("pk", filter=Q(reviewed_call="ctc") | Q(reviewed_call="", call="ctc")),
        unsure_ctc=Count("pk", filter=unsure_q() & Q(call="ctc")),
        unsure_other=Count("pk", filter=unsure_q() & Q(call="non_ctc")),
    )
    versions = list(
        draw.uploads.filter(status=UploadStatus.DONE).exclude(model_version="").values_list("model_version", flat=True)
    )
    if agg["n"] == 0:
        with transaction.atomic():
            for gone in DrawSummary.objects.select_for_update().filter(draw=draw):
                gone.delete()  # one by one, so the history keeps the last count
        draw._state.fields_cache.pop("summary", None)
        return None
    with transaction.atomic():
        summary, _ = DrawSummary.objects.select_for_update().get_or_create(draw=draw)
        before = (summary.ctc_count, summary.status)
        n, ctc, reviewed = agg["n"], agg["ctc"], agg["reviewed"]
        summary.events_analysed = n
        summary.ctc_count = ctc
        summary.reviewed_events = reviewed
        summary.ctc_count_min = ctc - agg["unsure_ctc"]
        summary.ctc_count_max = ctc + agg["unsure_other"]
        summary.ctc_per_7_5ml = round(per_7_5ml(ctc, float(draw.volume_ml)), 2)
        summary.malignant_fraction = round(ctc / n, 4) if n else 0.0
        summary.model_version = versions[0] if versions else ""
        complete = n > 0 and reviewed == n
        if not complete:
            summary.status = SummaryStatus.PRELIMINARY
        elif before[1] in (SummaryStatus.FINAL, SummaryStatus.AMENDED) and before[0] != ctc:
            summary.status = SummaryStatus.AMENDED
        elif before[1] == SummaryStatus.PRELIMINARY:
            summary.status = SummaryStatus.FINAL
        summary.save()
    return summary


def count_interval(summary: DrawSummary) -> tuple[float, float]:
    """Exact 95 % Poisson interval of the draw's count (cells)."""
    return count_ci(summary.ctc_count)


def per_7_5ml_interval(summary: DrawSummary, volume_ml: float | None = None) -> tuple[float, float]:
    """Exact 95 % Poisson interval carried to CTC/7.5 mL through the analysed volume."""
    return per_7_5ml_ci(summary.ctc_count, float(volume_ml if volume_ml is not None else summary.draw.volume_ml))


def model_range_per_7_5ml(count_min: int | None, count_max: int | None, count: int,
                          volume_ml: float) -> tuple[float, float]:
    """The model-uncertainty range of the count, per 7.5 mL (the count itself when unknown)."""
    lo = count if count_min is None else count_min
    hi = count if count_max is None else count_max
    return round(per_7_5ml(lo, volume_ml), 2), round(per_7_5ml(hi, volume_ml), 2)


def draw_status(value: float | None, cutoff: float, *, preliminary: bool = False, count: int | None = None,
                count_min: int | None = None, count_max: int | None = None,
                volume_ml: float | None = None) -> tuple[str | None, str]:
    """``(status, note)`` of one analysed draw, in the words every page and export uses.

    ``status``: "favorable" | "unfavorable" | :data:`INDETERMINATE_REVIEW` (preliminary and the
    model range straddles the cut-off) | None (not analysed). ``note`` says where the Poisson
    interval lies: :data:`CLEAR_ABOVE` / :data:`CLEAR_BELOW` when all of it is on one side of the
    cut-off (the status is settled as far as counting goes), else :data:`INDETERMINATE_VOLUME`.
    """
    status = ctc_status(value, cutoff)
    if status is None or count is None or not volume_ml:
        return status, ""
    if preliminary:
        lo, hi = model_range_per_7_5ml(count_min, count_max, count, volume_ml)
        if lo < cutoff <= hi:
            status = INDETERMINATE_REVIEW
    low, high = per_7_5ml_ci(count, volume_ml)
    note = {"straddles": INDETERMINATE_VOLUME, "above": CLEAR_ABOVE, "below": CLEAR_BELOW}[
        side_of_cutoff(low, high, cutoff)]
    return status, note


# --- words for pages and exports ------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One analysed draw as the pages word it: value, raw count, volume, review status, model range,
    and whether its images are unlike the validated ones (its domain check, ``patients.drawdomain``)."""

    timepoint: str
    value: float  # CTC per 7.5 mL
    count: int
    volume_ml: float
    summary_status: str  # preliminary | final | amended
    count_min: int | None = None
    count_max: int | None = None
    shifted: bool = False

    def status(self, cutoff: float) -> tuple[str | None, str]:
        return draw_status(self.value, cutoff, preliminary=self.summary_status == SummaryStatus.PRELIMINARY,
                           count=self.count, count_min=self.count_min, count_max=self.count_max,
                           volume_ml=self.volume_ml)

    def ci(self) -> tuple[float, float]:
        return per_7_5ml_ci(self.count, self.volume_ml)

    @property
    def ci_text(self) -> str:
        """``"2.2–13.06"``: the 95 % interval per 7.5 mL as pages print it."""
        low, high = self.ci()
        return f"{low:g}–{high:g}"

    @property
    def label(self) -> str:
        t = (self.timepoint or "").strip()
        return "baseline" if t.lower() == "baseline" else (t or "the previous draw")


def summary_status(draw: BloodDraw, summary: DrawSummary) -> tuple[str | None, str]:
    """:func:`draw_status` of a stored summary of ``draw`` (its patient's cut-off, its volume)."""
    return draw_status(summary.ctc_per_7_5ml, draw.patient.cancer_type.ctc_cutoff,
                       preliminary=summary.status == SummaryStatus.PRELIMINARY, count=summary.ctc_count,
                       count_min=summary.ctc_count_min, count_max=summary.ctc_count_max,
                       volume_ml=float(draw.volume_ml))


def reading_of(draw: BloodDraw, domain: drawdomain.DrawDomain | None = None) -> Reading | None:
    """The :class:`Reading` of a draw with its summary selected (None when not analysed); ``domain``: the
    draw's merged domain check, when the caller has it."""
    s = draw.summary_or_none
    if s is None:
        return None
    return Reading(draw.timepoint, s.ctc_per_7_5ml, s.ctc_count, float(draw.volume_ml), s.status,
                   s.ctc_count_min, s.ctc_count_max, bool(domain and domain.shifted))


def change(previous: Reading | None, latest: Reading | None) -> RateChange | None:
    """The exact two-rate test between two analysed draws (None without both)."""
    if previous is None or latest is None or previous.volume_ml <= 0 or latest.volume_ml <= 0:
        return None
    return rate_change(previous.count, previous.volume_ml, latest.count, latest.volume_ml)


INDETERMINATE_WHY = "indeterminate until reviewed"
SHIFTED_WHY = "comes from images unlike the validated ones"
SHIFTED_WHY_BOTH = "come from images unlike the validated ones"


def _count_name(reading: Reading, latest: bool) -> str:
    if latest:
        return "the latest count"
    t = (reading.timepoint or "").strip()
    return f"the {reading.label} count" if t else "the earlier count"


def untested_reason(previous: Reading, latest: Reading, cutoff: int | float) -> str:
    """Why the change from ``previous`` to ``latest`` is *not* tested against counting noise, or ``""``.

    The exact two-rate test takes both counts as the cells in the blood. It cannot say "significant"
    (nor "within counting noise") of a count that is indeterminate until reviewed (preliminary, its
    model range straddles the cut-off: :func:`draw_status`) or that comes from images unlike the
    validated ones (``patients.drawdomain``: the count may be wrong while every call looks
    confident) and still holds unreviewed calls. The one rule of the patient page, the printable
    summary, the patient list and the chart's marks: e.g. "the latest count is indeterminate until
    reviewed and comes from images unlike the validated ones".
    """
    flags = []
    for reading in (latest, previous):
        indeterminate = reading.status(cutoff)[0] == INDETERMINATE_REVIEW
        # shifted images weigh only while calls are unreviewed: once a reviewer has settled every call
        # (final, amended) the count is the reviewers', whatever the images looked like
        flags.append((indeterminate, reading.shifted and reading.summary_status == SummaryStatus.PRELIMINARY))
    (li, ls), (pi, ps) = flags
    if not (li or ls or pi or ps):
        return ""
    if (li, ls) == (pi, ps):
        why = [f"are {INDETERMINATE_WHY}"] * li + [SHIFTED_WHY_BOTH] * ls
        return "both counts " + " and ".join(why)
    clauses = []
    for (indeterminate, shifted), reading, latest_one in ((flags[0], latest, True), (flags[1], previous, False)):
        why = [f"is {INDETERMINATE_WHY}"] * indeterminate + [SHIFTED_WHY] * shifted
        if why:
            clauses.append(f"{_count_name(reading, latest_one)} " + " and ".join(why))
    return "; ".join(clauses)


def significant_trend(previous: Reading | None, latest: Reading | None,
                      cutoff: int | float) -> tuple[str, RateChange | None]:
    """``("up" | "down" | "noise" | "same" | "untested" | "", test)`` for the patient list's arrow.

    Arrows only for changes beyond counting noise (alpha = 0.05): 1 -> 2 cells is "noise", not "rising".
    "untested": a change resting on a count the test cannot take (:func:`untested_reason`); the list
    shows :func:`change_sentence` instead of an arrow.
    """
    test = change(previous, latest)
    if test is None:
        return "", None
    if test.direction == "same":
        return "same", test
    if untested_reason(previous, latest, cutoff):
        return "untested", test
    if not test.significant:
        return "noise", test
    return ("up" if test.direction == "rise" else "down"), test


def change_sentence(previous: Reading | None, latest: Reading | None, cutoff: int | float) -> str:
    """``"Fall from 12 to 1 CTC/7.5 mL since C2D1, significant (p = 0.003)."`` or ``""``; when the
    change rests on a count the test cannot take (:func:`untested_reason`): ``"Fall from 15 to 2
    CTC/7.5 mL since baseline — not tested: the latest count is indeterminate until reviewed."``"""
    test = change(previous, latest)
    if test is None or previous is None or latest is None:
        return ""
    if test.direction == "same":
        return f"No change from {previous.label} ({latest.value:g} CTC/7.5 mL)."
    noun = "Rise" if test.direction == "rise" else "Fall"
    head = f"{noun} from {previous.value:g} to {latest.value:g} CTC/7.5 mL since {previous.label}"
    why = untested_reason(previous, latest, cutoff)
    if why:
        return f"{head} — not tested: {why}."
    return f"{head}, {test.words}."


def sentence_for_draws(draws: Sequence, cutoff: int | float,
                       domains: dict[int, drawdomain.DrawDomain] | None = None) -> str:
    """The patient page's sentence: :func:`patients.schedule.status_sentence` for ``BloodDraw`` rows
    with ``summary`` selected, with :func:`patients.schedule.preliminary_note` appended when it
    rests on unreviewed counts, and (issue 14) the latest change tested against counting noise:
    "Fall from 12 to 1 CTC/7.5 mL since C2D1, significant (p = 0.003)." A preliminary draw whose
    model range straddles the cut-off reads "indeterminate until reviewed", and a change resting on
    such a count or on images unlike the validated ones is not tested (:func:`change_sentence`).

    ``domains``: the draws' domain checks by draw id (:func:`patients.drawdomain.for_draws`); read
    here in one query when not given."""
    if domains is None:
        domains = drawdomain.for_draws(d.pk for d in draws if d.summary_or_none is not None)
    points = []
    statuses = []
    readings = []
    for d in draws:
        reading = reading_of(d, domains.get(d.pk))
        if reading is None:
            points.append((d.timepoint, None))
            continue
        points.append((d.timepoint, reading.value, reading.status(cutoff)[0]))
        statuses.append(reading.summary_status)
        readings.append(reading)
    sentence = status_sentence(points, cutoff)
    note = preliminary_note(statuses)
    sentence = f"{sentence} {note}" if note else sentence
    if len(readings) >= 2:
        sentence = f"{sentence} {change_sentence(readings[-2], readings[-1], cutoff)}"
    return sentence

