"""classifier.kernels.otsu_rows must be skimage's threshold_otsu, bit for bit.

The shipped weights were trained on preprocessing that thresholds with skimage; any
threshold that moves by one ULP can flip a mask pixel and so an attribute. Everything
here compares bit patterns (and dtypes) against skimage itself, on the images the
pipeline sees and on the inputs where the histogram's rounding corrections matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from classifier import preprocess
from classifier.kernels import otsu_rows

CTC_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ctc-dev"


def _same(got: np.ndarray | np.generic, want: np.ndarray | np.generic) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    return got.dtype == want.dtype and got.tobytes() == want.tobytes()


def _check_rows(rows: np.ndarray) -> int:
    """Compare row by row; rows skimage rejects must make otsu_rows raise too. Returns
    the number of rows compared."""
    wants: list[np.generic | None] = []
    for r in rows:
        try:
            wants.append(threshold_otsu(r))
        except ValueError:
            wants.append(None)
    ok = [i for i, w in enumerate(wants) if w is not None]
    if len(ok) < len(wants):
        with pytest.raises(ValueError):
            otsu_rows(rows)
        for i in range(len(wants)):
            if wants[i] is None:
                with pytest.raises(ValueError):
                    otsu_rows(rows[i:i + 1])
    got = otsu_rows(rows[ok])
    assert got.shape == (len(ok),)
    for j, i in enumerate(ok):
        assert _same(got[j], wants[i]), (i, got[j], wants[i])
    return len(ok)


def _reference_thresholds(smooth: np.ndarray) -> np.ndarray:
    """preprocess._thresholds as it was, one skimage call per channel."""
    out = np.empty(smooth.shape[0], np.float32)
    for k in range(smooth.shape[0]):
        ch = smooth[k]
        t = threshold_otsu(ch[::2, ::2]) if ch.max() > ch.min() else 1.0
        out[k] = float(np.clip(t, 0.15, 0.6)) if k == 0 else float(np.clip(0.5 * t, 0.15, 0.5))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_images_of_every_shape_and_distribution(dtype: type) -> None:
    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(300):
        k = int(rng.integers(1, 5))
        n = int(rng.choice([2, 3, 5, 16, 100, 256, 257, 1000, 1600, 6400]))
        kind = trial % 6
        if kind == 0:
            rows = rng.random((k, n))
        elif kind == 1:
            rows = rng.normal(0, 1, (k, n)) * 10.0 ** rng.integers(-6, 7)
        elif kind == 2:  # bimodal, like background plus cells
            rows = np.where(rng.random((k, n)) < 0.2, rng.normal(1.0, 0.1, (k, n)), rng.normal(0.05, 0.02, (k, n)))
        elif kind == 3:  # heavy tail
            rows = rng.lognormal(0, 2, (k, n))
        elif kind == 4:  # few distinct values: many pixels exactly on bin edges
            rows = rng.integers(0, int(rng.integers(2, 300)), (k, n)).astype(float) / rng.choice([1.0, 3.0, 255.0])
        else:  # normalised-and-clipped intensities, as preprocess makes them
            rows = np.clip(rng.normal(0.2, 0.5, (k, n)), -0.5, 1.5)
        compared += _check_rows((rows + rng.normal(0, 100) * (trial % 2)).astype(dtype))
    assert compared > 500  # most rows are ordinary ones


def test_values_on_the_bin_edges() -> None:
    # ranges whose edges are not exactly representable: the +-1 index corrections decide
    for top in (1.0, 0.1, 0.3, 1.7, 255.0, 1e-3, 12345.678):
        for dtype in (np.float32, np.float64):
            edges = np.linspace(dtype(0.0), dtype(top), 257, dtype=dtype)
            rows = np.stack([edges, edges[::-1], np.nextafter(edges, dtype(np.inf)),
                             np.concatenate([np.nextafter(edges, dtype(-np.inf))[1:], edges[:1]])])
            assert _check_rows(rows) == 4
            assert _check_rows(np.repeat(edges, 3)[None]) == 1


def test_edge_cases() -> None:
    f = np.float32
    _check_rows(np.array([[0.0, 1.0]], f))
    _check_rows(np.array([[1.0, 0.0, 0.0, 0.0]], f))
    _check_rows(np.array([[-0.5, 1.5, -0.5, 1.5]], f))
    _check_rows(np.array([[3.0, 3.0, 3.0, 3.5], [0.0, 0.0, 1.0, 1.0]], f))
    # constant rows (skimage returns the first pixel, -0.0 included) next to normal ones
    _check_rows(np.array([[0.25, 0.25, 0.25], [0.0, 1.0, 2.0], [-0.0, 0.0, 0.0], [0.0, -0.0, 0.0]], f))
    _check_rows(np.full((3, 10), 7.0, f))
    # huge magnitudes and huge ranges
    _check_rows(np.array([[1e30, -1e30, 0.0, 5e29]], f))
    _check_rows(np.array([[1e6, 1e6 + 64, 1e6 + 128, 1e6 + 4096]], f))
    # subnormal ranges: steps that are subnormal, zero, or too coarse for 256 distinct edges
    assert _check_rows(np.array([[0.0, 1e-40, 2e-40, 1e-39]], f)) == 1
    with pytest.raises(ValueError):
        threshold_otsu(np.array([0.0, 1e-45, 3e-45], f))
    assert _check_rows(np.array([[0.0, 1e-45, 3e-45], [0.0, 0.5, 1.0]], f)) == 1


def test_ranges_too_small_for_256_bins_raise_like_skimage() -> None:
    x = np.float32(1.0)
    up = np.nextafter(x, np.float32(2))
    few = np.array([[x, up, x, np.nextafter(up, np.float32(2))]])
    with pytest.raises(ValueError, match="Too many bins"):
        threshold_otsu(few[0])
    with pytest.raises(ValueError, match="Too many bins"):
        otsu_rows(few)
    # ... but a normal row beside a constant one is answered
    _check_rows(np.array([[x, x, x, x], [0.0, 0.5, 1.0, 0.25]], np.float32))


def test_non_finite_rows_raise_like_skimage() -> None:
    for bad in (np.nan, np.inf, -np.inf):
        row = np.array([[0.0, bad, 1.0, 0.5]], np.float32)
        with pytest.raises(ValueError):
            threshold_otsu(row[0])
        with pytest.raises(ValueError):
            otsu_rows(row)


def test_non_float_and_strided_input() -> None:
    rng = np.random.default_rng(1)
    ints = rng.integers(0, 1000, (3, 500)).astype(np.uint16)
    got = otsu_rows(ints)
    for i in range(3):
        assert got[i] == threshold_otsu(ints[i])
    img = rng.random((4, 40, 40)).astype(np.float32)
    view = img[:, ::2, ::2].reshape(4, -1)
    _check_rows(view)
    _check_rows(img.reshape(4, -1)[:, ::3])
    with pytest.raises(ValueError):
        otsu_rows(np.zeros(5, np.float32))


def _synthetic_smoothed(n: int) -> list[np.ndarray]:
    from classifier.synth.events import make_event

    rng = np.random.default_rng(11)
    out = []
    for _ in range(n):
        img, _ = make_event(rng, px_um=float(rng.choice([0.325, 0.5, 0.65, 1.0])))
        norm, smooth, _f = preprocess._normalise(np.asarray(img, np.float32))
        out.append(smooth[:3])
        out.append(np.asarray(norm[:3]))
    return out


def test_thresholds_match_skimage_on_synthetic_events() -> None:
    for sm in _synthetic_smoothed(60):
        assert _same(preprocess._thresholds(sm), _reference_thresholds(sm))


def test_thresholds_with_flat_and_nearly_flat_channels() -> None:
    rng = np.random.default_rng(5)
    sm = rng.random((3, 40, 40)).astype(np.float32)
    cases = [sm.copy() for _ in range(4)]
    cases[0][1] = 0.3  # a flat channel
    cases[1][:] = 0.0  # all flat
    cases[2][2, 1::2, :] = 0.9  # varies, but its [::2, ::2] subsample is constant
    cases[2][2, ::2, :] = 0.1
    cases[3][0, ::2, ::2] = 0.2  # DAPI subsample constant
    for sm_case in cases:
        assert _same(preprocess._thresholds(sm_case), _reference_thresholds(sm_case))


@pytest.mark.skipif(not (CTC_DEV / "events").is_dir(), reason="ctc-dev not present")
def test_prepare_image_is_unchanged_on_real_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole preprocessing of the ctc-dev events with the fast thresholds and with the
    per-channel skimage loop: identical crops and masks."""
    from classifier.io import read_inputs
    from classifier.weights import default_contract

    contract = default_contract()
    paths = sorted((CTC_DEV / "events").glob("*.tif"))
    assert paths
    inputs = read_inputs(paths, ["DAPI", "CK", "AF", "CD45"])
    fast = [preprocess.prepare_image(i.image, list(i.channels), contract, i.pixel_size_um) for i in inputs]
    for i in inputs:
        norm, smooth, f = preprocess._normalise(preprocess.map_channels(i.image, list(i.channels), contract))
        assert _same(preprocess._thresholds(smooth[:3]), _reference_thresholds(smooth[:3]))
    monkeypatch.setattr(preprocess, "_thresholds", _reference_thresholds)
    slow = [preprocess.prepare_image(i.image, list(i.channels), contract, i.pixel_size_um) for i in inputs]
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a.crops, b.crops) and np.array_equal(a.nucleus, b.nucleus)
        assert np.array_equal(a.cell, b.cell) and np.array_equal(a.px_um, b.px_um)
