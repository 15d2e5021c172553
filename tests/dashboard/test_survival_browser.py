"""The survival page and the patient list at 820 px in real headless Chromium (issue 14)."""

from __future__ import annotations

import pytest

from tests import factories
from tests.api.test_survival import _cohort_patient
from tests.dashboard.test_browser import SHOTS, _cancer_types, browser, page, shot, sign_in  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cohort(team, alice, other_team):
    arm_a = factories.TrialArmFactory(code="A")
    arm_b = factories.TrialArmFactory(code="B", trial=arm_a.trial)
    for i in range(12):
        _cohort_patient(team, arm_a if i % 2 else arm_b, 12, 2 + i * 0.4, event=i < 10, follow_count=6)
    for i in range(12):
        _cohort_patient(team, arm_a if i % 2 else arm_b, 1, 6 + i * 0.6, event=i < 6, follow_count=0)
    for _ in range(3):
        _cohort_patient(other_team, arm_a, 30, 0.5, event=True, follow_count=30)
    return arm_a.trial


def test_survival_page_draws_km_curves_and_the_at_risk_table(page, live_server, cohort):  # noqa: F811
    sign_in(page, live_server, "alice")
    page.click("nav >> text=Survival")
    page.wait_for_selector("[data-testid=km-plot] .main-svg")
    # Two step curves drawn by Plotly (one path per trace), plus censoring ticks.
    curves = page.locator("[data-testid=km-plot] .scatterlayer .trace .js-line")
    assert curves.count() == 2
    legend = page.locator("[data-testid=km-plot] .legend").text_content()
    assert "n=12" in legend and "n=15" not in legend  # another team's patients never enter a curve
    at_risk = page.locator("[data-testid=at-risk]")
    assert at_risk.is_visible() and "Number at risk" in at_risk.inner_text()
    assert page.locator("[data-testid=logrank]").inner_text().startswith(("p = ", "p < "))
    assert page.locator("[data-testid=cox]").inner_text().startswith("HR ")
    shot(page, "survival-page")
    page.select_option("#id_endpoint", "os")
    page.click("button:has-text('Show')")
    page.wait_for_selector("[data-testid=km-plot] .main-svg")
    assert "Overall survival" in page.locator("#km-title").inner_text()


def test_patient_list_at_820px_shows_the_last_and_next_draw_columns(page, live_server, cohort):  # noqa: F811
    sign_in(page, live_server, "alice")
    page.set_viewport_size({"width": 820, "height": 900})
    page.goto(f"{live_server.url}/")
    table = page.locator("table.data")
    card = page.locator(".table-card")
    # The table fits its card: nothing to scroll sideways to reach the last columns.
    assert table.evaluate("t => t.scrollWidth") <= card.evaluate("c => c.clientWidth") + 1
    assert page.locator("th:has-text('Next draw')").is_visible()
    shot(page, "patient-list-820", full_page=False)
