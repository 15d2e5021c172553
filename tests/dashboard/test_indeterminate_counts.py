"""A count that is "indeterminate until reviewed" (preliminary, its model range straddles the cut-off;
``patients.summary.draw_status``) never turns into a firm answer: not in the CSV exports (``ctc_status``,
``conversion``), the de-identified export, the cohort statistics (conversion classes, rates and their
intervals, the waterfall, the conversion chart), the survival groups, nor in the fall/rise sentence of
the patient page, the printable summary and the patient list, which test no change that rests on such
a count or on images unlike the validated ones (``patients.drawdomain``).

The new-user case: a draw whose count was 2 where the truth was 15, preliminary, from shifted images.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re

import pytest
from django.utils import timezone

from patients import cohort, outcomes
from patients.models import ImagingUpload, Patient
from patients.summary import INDETERMINATE_REVIEW, recompute_summary
from tests import factories
from tests.dashboard.builders import add_cells, draw_on

pytestmark = pytest.mark.django_db

REASON = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45) (23 of 23 images)"

#: the draws CSV's columns before this change, in order: statisticians' scripts read them by position
OLD_CSV_HEADER = [
    "study_id", "cancer_type", "cutoff_per_7_5ml", "trial", "arm", "site", "draw_id", "date", "timepoint",
    "ctc_count", "ctc_per_7_5ml", "ctc_status", "result_status", "is_baseline", "conversion",
    "volume_ml", "events_analysed", "malignant_fraction", "model_version",
    "ctc_per_7_5ml_ci95_low", "ctc_per_7_5ml_ci95_high", "status_words", "treatment_line", "regimen",
    "progression_date", "death_date", "last_follow_up", "day0", "pfs_months", "pfs_event", "os_months",
    "os_event", "domain_status", "domain_score", "domain_reasons"]

FALL_IND = ("Fall from 15 to 2 CTC/7.5 mL since baseline — not tested: the latest count is indeterminate "
            "until reviewed and comes from images unlike the validated ones.")
FALL_SHIFTED = ("Fall from 15 to 0 CTC/7.5 mL since baseline — not tested: the latest count comes from images "
                "unlike the validated ones.")
FALL_BASE_IND = ("Fall from 3 to 1 CTC/7.5 mL since baseline — not tested: the baseline count is indeterminate "
                 "until reviewed and comes from images unlike the validated ones.")


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _draw(patient, days_ago: int, timepoint: str, n_ctc: int, n_other: int, shifted: bool = False):
    """An analysed draw of sure machine calls (preliminary); ``shifted``: its images unlike the validated
    ones, so every unreviewed call becomes unsure and the stored range follows."""
    d = draw_on(patient, timezone.localdate() - dt.timedelta(days=days_ago), timepoint)
    upload = add_cells(d, n_ctc, n_other, uncertain=0, with_images=False)
    if shifted:
        ImagingUpload.objects.filter(pk=upload.pk).update(
            domain_check={"status": "shifted", "score": 0.8, "reasons": [REASON]})
        recompute_summary(d)
    return d


@pytest.fixture
def arms(team):
    """Arm A: PT-IND, 15 sure CTCs at baseline, then 2 CTC calls (and 10 others) from shifted images at C2D1:
    range 0-12 against a cut-off of 5, indeterminate until reviewed. Arm B: PT-DET (8 -> 1, sure: converts
    to favorable) and PT-BIND (baseline 3 from shifted images, range 0-13: indeterminate; then 1 sure)."""
    trial = factories.TrialFactory(code="IND-01", draw_interval_days=21)
    a = factories.TrialArmFactory(trial=trial, code="A")
    b = factories.TrialArmFactory(trial=trial, code="B")
    ind = factories.PatientFactory(care_team=team, study_id="PT-IND", trial=trial, arm=a)
    _draw(ind, 60, "baseline", 15, 5)
    _draw(ind, 30, "C2D1", 2, 10, shifted=True)
    det = factories.PatientFactory(care_team=team, study_id="PT-DET", trial=trial, arm=b)
    _draw(det, 60, "baseline", 8, 5)
    _draw(det, 30, "C2D1", 1, 5)
    bind = factories.PatientFactory(care_team=team, study_id="PT-BIND", trial=trial, arm=b)
    _draw(bind, 60, "baseline", 3, 10, shifted=True)
    _draw(bind, 30, "C2D1", 1, 5)
    return {"IND": ind, "DET": det, "BIND": bind}


def _csv(response) -> list[dict]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.DictReader(io.StringIO(body.decode())))


def _rows(response) -> dict[tuple[str, str], dict]:
    return {(r["study_id"], r["timepoint"]): r for r in _csv(response)}


# --- 1. exports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["patient", "cohort"])
def test_csv_exports_say_indeterminate_and_count_no_conversion(as_alice, arms, url):
    ind = arms["IND"]
    response = as_alice.get(f"/patients/{ind.pk}/export.csv" if url == "patient" else "/cohort/export.csv")
    assert response.status_code == 200
    rows = _rows(response)
    header = list(next(iter(rows.values())))
    assert header[:len(OLD_CSV_HEADER)] == OLD_CSV_HEADER  # the old columns in their places
    base, c2 = rows[("PT-IND", "baseline")], rows[("PT-IND", "C2D1")]
    assert base["ctc_status"] == "unfavorable"  # 15 sure CTCs: settled
    assert c2["ctc_status"] == INDETERMINATE_REVIEW  # the words the pages use, not "favorable"
    assert c2["status_words"].startswith(INDETERMINATE_REVIEW)
    assert base["conversion"] == c2["conversion"] == cohort.INDETERMINATE  # not "to_favorable"
    if url == "cohort":  # determinate draws keep their values
        det = rows[("PT-DET", "baseline")], rows[("PT-DET", "C2D1")]
        assert [r["ctc_status"] for r in det] == ["unfavorable", "favorable"]
        assert {r["conversion"] for r in det} == {cohort.TO_FAVORABLE}
        assert rows[("PT-BIND", "baseline")]["ctc_status"] == INDETERMINATE_REVIEW
        assert rows[("PT-BIND", "C2D1")]["conversion"] == cohort.INDETERMINATE


def test_deidentified_export_gives_no_firm_answer_for_an_indeterminate_count(as_alice, arms):
    body = as_alice.get("/api/export/deidentified/?format=json").json()
    records = [p for p in body["patients"] if p["arm"] == "A"]
    (record,) = records
    base, c2 = record["draws"]
    assert (base["unfavorable"], base["ctc_status"]) == (True, "unfavorable")
    assert c2["ctc_status"] == INDETERMINATE_REVIEW
    assert c2["unfavorable"] is None  # not a plain False: nobody can say yet
    rows = _csv(as_alice.get("/api/export/deidentified/?format=csv"))
    assert list(rows[0])[-1] == "ctc_status"  # appended: the older columns keep their places
    assert INDETERMINATE_REVIEW in {r["ctc_status"] for r in rows}
    # the summary API keeps `unfavorable` as the bare comparison and says what to report in ctc_status
    draw = arms["IND"].draws.get(timepoint="C2D1")
    summary = as_alice.get(f"/api/summaries/{draw.pk}/").json()
    assert (summary["ctc_status"], summary["unfavorable"]) == (INDETERMINATE_REVIEW, False)


# --- 2. cohort statistics and outcomes -------------------------------------------------------------


def test_cohort_statistics_keep_indeterminate_conversions_apart(arms):
    courses = {c.study_id: c for c in cohort.patient_courses(Patient.objects.all())}
    base, last = courses["PT-IND"].ends()
    assert base.status == "unfavorable" and last.status == INDETERMINATE_REVIEW
    assert courses["PT-IND"].conversion == cohort.INDETERMINATE
    assert courses["PT-BIND"].conversion == cohort.INDETERMINATE
    assert courses["PT-DET"].conversion == cohort.TO_FAVORABLE
    assert cohort.CONVERSION_LABELS[cohort.INDETERMINATE] == "Indeterminate until reviewed"

    summaries = {s.arm: s for s in cohort.arm_summaries(courses.values())}
    a, b = summaries["A"], summaries["B"]
    assert (a.to_favorable, a.persistent_unfavorable, a.indeterminate) == (0, 0, 1)
    assert a.conversion_rate is None and a.conversion_ci is None  # not "100 % (1 of 1)"
    assert (a.follow_up_unfavorable, a.follow_up_indeterminate) == (0, 1)
    assert (b.to_favorable, b.persistent_favorable, b.indeterminate) == (1, 0, 1)
    assert b.conversion_rate == 1.0 and b.reverse_rate is None  # PT-BIND is in neither rate
    assert (b.baseline_unfavorable, b.baseline_indeterminate) == (1, 1)

    by_arm = cohort.conversion_by_arm(courses.values())
    assert by_arm["IND-01 / A"][cohort.TO_FAVORABLE] == 0 and by_arm["IND-01 / A"][cohort.INDETERMINATE] == 1
    assert {b[0]: b[3] for b in cohort.waterfall(courses.values())} == {
        "PT-IND": cohort.INDETERMINATE, "PT-DET": cohort.TO_FAVORABLE, "PT-BIND": cohort.INDETERMINATE}


def test_cohort_page_and_api_do_not_report_a_conversion_from_an_indeterminate_count(as_alice, arms):
    page = as_alice.get("/cohort/").content.decode()
    table = re.search(r'data-testid="arm-table">(.*?)</table>', page, re.S).group(1)
    row_a = re.search(r"IND-01 / A</th>(.*?)</tr>", table, re.S).group(1)
    assert "100%" not in row_a and "0 of 0 unfavorable at baseline" in row_a
    assert "1 indeterminate until reviewed" in row_a
    fig = json.loads(re.search(r'<script id="fig-conversion" type="application/json">(.*?)</script>', page,
                               re.S).group(1))
    names = [t["name"] for t in fig["data"]]
    assert "Indeterminate until reviewed" in names
    body = as_alice.get("/api/cohort/?trial=IND-01").json()
    api_arms = {x["arm"]: x for x in body["arms"]}
    assert (api_arms["A"]["to_favorable"], api_arms["A"]["indeterminate"]) == (0, 1)
    assert api_arms["A"]["conversion_rate"] is None and api_arms["A"]["conversion_ci"] is None
    assert {w["study_id"]: w["conversion"] for w in body["waterfall"]}["PT-IND"] == cohort.INDETERMINATE


def test_survival_groups_leave_out_indeterminate_patients_and_say_so(as_alice, arms):
    records = {r.study_id: r for r in outcomes.survival_records(Patient.objects.all())}
    assert records["PT-IND"].conversion == cohort.INDETERMINATE
    assert records["PT-BIND"].baseline == INDETERMINATE_REVIEW

    by_conversion = outcomes.survival_analysis(records.values(), "pfs", "conversion")
    assert sum(g["n"] for g in by_conversion["groups"]) == 1  # PT-DET only
    assert cohort.TO_FAVORABLE in {g["key"] for g in by_conversion["groups"]}
    assert any("2 patient(s)" in n and "indeterminate until reviewed" in n and "left out" in n
               for n in by_conversion["notes"])

    by_baseline = outcomes.survival_analysis(records.values(), "pfs", "baseline")
    assert {g["key"]: g["n"] for g in by_baseline["groups"]} == {"unfavorable": 2}  # not PT-BIND as favorable
    assert any("1 patient(s)" in n and "indeterminate until reviewed" in n for n in by_baseline["notes"])

    api = as_alice.get("/api/cohort/survival/?endpoint=pfs&by=conversion").json()
    assert sum(g["n"] for g in api["groups"]) == 1
    assert any("indeterminate until reviewed" in n for n in api["notes"])
    page = html.unescape(as_alice.get("/cohort/survival/?endpoint=pfs&by=conversion").content.decode())
    notes = re.search(r'data-testid="survival-notes">(.*?)</ul>', page, re.S).group(1)
    assert "indeterminate until reviewed" in notes


# --- 3. the fall/rise sentence ---------------------------------------------------------------------


def _sentence(page: str, testid: str) -> str:
    return html.unescape(re.search(rf'data-testid="{testid}"[^>]*>(.*?)</', page, re.S).group(1))


def _trend_cells(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in
            re.findall(r'>(PT-[A-Z]+)</a>.*?data-testid="trend">(.*?)</td>', page, re.S)}


def test_change_to_an_indeterminate_shifted_count_is_not_called_significant(as_alice, arms):
    ind = arms["IND"]
    page = as_alice.get(f"/patients/{ind.pk}/").content.decode()
    sentence = _sentence(page, "status-sentence")
    assert FALL_IND in sentence and "significant" not in sentence
    fig = json.loads(re.search(r'<script id="fig-timeline" type="application/json">(.*?)</script>', page,
                               re.S).group(1))
    assert not [t for t in fig["data"] if t["name"].startswith("Significant")]
    report = as_alice.get(f"/patients/{ind.pk}/summary/").content.decode()
    printed = _sentence(report, "report-sentence")
    assert FALL_IND in printed and "significant" not in printed
    trend = _trend_cells(as_alice.get("/").content.decode())
    assert "trend-down" not in trend["PT-IND"] and "Significant" not in trend["PT-IND"]
    assert FALL_IND in trend["PT-IND"]  # the same words as the page
    # a settled count keeps its test
    assert "trend-down" in trend["PT-DET"]
    det = as_alice.get(f"/patients/{arms['DET'].pk}/").content.decode()
    assert "Fall from 8 to 1 CTC/7.5 mL since baseline, significant (p = 0.04)." in _sentence(det, "status-sentence")


def test_change_from_an_indeterminate_baseline_is_not_tested(as_alice, arms):
    page = as_alice.get(f"/patients/{arms['BIND'].pk}/").content.decode()
    sentence = _sentence(page, "status-sentence")
    assert FALL_BASE_IND in sentence and "counting noise" not in sentence
    assert FALL_BASE_IND in _trend_cells(as_alice.get("/").content.decode())["PT-BIND"]


def test_change_to_a_count_from_shifted_images_is_not_tested_even_when_determinate(as_alice, team):
    p = factories.PatientFactory(care_team=team, study_id="PT-SHIFT")
    _draw(p, 60, "baseline", 15, 5)
    _draw(p, 30, "C2D1", 0, 2, shifted=True)  # range 0-2 against 5: favorable, but from shifted images
    page = as_alice.get(f"/patients/{p.pk}/").content.decode()
    sentence = _sentence(page, "status-sentence")
    assert "indeterminate" not in sentence
    assert FALL_SHIFTED in sentence and "significant" not in sentence
    assert FALL_SHIFTED in _sentence(as_alice.get(f"/patients/{p.pk}/summary/").content.decode(), "report-sentence")
    trend = _trend_cells(as_alice.get("/").content.decode())["PT-SHIFT"]
    assert "trend-down" not in trend and FALL_SHIFTED in trend


def test_a_shifted_count_whose_calls_were_all_reviewed_is_tested_again(as_alice, team, alice):
    """Shifted images make a count untestable while its calls are machine calls; once a reviewer has
    confirmed every call (with the acknowledgement a shifted draw needs) the count is the reviewers'."""
    from patients.review import confirm_remaining

    p = factories.PatientFactory(care_team=team, study_id="PT-SHREV")
    _draw(p, 60, "baseline", 15, 5)
    later = _draw(p, 30, "C2D1", 0, 2, shifted=True)
    assert FALL_SHIFTED in _sentence(as_alice.get(f"/patients/{p.pk}/").content.decode(), "status-sentence")
    confirm_remaining(later, alice, acknowledge_shifted=True)
    later.summary.refresh_from_db()
    assert later.summary.status == "final"
    sentence = _sentence(as_alice.get(f"/patients/{p.pk}/").content.decode(), "status-sentence")
    assert "not tested" not in sentence and "significant" in sentence, sentence


