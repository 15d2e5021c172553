"""The Models page says where a lab-model training failed, not "Failed: failed" (or "Done: done")."""

from __future__ import annotations

import pytest
from django.test import Client

from patients.models import LabTraining, Role
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(team):
    return factories.MembershipFactory(team=team, role=Role.ADMIN, user__username="labadmin").user


def test_a_failed_training_keeps_the_step_it_failed_at_and_a_done_one_shows_no_stage(admin, team):
    from patients.labmodel import run_training

    job = run_training(LabTraining.objects.create(team=team, requested_by=admin))  # nobody reviewed anything
    assert job.status == "failed" and "reviewed cells" in job.error
    assert job.stage == "exporting the reviewed cells"
    LabTraining.objects.create(team=team, requested_by=admin, status=LabTraining.Status.DONE, progress=100,
                               stage="done", result={"active": {"n": 3}, "candidate": {"n": 3}, "mcnemar_p": 1.0,
                                                     "provenance": {"test_draws": ["1"], "train_draws": ["2"]}})
    client = Client()
    client.force_login(admin)
    page = client.get("/models/").content.decode()
    assert "Failed: exporting the reviewed cells" in page
    assert "Failed: failed" not in page and "Done: done" not in page
    assert client.get(f"/models/training/{job.pk}/status/").json()["stage"] == "exporting the reviewed cells"
