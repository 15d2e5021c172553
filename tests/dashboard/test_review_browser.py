"""Review mode in real headless Chromium (issue 13): a 200-cell draw reviewed with the keyboard only,
and the page-side defects a reviewer met (point 6). Reuses test_browser's browser and page fixtures."""

# ruff: noqa: F811 - the browser/page fixtures are imported from test_browser and used as arguments
from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from patients.models import AuditEvent, CellEvent, SummaryStatus, UploadedFile
from tests import factories
from tests.api.synthetic import CHANNELS, event_tiff
from tests.dashboard.builders import add_cells, draw_on
from tests.dashboard.test_browser import _cancer_types, browser, page, shot, sign_in  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def big_draw(team, alice, bob):
    patient = factories.PatientFactory(care_team=team, study_id="PT-REV-200")
    draw = draw_on(patient, dt.date.today() - dt.timedelta(days=3), "C2D1")
    add_cells(draw, 20, 180, seed=7, uncertain=6)
    return draw


def _focused(page) -> dict:
    return page.evaluate("""() => { const a = document.activeElement;
        return {id: a && a.dataset ? a.dataset.id || null : null, call: a && a.dataset ? a.dataset.call || null : null,
                tag: a ? a.tagName : null}; }""")


def test_a_200_cell_draw_is_reviewed_with_the_keyboard_only(page, live_server, big_draw):
    draw = big_draw
    sign_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/draws/{draw.pk}/review/")
    page.wait_for_function("document.activeElement && document.activeElement.matches('[data-cell]')")
    page.evaluate("window.__noReload = 1")
    assert page.locator("[data-testid=tile]").count() == 200
    # Dense: at least 24 whole tiles on a 1280 x 900 screen, without scrolling.
    visible = page.evaluate("""() => Array.from(document.querySelectorAll('[data-cell]')).filter(t => {
        const r = t.getBoundingClientRect();
        return r.top >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; }).length""")
    assert visible >= 24, visible
    assert page.evaluate("typeof window.Plotly") == "undefined"  # no 4.8 MB plotly.js on the review page
    presses = 0

    def press(key: str) -> None:
        nonlocal presses
        page.keyboard.press(key)
        presses += 1

    overridden = []
    for reason_key in ("1", "2", "4"):
        cell = _focused(page)
        overridden.append(int(cell["id"]))
        press("KeyN" if cell["call"] == "ctc" else "KeyC")
        page.wait_for_selector("#reason-dialog[open]")
        press(reason_key)
        press("Enter")
        page.wait_for_selector(f"#cell-{cell['id']}[data-reviewed='1']")
        page.wait_for_function(
            f"document.activeElement.dataset && document.activeElement.dataset.id !== '{cell['id']}'")
        assert page.locator("#reason-dialog[open]").count() == 0
    assert page.locator("[data-summary-reviewed]").inner_text() == "3"
    press("KeyF")
    press("Enter")
    page.wait_for_function("document.querySelector('[data-summary-status]').textContent.trim() === 'Final'")
    assert page.evaluate("window.__noReload") == 1  # every action in place: no page load
    shot(page, "review-grid-final", full_page=False)
    print(f"\nkeyboard-only review of a 200-cell draw: {presses} key presses "
          f"(3 overrides with reasons x 3 keys, confirm the remaining 197 with 2)")
    assert presses == 11

    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.FINAL and draw.summary.reviewed_events == 200
    over = CellEvent.objects.filter(pk__in=overridden)
    assert all(c.reviewed_call != c.call and c.reviewed_by.username == "bob" for c in over)
    assert sorted(c.review_reason for c in over) == sorted(
        ["No nucleus (DAPI negative)", "CD45 positive: leukocyte", "Debris or artifact"])
    bulk = AuditEvent.objects.get(object_type="BloodDraw", object_id=str(draw.pk), detail__bulk_confirm=True)
    assert bulk.detail["n"] == 197 and not set(bulk.detail["cells"]) & set(overridden)