def test_ctc0_at_follow_up_waits_for_review_when_unsure_calls_decide_it(team):
    """CTC0 at first follow-up (Heller 2018) is a zero-or-not question: a preliminary 0 whose unsure
    non-CTC calls could make it 1 (range 0-1) is in neither group; a sure 0 is CTC0."""
    rows = {}
    for study_id, unsure in (("PT-ZEROQ", 1), ("PT-ZERO", 0)):
        p = factories.PatientFactory(care_team=team, study_id=study_id, enrolled_on=timezone.localdate()
                                     - dt.timedelta(days=90))
        _draw(p, 60, "baseline", 8, 5)
        d = draw_on(p, timezone.localdate() - dt.timedelta(days=30), "C2D1")
        add_cells(d, 0, 5, uncertain=unsure, with_images=False)
        d.summary.refresh_from_db()
        assert (d.summary.ctc_count, d.summary.ctc_count_min, d.summary.ctc_count_max) == (0, 0, unsure)
        (rows[study_id],) = outcomes.survival_records(Patient.objects.filter(pk=p.pk))
    assert rows["PT-ZERO"].ctc0 == "ctc0" and not rows["PT-ZERO"].undecided("ctc0")
    assert rows["PT-ZEROQ"].ctc0 == cohort.INDETERMINATE and rows["PT-ZEROQ"].undecided("ctc0")
    # the note says why in the zero-or-not question's own words, not the cut-off's
    notes = outcomes.survival_analysis(list(rows.values()), "pfs", "ctc0")["notes"]
    assert any(n.startswith("1 patient(s) whose first follow-up count could be 0 or 1 or more") for n in notes), notes
    assert not any("indeterminate until reviewed" in n for n in notes), notes
