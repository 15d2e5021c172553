"""The domain status travels with every count a clinician reads or exports (patients.drawdomain):
a count from images unlike the validated ones is flagged, with its reasons, on the patient page
(table and chart), in the printable summary and in the CSV exports; an in-domain count, a draw
without a stored check, a withdrawn upload's check and a draw without a count are shown as before."""

from __future__ import annotations

import csv
import html
import io
import json
import re

import pytest

from patients.drawdomain import FLAG
from patients.models import ImagingUpload, UploadStatus
from patients.summary import recompute_summary
from tests import factories
from tests.dashboard.builders import course_patient

pytestmark = pytest.mark.django_db

REASON = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45) (23 of 23 images)"
# a reason quoting a hostile file name: must stay text on the page, in the chart and in a spreadsheet
HOSTILE = '=HYPERLINK("https://evil.example") <b>field.tif</b>'
PRINT_FLAG = "Images unlike the validated ones — review"
RING = FLAG[0].upper() + FLAG[1:]


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def checked(team, trial_arm):
    """The course patient with: baseline shifted, C3D1 in domain, C5D1 shifted only in a withdrawn
    upload, the repeat without a stored check, and the pending draw (no count) shifted."""
    trial, arm = trial_arm
    patient, draws = course_patient(team, trial=trial, arm=arm, images=False)
    _check(draws["baseline"], {"status": "shifted", "score": 0.73, "reasons": [HOSTILE, REASON]})
    _check(draws["c3"], {"status": "in_domain", "score": 0.08, "reasons": []})
    factories.ImagingUploadFactory(draw=draws["c5"], status=UploadStatus.WITHDRAWN,
                                   domain_check={"status": "shifted", "score": 1.0, "reasons": ["withdrawn one"]})
    factories.ImagingUploadFactory(draw=draws["pending"], status=UploadStatus.DONE,  # found no cell: no count
                                   domain_check={"status": "shifted", "score": 0.9, "reasons": ["no count here"]})
    for d in draws.values():
        recompute_summary(d)  # a shifted upload's unreviewed calls are unsure: the stored range follows
    return patient, draws


def _check(draw, check: dict) -> None:
    ImagingUpload.objects.filter(draw=draw).update(domain_check=check)


def _figure(body: str) -> dict:
    found = re.search(r'<script id="fig-timeline" type="application/json">(.*?)</script>', body, re.S)
    assert found
    return json.loads(found.group(1))


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_patient_page_flags_the_shifted_count_in_the_table_and_the_chart(as_alice, checked):
    patient, draws = checked
    body = as_alice.get(f"/patients/{patient.pk}/").content.decode()
    flags = re.findall(r'<a class="flag flag-warn domain-flag" data-testid="domain-flag" href="([^"]+)" '
                       r'title="([^"]*)">([^<]+)</a>', body)
    assert len(flags) == 1  # baseline only: not C3D1 (in domain), C5D1 (withdrawn), the repeat, the pending draw
    href, title, text = flags[0]
    assert href == f"/draws/{draws['baseline'].pk}/" and text == FLAG
    title = html.unescape(title)
    assert "score 0.73" in title and REASON in title and HOSTILE in title
    assert "<b>field.tif</b>" not in body  # the file name stays text
    assert "withdrawn one" not in body and "no count here" not in body

    fig = _figure(body)
    (ring,) = [t for t in fig["data"] if t["name"] == RING]
    assert len(ring["x"]) == 1 and ring["hoverinfo"] == "skip"
    counts = next(t for t in fig["data"] if t["name"] == "CTC per 7.5 mL")
    hover = {row[0]: row[5] for row in counts["customdata"]}
    assert ring["y"] == [counts["y"][list(hover).index(f"/draws/{draws['baseline'].pk}/")]]
    base = hover[f"/draws/{draws['baseline'].pk}/"]
    assert FLAG in base and REASON[:60] in base
    assert "<b>field.tif</b>" not in base and '") field.tif' in base  # Plotly's tags taken out (plotly_text)
    for other in ("c3", "c5", "repeat"):
        assert FLAG not in hover[f"/draws/{draws[other].pk}/"]


def test_patient_page_without_any_check_is_as_before(as_alice, course):
    patient, _ = course
    body = as_alice.get(f"/patients/{patient.pk}/").content.decode()
    assert 'data-testid="domain-flag"' not in body
    assert RING not in [t["name"] for t in _figure(body)["data"]]


def test_printable_summary_prints_the_flag_and_the_reasons(as_alice, checked):
    patient, _ = checked
    body = as_alice.get(f"/patients/{patient.pk}/summary/").content.decode()
    notes = re.findall(r'<span class="sub" data-testid="domain-flag">(.*?)</span>', body, re.S)
    assert len(notes) == 1
    note = html.unescape(notes[0])
    assert note.startswith(f"<b>{PRINT_FLAG}</b>: ") and REASON in note and HOSTILE in note
    assert RING in [t["name"] for t in _figure(body)["data"]]
    assert "withdrawn one" not in body and "no count here" not in body


