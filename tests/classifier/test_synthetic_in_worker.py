"""``data.synthetic(workers=2)`` inside Celery's daemonic prefork processes.

A lab-model training (``patients/labmodel.py`` -> ``classifier.finetune.adapt``) builds the
recipe's synthetic replay set with two workers in the ``training`` worker's pool process. With a
``ProcessPoolExecutor`` that raised "daemonic processes are not allowed to have children" on every
`make run` training (the tests set ``LAB_TRAINING_REPLAY`` and never took that path).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from classifier import data
from classifier.weights import default_contract

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _events(workers: int) -> tuple[np.ndarray, ...]:
    ds = data.synthetic(70, seed=321, contract=default_contract(), workers=workers, cache=None, progress=False)
    return ds.crops, ds.feats, ds.is_ctc, ds.category


def test_two_workers_inside_a_daemonic_pool_process_give_the_one_worker_events() -> None:
    billiard = pytest.importorskip("billiard")  # Celery's prefork pool
    with billiard.Pool(1) as pool:
        forked = pool.map(_events, [2])[0]
    for a, b in zip(forked, _events(1), strict=True):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b)
