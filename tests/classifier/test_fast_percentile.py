"""The top-percentile shortcut of classifier.kernels.percentile_rows returns exactly
what partitioning every value returns (the intensity anchors feed every crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier import kernels, preprocess

CTC_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ctc-dev"


def _reference(a: np.ndarray, q: float) -> np.ndarray:
    """The implementation before the shortcut: one partition of every value."""
    n = a.shape[1]
    pos = q / 100.0 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    part = np.partition(a, [lo, hi], axis=1)
    return part[:, lo] + (part[:, hi] - part[:, lo]) * (pos - lo)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_rows(dtype: type) -> None:
    rng = np.random.default_rng(3)
    for trial in range(120):
        n = int(rng.choice([4096, 5000, 6400, 8191, 12000, 25281, 40000]))
        k = int(rng.integers(1, 5))
        kind = trial % 5
        if kind == 0:
            a = rng.lognormal(0, 2, (k, n))
        elif kind == 1:  # heavy ties: a few distinct values, the top ones rare
            a = np.floor(rng.exponential(1.0, (k, n)) * 3)
        elif kind == 2:  # a bright object in a dark field, sorted or not
            a = rng.normal(0.1, 0.01, (k, n))
            a[:, : n // 500] = rng.normal(5.0, 1.0, (k, n // 500))
            if trial % 2:
                a = np.sort(a, axis=1)
        elif kind == 3:  # constant rows and rows whose top is one repeated value
            a = np.full((k, n), 0.25)
            a[0, :: 7] = 1.0
        else:  # normalised-and-clipped: many values at the clip limits, signed zeros
            a = np.clip(rng.normal(0.3, 0.8, (k, n)), -0.5, 1.5)
            a[:, ::11] = 0.0
            a[:, 5::13] = -0.0
        a = a.astype(dtype)
        for q in (99.9, 99.5, 99.0, 98.0, 20.0, 50.0, 100.0):
            assert _same(kernels.percentile_rows(a, q), _reference(a, q)), (trial, n, q)


def test_infinite_and_nan_values() -> None:
    rng = np.random.default_rng(4)
    a = rng.random((3, 10000)).astype(np.float32)
    a[0, 17] = np.inf
    a[1, :40] = -np.inf
    a[2, 100:200] = np.inf
    assert _same(kernels.percentile_rows(a, 99.9), _reference(a, 99.9))
    a[1, 5] = np.nan  # partition sorts NaN last: the shortcut steps aside
    assert np.array_equal(kernels.percentile_rows(a, 99.9), _reference(a, 99.9), equal_nan=True)


def test_normalisation_of_synthetic_events_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.synth.events import make_event

    rng = np.random.default_rng(8)
    images = [make_event(rng, px_um=float(rng.choice([0.325, 0.5, 0.65])))[0].astype(np.float32)
              for _ in range(40)]
    fast = [preprocess._normalise(img) for img in images]
    monkeypatch.setattr(preprocess, "percentile_rows", _reference)
    slow = [preprocess._normalise(img) for img in images]
    assert any(img.shape[1] * img.shape[2] >= 4096 for img in images)  # the shortcut was taken
    for (n1, s1, f1), (n2, s2, f2) in zip(fast, slow, strict=True):
        assert _same(n1, n2) and _same(s1, s2) and f1 == f2


@pytest.mark.skipif(not (CTC_DEV / "events").is_dir(), reason="ctc-dev not present")
def test_normalisation_of_real_events_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.io import read_inputs
    from classifier.weights import default_contract

    contract = default_contract()
    inputs = read_inputs(sorted((CTC_DEV / "events").glob("*.tif")), ["DAPI", "CK", "AF", "CD45"])
    mapped = [preprocess.map_channels(i.image, list(i.channels), contract) for i in inputs]
    fast = [preprocess._normalise(m) for m in mapped]
    monkeypatch.setattr(preprocess, "percentile_rows", _reference)
    slow = [preprocess._normalise(m) for m in mapped]
    for (n1, s1, f1), (n2, s2, f2) in zip(fast, slow, strict=True):
        assert _same(n1, n2) and _same(s1, s2) and f1 == f2
