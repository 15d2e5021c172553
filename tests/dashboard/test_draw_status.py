"""The draw page's result strip takes favorable / unfavorable from the rule's owner
(``patients.schedule.ctc_status``, through the view), not from a comparison of its own (issue 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patients import schedule
from patients.models import SummaryStatus
from patients.summary import INDETERMINATE_REVIEW, recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db

TEMPLATE = Path(__file__).resolve().parents[2] / "dashboard" / "templates" / "dashboard" / "draw_detail.html"


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def _draw(team, cells):
    """A draw of 7.5 mL whose cells are ``(P(CTC), call, category)``; summary recomputed."""
    patient = factories.PatientFactory(care_team=team)
    draw = factories.BloodDrawFactory(patient=patient)
    upload = factories.ImagingUploadFactory(draw=draw)
    for p, call, category in cells:
        factories.CellEventFactory(upload=upload, ctc_probability=p, margin=abs(p - 0.163), call=call,
                                   category=category)
    recompute_summary(draw)
    draw.refresh_from_db()
    return draw


def _strip(client, draw) -> tuple[str, str]:
    """(class attribute of the count, status words) of the draw page."""
    page = client.get(f"/draws/{draw.pk}/").content.decode()
    cls = re.search(r'class="metric-value ([^"]*)" data-testid="ctc-per-75"', page).group(1)
    words = re.search(r'data-testid="draw-status">(.*?)</span>\s*<span', page, re.S).group(1)
    return cls.split(), words


@pytest.mark.parametrize("n_ctc", [4, 5, 6])  # the breast cut-off is 5 CTC per 7.5 mL
def test_count_class_and_words_follow_ctc_status_at_below_and_above_the_cutoff(as_alice, team, n_ctc):
    draw = _draw(team, [(0.95, "ctc", "ctc")] * n_ctc + [(0.01, "non_ctc", "leukocyte")] * 3)
    cutoff = draw.patient.cancer_type.ctc_cutoff
    assert cutoff == 5 and draw.summary.ctc_per_7_5ml == n_ctc
    status = schedule.ctc_status(draw.summary.ctc_per_7_5ml, cutoff)
    cls, words = _strip(as_alice, draw)
    assert ("count-high" in cls) == (status == schedule.UNFAVORABLE)
    expected = {schedule.UNFAVORABLE: "unfavorable (≥5)", schedule.FAVORABLE: "favorable (&lt;5)"}[status]
    assert words.strip() == expected
    assert status == (schedule.FAVORABLE if n_ctc < 5 else schedule.UNFAVORABLE)  # at the cut-off: unfavorable


def test_indeterminate_draw_keeps_its_flag_and_the_count_colour_of_ctc_status(as_alice, team):
    """Preliminary, 6 CTC calls of which 3 unsure (range 3-6 straddles 5): the words say "indeterminate
    until reviewed"; the count is still red, as on the patient page and list (the number is at or above
    the cut-off; the flag says it is not settled)."""
    draw = _draw(team, [(0.95, "ctc", "ctc")] * 3 + [(0.2, "ctc", "ctc")] * 3
                 + [(0.01, "non_ctc", "leukocyte")] * 3)
    assert draw.summary.status == SummaryStatus.PRELIMINARY and draw.summary.ctc_per_7_5ml == 6
    assert (draw.summary.ctc_count_min, draw.summary.ctc_count_max) == (3, 6)
    cls, words = _strip(as_alice, draw)
    assert INDETERMINATE_REVIEW in words and "unfavorable" not in words and "favorable (" not in words
    assert "count-high" in cls


def test_the_template_compares_no_count_with_the_cutoff():
    """The old copy of the rule (``summary.ctc_per_7_5ml >= cutoff`` twice in the template) is gone."""
    source = TEMPLATE.read_text(encoding="utf-8")
    assert not re.search(r"ctc_per_7_5ml\s*[<>]=?\s*cutoff|cutoff\s*[<>]=?\s*\S*ctc_per_7_5ml", source)
