from __future__ import annotations

import pytest

from tests import factories
from tests.dashboard.builders import course_patient


@pytest.fixture
def trial_arm(db):
    trial = factories.TrialFactory(code="BRC-01", title="Breast trial", draw_interval_days=21)
    return trial, factories.TrialArmFactory(trial=trial, code="A")


@pytest.fixture
def course(team, trial_arm):
    """(patient, draws) of a patient with a full course in ``team`` (alice's and bob's)."""
    trial, arm = trial_arm
    return course_patient(team, trial=trial, arm=arm, images=False)