@pytest.mark.parametrize("url", ["patient", "cohort"])
def test_csv_exports_carry_the_domain_status_and_reasons(as_alice, checked, url):
    patient, _ = checked
    response = as_alice.get(f"/patients/{patient.pk}/export.csv" if url == "patient" else "/cohort/export.csv")
    rows = {r["timepoint"]: r for r in _csv(response)}
    assert list(rows["baseline"])[-3:] == ["domain_status", "domain_score", "domain_reasons"]
    base = rows["baseline"]
    assert (base["domain_status"], base["domain_score"]) == ("shifted", "0.73")
    # the formula guard covers the reasons too: the first one starts with "="
    assert base["domain_reasons"] == f"'{HOSTILE}; {REASON}"
    assert (rows["C3D1"]["domain_status"], rows["C3D1"]["domain_score"], rows["C3D1"]["domain_reasons"]) == (
        "in_domain", "0.08", "")
    for blank in ("C5D1", "C5D1 repeat", "L2 C1D1"):  # withdrawn check, no check, no count
        assert (rows[blank]["domain_status"], rows[blank]["domain_score"], rows[blank]["domain_reasons"]) == (
            "", "", "")


def test_the_export_query_count_does_not_grow_with_draws(as_alice, checked, team, trial_arm):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            _csv(as_alice.get("/cohort/export.csv"))
        return len(ctx)

    one = queries()
    trial, arm = trial_arm
    for i in range(3):
        course_patient(team, study_id=f"PT-MORE-{i}", trial=trial, arm=arm, images=False)
    assert queries() == one  # the domain checks of every draw in one query


def test_cohort_swimmer_outlines_and_names_the_shifted_count(as_alice, checked):
    body = as_alice.get("/cohort/").content.decode()
    found = re.search(r'<script id="fig-swimmer" type="application/json">(.*?)</script>', body, re.S)
    assert found
    points = [(row, width, colour) for t in json.loads(found.group(1))["data"] if t["type"] == "scatter"
              for row, width, colour in zip(t["customdata"], t["marker"]["line"]["width"],
                                            t["marker"]["line"]["color"], strict=True)]
    flagged = [(row[1], width, colour) for row, width, colour in points if FLAG in row[3]]
    assert flagged == [("baseline", 2.5, "#b36b00")]  # not C3D1, the withdrawn check, the repeat, the pending draw
    assert len(points) == 5


def test_merge_of_a_draws_checks():
    from patients.drawdomain import merge

    assert merge([None, {"status": "unknown"}, "shifted"]) is None  # nothing the pages can trust: no status
    d = merge([{"status": "in_domain", "score": 0.2, "reasons": ["minor"]},
               {"status": "shifted", "score": 0.6, "reasons": ["a", "b"]},
               {"status": "shifted", "score": "bad", "reasons": ["b", "c", 3]}])
    assert (d.status, d.shifted, d.score, d.reasons) == ("shifted", True, 0.6, ("a", "b", "c"))
    ok = merge([{"status": "in_domain", "score": 0.1, "reasons": ["minor"]}, None])
    assert (ok.status, ok.shifted, ok.score_text, ok.reasons_text) == ("in_domain", False, "0.10", "minor")


def test_a_reason_said_by_two_uploads_is_merged_once_whatever_their_image_counts():
    """A draw with a 10-image upload and a single-image one listed "no AF channel ... (10 of 10
    images)" and "no AF channel ..." as two reasons, and such pairs filled the cap of 10."""
    from patients.drawdomain import merged_reasons

    af = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45)"
    px = "pixel size 1.34 µm (inferred from nuclei) outside the validated 0.35-0.45 µm"
    got = merged_reasons([
        {"reasons": [f"{af} (10 of 10 images)", f"{px} (3 of 10 images; the strongest shown; µm/px 0.6-1.34, "
                                                "median 0.8)"]},
        {"reasons": [af, px, "wide framing: 150 µm across (more neighbouring cells; the event was analysed "
                             "on the central 100 µm)"]},
    ])
    assert got == [f"{af} (2 uploads)", f"{px} (2 uploads)",
                   "wide framing: 150 µm across (more neighbouring cells; the event was analysed on the central "
                   "100 µm)"]
    # one upload's reason keeps its own count
    assert merged_reasons([{"reasons": [f"{af} (3 of 40 images)"]}]) == [f"{af} (3 of 40 images)"]


def test_patient_list_flags_the_latest_count_only(as_alice, checked):
    patient, draws = checked
    assert 'data-testid="domain-flag"' not in as_alice.get("/").content.decode()  # latest (the repeat): no check
    _check(draws["repeat"], {"status": "shifted", "score": 0.55, "reasons": [REASON]})
    body = as_alice.get("/").content.decode()
    assert body.count('data-testid="domain-flag"') == 1
    assert f'href="/draws/{draws["repeat"].pk}/"' in body and REASON in html.unescape(body)
