"""Issue 14 on the patient pages: 95 % intervals, "indeterminate until reviewed" on the list, the
timeline and the report, significant change in the status sentence and the list's arrows."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.utils import timezone

from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db

THRESHOLD = 0.163


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _draw(patient, days_ago, timepoint, cells):
    """cells: (P(CTC), category) per event; the call follows the threshold."""
    d = factories.BloodDrawFactory(patient=patient, timepoint=timepoint,
                                   drawn_at=timezone.now() - dt.timedelta(days=days_ago))
    up = factories.ImagingUploadFactory(draw=d)
    for p, cat in cells:
        factories.CellEventFactory(upload=up, ctc_probability=p, margin=abs(p - THRESHOLD), category=cat,
                                   call="ctc" if p >= THRESHOLD else "non_ctc")
    recompute_summary(d)
    return d


@pytest.fixture
def c7d1_patient(team):
    """12 sure CTCs at baseline, 1 at C2D1 (a significant fall), then the issue's C7D1 draw: 6 CTC calls
    at P 0.17, 0.35, 0.43, 0.50, 0.94, 0.99, four of them unsure (2 without them: favorable)."""
    p = factories.PatientFactory(care_team=team, study_id="PT-C7", mrn="MRN-777")
    _draw(p, 60, "baseline", [(0.95, "ctc")] * 12 + [(0.01, "leukocyte")] * 5)
    _draw(p, 40, "C2D1", [(0.95, "ctc")] + [(0.01, "leukocyte")] * 5)
    _draw(p, 5, "C7D1", [(0.17, "ctc"), (0.35, "leukocyte"), (0.43, "ck_debris"), (0.50, "artifact"),
                         (0.94, "ctc"), (0.99, "ctc")] + [(0.01, "leukocyte")] * 8)
    return p


def test_indeterminate_until_reviewed_on_list_timeline_and_report(as_alice, c7d1_patient):
    p = c7d1_patient
    listing = as_alice.get("/").content.decode()
    row = listing[listing.index("PT-C7"):]
    row = row[:row.index("</tr>")]
    assert "indeterminate until reviewed" in row and "≥ cut-off" not in row
    assert "95% CI" in row  # 6 cells in 7.5 mL: 2.2-13.1
    page = as_alice.get(f"/patients/{p.pk}/").content.decode()
    statuses = re.findall(r'data-testid="draw-status">(.*?)</td>', page, re.S)
    assert "indeterminate until reviewed" in statuses[0]  # newest first
    assert "2.2–13.06" in page  # the C7D1 count's interval
    fig = json.loads(re.search(r'<script id="fig-timeline" type="application/json">(.*?)</script>', page,
                               re.S).group(1))
    ctc = fig["data"][0]
    assert "error_y" in ctc and len(ctc["error_y"]["array"]) == 3
    assert "indeterminate until reviewed" in ctc["customdata"][2][5]
    assert any(t["name"] == "Significant fall (p < 0.05)" for t in fig["data"])  # 12 -> 1
    sentence = re.search(r'data-testid="status-sentence"[^>]*>(.*?)</', page, re.S).group(1)
    assert "indeterminate until reviewed since C7D1" in sentence
    # the C7D1 count is indeterminate until reviewed: the change is said, not tested (test_indeterminate_counts)
    assert ("Rise from 1 to 6 CTC/7.5 mL since C2D1 — not tested: the latest count is indeterminate until "
            "reviewed.") in sentence
    report = as_alice.get(f"/patients/{p.pk}/summary/").content.decode()
    assert "indeterminate until reviewed" in report and "(2–6 cells)" in report


def test_draw_page_states_the_interval_and_indeterminate_status(as_alice, c7d1_patient):
    draws = {d.timepoint: d for d in c7d1_patient.draws.all()}
    page = as_alice.get(f"/draws/{draws['C7D1'].pk}/").content.decode()
    status = re.search(r'data-testid="draw-status">(.*?)</span>\s*<span', page, re.S).group(1)
    assert "indeterminate until reviewed" in status and "unfavorable" not in status
    assert "95% CI 2.2–13.06" in page
    # a settled count: 12 sure CTCs at baseline read unfavorable, its interval wholly above 5
    page = as_alice.get(f"/draws/{draws['baseline'].pk}/").content.decode()
    status = re.search(r'data-testid="draw-status">(.*?)</span>\s*<span', page, re.S).group(1)
    assert "unfavorable" in status and "indeterminate" not in status
    ci = re.search(r'data-testid="draw-ci">(.*?)</span>', page, re.S).group(1)
    assert ci.startswith("95% CI 6.2") and "above" in ci


def test_arrows_only_for_significant_changes(as_alice, team):
    p = factories.PatientFactory(care_team=team, study_id="PT-NOISE")
    _draw(p, 30, "baseline", [(0.95, "ctc")] + [(0.01, "leukocyte")] * 4)
    _draw(p, 5, "C2D1", [(0.95, "ctc")] * 2 + [(0.01, "leukocyte")] * 4)
    q = factories.PatientFactory(care_team=team, study_id="PT-FALL")
    _draw(q, 30, "baseline", [(0.95, "ctc")] * 12 + [(0.01, "leukocyte")] * 4)
    _draw(q, 5, "C2D1", [(0.95, "ctc")] + [(0.01, "leukocyte")] * 4)
    body = as_alice.get("/").content.decode()
    trends = dict(re.findall(r'>(PT-[A-Z]+)</a>.*?data-testid="trend">(.*?)</td>', body, re.S))
    assert "trend-up" not in trends["PT-NOISE"] and "within counting noise" in trends["PT-NOISE"]  # 1 -> 2
    assert "trend-down" in trends["PT-FALL"] and "p = 0.003" in trends["PT-FALL"]  # 12 -> 1
    page = as_alice.get(f"/patients/{q.pk}/").content.decode()
    assert "Fall from 12 to 1 CTC/7.5 mL since baseline, significant (p = 0.003)." in page