def test_an_override_without_a_reason_is_refused_in_view_and_focus_returns_to_the_cell(page, live_server, big_draw):
    sign_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/draws/{big_draw.pk}/review/")
    page.wait_for_function("document.activeElement && document.activeElement.matches('[data-cell]')")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    cell = _focused(page)
    page.keyboard.press("KeyN" if cell["call"] == "ctc" else "KeyC")
    page.wait_for_selector("#reason-dialog[open]")
    page.keyboard.press("Enter")  # no reason chosen
    error = page.locator("[data-reason-error]")
    assert error.is_visible() and "needs a reason" in error.inner_text()
    box = error.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 900  # on screen, next to the choice
    assert CellEvent.objects.get(pk=cell["id"]).reviewed_call == ""
    page.keyboard.press("Escape")
    page.wait_for_function(f"document.activeElement.dataset && document.activeElement.dataset.id === '{cell['id']}'")
    # Enter: the cell large, each channel separately and its heat map; ? lists the keys.
    page.keyboard.press("Enter")
    page.wait_for_selector("#cell-dialog[open] figure canvas")
    page.wait_for_function("document.querySelectorAll('#cell-dialog figure').length === 5")
    labels = page.locator("#cell-dialog figcaption").all_inner_texts()
    assert labels == [*CHANNELS.split(","), "Heat map"] if isinstance(CHANNELS, str) else labels[-1] == "Heat map"
    shot(page, "review-cell-large", full_page=False)
    page.keyboard.press("Escape")
    page.wait_for_function(f"document.activeElement.dataset && document.activeElement.dataset.id === '{cell['id']}'")
    page.keyboard.press("Shift+Slash")
    page.wait_for_selector("#keys-dialog[open]")
    assert "confirm the remaining calls" in page.locator("#keys-dialog").inner_text()


def test_the_same_files_again_prompt_on_the_draw_page(page, live_server, alice, team, tmp_path):
    patient = factories.PatientFactory(care_team=team, study_id="PT-DUP")
    draw = draw_on(patient, dt.date.today() - dt.timedelta(days=1), "baseline")
    data = event_tiff("ctc", 1)
    earlier = factories.ImagingUploadFactory(draw=draw, channels=CHANNELS.split(",") if isinstance(CHANNELS, str)
                                             else CHANNELS, status="done", progress=100)
    UploadedFile.objects.create(upload=earlier, file="uploads/x/a.tif", original_name="a.tif", size=len(data),
                                sha256=hashlib.sha256(data).hexdigest())
    path = tmp_path / "a-again.tif"
    path.write_bytes(data)
    sign_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/draws/{draw.pk}/")
    assert page.input_value("#id_channels") == "DAPI,CK,AF,CD45"
    assert page.evaluate("typeof window.Plotly") == "undefined"  # no figure on this draw: no plotly.js
    page.set_input_files("#id_files", str(path))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "already uploaded to this draw" in page.locator("#upload-error").inner_text()
    confirm = page.locator("input[name=confirm_duplicates]")
    assert confirm.is_visible()
    page.wait_for_function("document.activeElement && document.activeElement.name === 'confirm_duplicates'")
    assert draw.uploads.count() == 1  # nothing stored


def test_a_refused_draw_form_keeps_the_typed_timepoint(page, live_server, alice, team):
    patient = factories.PatientFactory(care_team=team, study_id="PT-FORM")
    sign_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/patients/{patient.pk}/")
    future = (dt.datetime.now() + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    page.fill("#id_drawn_at", future)
    page.fill("#id_timepoint", "C4D1")
    with page.expect_navigation():
        page.click("form[action$='/draws/new/'] button[type=submit]")
    assert "was not saved" in page.locator(".messages").inner_text()
    assert page.input_value("#id_timepoint") == "C4D1"
