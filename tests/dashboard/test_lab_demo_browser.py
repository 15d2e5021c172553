"""Browser: an administrator starts a lab-model training from the Models page, watches its progress
bar, and reads the candidate compared with the active version (issue 13, point 4's "Done when"),
with a real worker on the training queue."""

from __future__ import annotations

import pytest

from patients.models import LabTraining, Role
from tests import factories
from tests.conftest import TEST_QUEUE
from tests.dashboard.test_browser import _cancer_types, browser, page, shot, sign_in  # noqa: F401 - fixtures
from tests.dashboard.test_lab_demo import _reviewed_draws

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SMALL = {"LAB_TRAINING_STEPS": "3", "LAB_TRAINING_REPLAY": "16"}


def test_an_admin_starts_a_training_from_the_models_page_and_sees_the_comparison(
        page, live_server, team, alice, worker_factory, monkeypatch):  # noqa: F811 - the page fixture
    from patients import training_tasks

    admin = factories.UserFactory(username="labadmin")
    factories.MembershipFactory(team=team, user=admin, role=Role.ADMIN)
    _reviewed_draws(team, n_draws=4)
    monkeypatch.setattr(training_tasks, "TRAINING_QUEUE", TEST_QUEUE)  # the test worker serves this queue
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)
    worker_factory(extra_env=SMALL)
    sign_in(page, live_server, "labadmin")
    page.goto(f"{live_server.url}/models/")
    row = page.locator(f"[data-testid=training-readiness] tr[data-team='{team.name}']")
    assert row.locator("td").all_inner_texts() == ["48", "16", "4", "Yes"]
    page.click("[data-testid=start-training]")
    page.wait_for_url("**/models/#training-*")
    job = LabTraining.objects.get()
    box = page.locator(f"#training-{job.pk}")
    # Queued or running: the progress bar is there and the page polls it (training.js).
    assert box.locator("[data-training-bar]").count() == 1 or LabTraining.objects.get().status == "done"
    page.wait_for_selector(f"#training-{job.pk} [data-testid=training-comparison]", timeout=300_000)
    job.refresh_from_db()
    assert job.status == "done" and job.progress == 100, job.error
    table = box.locator("[data-testid=training-comparison]").text_content()
    assert "Balanced accuracy" in table and "McNemar p" in table and job.candidate.version[:20] in table
    # The recipe's choice in words, whichever it was.
    words = box.locator("[data-testid=training-kept-active], [data-testid=training-chosen]").inner_text()
    assert "kept the active model" in words or "The recipe chose" in words
    shot(page, "models-lab-training", full_page=True)
    page.context.clear_cookies()  # signed out
    sign_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/models/")
    assert "only an administrator can start a training (labadmin)" in page.locator(
        "[data-testid=training-who]").inner_text()
