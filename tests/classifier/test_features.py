"""Attributes: vectorised, batch-independent, and measuring what their names say."""

from __future__ import annotations

import numpy as np
import pytest

from classifier import features


def disk(s: int, r: float, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:s, :s]
    cy = (s - 1) / 2 if cy is None else cy
    cx = (s - 1) / 2 if cx is None else cx
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_shapes_names_and_finite(small_set):
    names = features.feature_names()
    assert small_set.feats.shape == (len(small_set), len(names))
    assert small_set.feats.dtype == np.float32
    assert np.isfinite(small_set.feats).all()
    assert len(set(names)) == len(names)


def test_batch_result_equals_per_event_result(small_set):
    crops = small_set.crops[:8].astype(np.float32)
    f_all, _ = features.compute(crops, small_set.nucleus[:8], small_set.cell[:8], 0.5)
    f_one = np.concatenate([features.compute(crops[i:i + 1], small_set.nucleus[i:i + 1], small_set.cell[i:i + 1],
                                             0.5)[0] for i in range(8)])
    assert np.allclose(f_all, f_one, atol=1e-5)


def test_area_diameter_and_nc_ratio_of_known_masks():
    s = 48
    cell = disk(s, 12)[None]
    nuc = disk(s, 6)[None]
    crops = np.zeros((1, 4, s, s), np.float32)
    f, names = features.compute(crops, nuc, cell, 0.5)
    v = dict(zip(names, f[0], strict=True))
    assert v["cell_diameter_um"] == pytest.approx(12.0, rel=0.05)  # 24 px * 0.5 µm
    assert v["nc_ratio"] == pytest.approx(0.25, rel=0.1)
    assert v["cell_eccentricity"] < 0.2


def test_marker_contrast_follows_the_marker():
    s = 48
    cell = disk(s, 10)[None]
    crops = np.random.default_rng(0).normal(0, 0.02, (2, 4, s, s)).astype(np.float32)
    crops[0, 1][cell[0]] += 1.0  # CK+ cell
    crops[1, 2][cell[0]] += 1.0  # CD45+ cell
    f, names = features.compute(crops, np.zeros_like(np.repeat(cell, 2, 0)), np.repeat(cell, 2, 0), 0.5)
    ck, cd45 = names.index("CK_contrast"), names.index("CD45_contrast")
    assert f[0, ck] > 5 > f[1, ck]
    assert f[1, cd45] > 5 > f[0, cd45]


def test_glcm_flat_vs_textured_and_fragment_count():
    s = 32
    m = np.ones((2, s, s), bool)
    flat = np.full((s, s), 0.5, np.float32)
    checker = (np.indices((s, s)).sum(0) % 2).astype(np.float32)
    g, names = features.glcm_features(np.stack([flat, checker]), m)
    contrast = g[:, names.index("glcm1_contrast")]
    assert contrast[0] == 0 and contrast[1] > 10
    assert g[0, names.index("glcm1_energy")] == pytest.approx(1.0)
    # three separate bright DAPI bodies in one cell
    dapi = np.zeros((1, s, s), np.float32)
    for cy, cx in ((8, 8), (8, 22), (22, 15)):
        dapi[0][disk(s, 2.5, cy, cx)] = 1.0
    assert features._fragments(dapi, np.ones((1, s, s), bool))[0] == 3


def test_lbp_histogram_sums_to_one(small_set):
    h, _ = features.lbp_histogram(small_set.crops[:5, 0].astype(np.float32), small_set.cell[:5])
    assert h.shape == (5, 10)
    assert np.allclose(h.sum(1), 1.0)


def _moments_reference(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second moments summed over centred coordinate grids (the definition)."""
    s = m.shape[-1]
    yy, xx = np.mgrid[:s, :s].astype(np.float64)
    a = np.maximum(m.sum(axis=(1, 2)), 1)
    cy = (m * yy).sum(axis=(1, 2)) / a
    cx = (m * xx).sum(axis=(1, 2)) / a
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    myy, mxx = (m * dy * dy).sum(axis=(1, 2)) / a, (m * dx * dx).sum(axis=(1, 2)) / a
    mxy = (m * dx * dy).sum(axis=(1, 2)) / a
    tr, det = myy + mxx, myy * mxx - mxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    ecc = np.sqrt(np.clip(1 - l2 / np.maximum(l1, 1e-6), 0, 1))
    return cy, cx, np.where(m.any(axis=(1, 2)), ecc, 0.0)


def test_fast_moments_and_correlations_equal_their_definitions(small_set):
    """The speed-ups (moments from marginals, Pearson from one Gram matrix, fragment
    counts without a scatter) give the defining computations' values."""
    crops = small_set.crops[:64].astype(np.float32)
    cell, nuc = small_set.cell[:64].copy(), small_set.nucleus[:64]
    cell[0] = False  # an empty mask: 0, as before
    for got, want in zip(features._moments(cell), _moments_reference(cell), strict=True):
        assert np.allclose(got, want, rtol=1e-6, atol=1e-6)
    pix = crops.reshape(64, 4, -1)
    pairs = ((0, 1), (1, 2), (3, 0))
    fast = features._pearson_all(pix, cell.reshape(64, -1), pairs)
    for (a, b), got in zip(pairs, fast, strict=True):
        assert np.allclose(got, features._pearson(crops[:, a], crops[:, b], cell), atol=1e-5)
    counts = features._fragments(crops[:, 0], cell | nuc)
    from scipy import ndimage as ndi

    for i in range(0, 64, 7):
        m = (cell | nuc)[i]
        peak = np.where(m, crops[i, 0], 0).max()
        bright = m & (crops[i, 0] > 0.5 * peak) & (peak > 0.1)
        lab, k = ndi.label(bright)
        want = int((np.bincount(lab.ravel())[1:] >= 2).sum()) if k else 0
        assert counts[i] == want, i
