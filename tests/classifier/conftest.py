"""Shared fixtures for the classifier tests: small synthetic data, made once per session.

Nothing here mocks the classifier: fixtures are real synthetic events run through the
real preprocessing, and the real shipped weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from classifier import data
from classifier.synth import write_folder
from classifier.weights import DEFAULT_WEIGHTS, default_contract

torch.set_num_threads(2)

CHANNELS = ["DAPI", "CK", "AF", "CD45"]


@pytest.fixture(scope="session")
def contract():
    return default_contract()


@pytest.fixture(scope="session")
def small_set(contract) -> data.EventSet:
    """160 prepared synthetic events (every category), generated in-process."""
    return data.synthetic(160, seed=123, contract=contract, workers=1, cache=None, progress=False)


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory) -> Path:
    """A labelled folder in the ctc-dev layout, 24 events."""
    out = tmp_path_factory.mktemp("synth")
    write_folder(out, 24, seed=5, progress=False)
    return out


@pytest.fixture(scope="session")
def shipped():
    from classifier.engine import Classifier

    assert DEFAULT_WEIGHTS.exists(), "shipped weights missing: run the training command in docs/model-card.md"
    return Classifier.load(device="cpu")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def gamma16():
    """16 synthetic events rendered with display gamma 1.6 on top of the validated stretch
    (the tone curve corrects them)."""
    from classifier import domain

    return domain.synthetic_set("gamma_1.6", 16, 5)


@pytest.fixture(scope="module")
def validated():
    """16 synthetic events rendered like the validated ones (the tone curve leaves them alone)."""
    from classifier import domain

    return domain.synthetic_set("in_domain", 16, 5)
