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


def _pearson_reference(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` inside ``m`` per event, as defined."""
    n = np.maximum(m.sum(axis=(1, 2)), 1)
    da = a - (a * m).sum(axis=(1, 2))[:, None, None] / n[:, None, None]
    db = b - (b * m).sum(axis=(1, 2))[:, None, None] / n[:, None, None]
    cov, var_a, var_b = ((u * v * m).sum(axis=(1, 2)) / n for u, v in ((da, db), (da, da), (db, db)))
    return cov / np.sqrt(var_a * var_b + 1e-6)


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
        assert np.allclose(got, _pearson_reference(crops[:, a], crops[:, b], cell), atol=1e-5)
    counts = features._fragments(crops[:, 0], cell | nuc)
    from scipy import ndimage as ndi

    for i in range(0, 64, 7):
        m = (cell | nuc)[i]
        peak = np.where(m, crops[i, 0], 0).max()
        bright = m & (crops[i, 0] > 0.5 * peak) & (peak > 0.1)
        lab, k = ndi.label(bright)
        want = int((np.bincount(lab.ravel())[1:] >= 2).sum()) if k else 0
        assert counts[i] == want, i


def _texture_batch(rng: np.random.Generator, n: int = 7, s: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Images with ties and flat patches (levels of 0.01, so neighbours sit exactly on the
    LBP tolerance) and masks touching every edge and corner: random, full, empty, one pixel."""
    x = (rng.integers(0, 6, (n, s, s)) * 0.01).astype(np.float32)
    x[1, :, : s // 2] = 0.5  # a flat half
    m = rng.random((n, s, s)) < 0.6
    m[2] = True
    m[3] = False
    m[4:6] = False
    m[4, 0, s - 1] = True
    m[5, :, 0] = m[5, :, -1] = True  # the left and right columns only: no pair may wrap between them
    return x, m


def _lbp_reference(x: np.ndarray, m: np.ndarray, tol: float = 0.02) -> np.ndarray:
    """Per-bit LBP on an ``np.pad(mode="edge")`` copy, code from popcount and transitions."""
    n, s, _ = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    bits = np.stack([p[:, 1 + dy:1 + dy + s, 1 + dx:1 + dx + s] >= x + tol for dy, dx in features._NEIGHBOURS])
    ones = bits.sum(0)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(0)
    code = np.where(transitions <= 2, ones, 9)
    hist = np.array([np.bincount(code[i][m[i]], minlength=10) for i in range(n)], np.float64)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1)


def test_lbp_bytes_and_shared_pad_equal_the_per_bit_reference(rng):
    """The packed-byte LBP (table lookup, hand-made edge pad shared with the Laplacian)
    counts exactly what the per-bit definition on an np.pad copy counts, edges included;
    images with leading axes (N, 2, S, S) give the same per image."""
    x, m = _texture_batch(rng)
    want = _lbp_reference(x, m)
    assert np.array_equal(features.lbp_histogram(x, m)[0], want)
    counts = m.sum(axis=(1, 2))
    assert np.array_equal(features.lbp_histogram(x, m, counts=counts, padded=features._edge_pad(x))[0], want)
    assert np.array_equal(features._edge_pad(x), np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge"))
    pair, pair_m = np.stack([x, x[::-1]], 1), np.stack([m, m[::-1]], 1)
    got = features.lbp_histogram(pair, pair_m)[0]
    assert got.shape == (len(x), 2, 10)
    assert np.array_equal(got[:, 0], want) and np.array_equal(got[:, 1], want[::-1])


def _glcm_reference(q: np.ndarray, m: np.ndarray, distances: tuple[int, ...]) -> np.ndarray:
    """Haralick features image by image: pairs from 2-D slices, two-pass moments."""
    lv = features._LEVELS
    i, j = np.meshgrid(np.arange(lv), np.arange(lv), indexing="ij")
    rows = []
    for qi, mi in zip(q.astype(np.int64), m, strict=True):
        row = []
        for d in distances:
            counts = np.zeros(lv * lv)
            for a, b, ma, mb in ((qi[:-d], qi[d:], mi[:-d], mi[d:]), (qi[:, :-d], qi[:, d:], mi[:, :-d], mi[:, d:])):
                counts += np.bincount((a * lv + b)[ma & mb], minlength=lv * lv)
            p = counts.reshape(lv, lv)
            p = p + p.T
            p = p / max(p.sum(), features._EPS)
            mu = (p * i).sum()
            var = (p * (i - mu) ** 2).sum()
            row += [(p * (i - j) ** 2).sum(), (p / (1.0 + np.abs(i - j))).sum(), np.sqrt((p**2).sum()),
                    (p * (i - mu) * (j - mu)).sum() / max(var, features._EPS), -(p * np.log(p + features._EPS)).sum()]
        rows.append(row)
    return np.array(rows)


def test_glcm_flat_layout_equals_the_per_image_reference(rng):
    """One bincount over the padded flat layout (all images and distances at once, 2-byte
    codes) gives each image's co-occurrence features, with no pair wrapping across rows."""
    x, m = _texture_batch(rng)
    q = features._quantise(x, m)
    want = _glcm_reference(q, m, (1, 2))
    got = features._glcm(q, m, (1, 2))
    assert np.allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.allclose(features._glcm(q, m, (1, 3, 2)), _glcm_reference(q, m, (1, 3, 2)), rtol=1e-9, atol=1e-12)
    # the int64 codes of a batch too large for 2-byte ones agree too
    big_q, big_m = np.tile(q, (80, 1, 1)), np.tile(m, (80, 1, 1))
    assert len(big_q) * 2 * 64 > 1 << 16
    assert np.allclose(features._glcm(big_q, big_m, (1, 2))[: len(q)], want, rtol=1e-9, atol=1e-12)


def test_quantise_laplace_and_masked_extremes_equal_the_plain_expressions(rng):
    """The in-place quantisation (one division by range / levels), the Laplacian from the
    shared edge pad and the masked copy for extrema give the straightforward expressions'
    values to the bit, empty masks included."""
    x, m = _texture_batch(rng)
    x = x + rng.normal(0, 0.3, x.shape).astype(np.float32)
    big = np.where(m, x, -np.inf).max(axis=(1, 2))
    small = np.where(m, x, np.inf).min(axis=(1, 2))
    assert np.array_equal(features._masked_extreme(np.maximum, x.reshape(len(x), -1), m.reshape(len(x), -1),
                                                   -np.inf, np.empty((len(x), x[0].size), np.float32)), big)
    rng_ = np.maximum(np.where(np.isfinite(big), big, 1.0) - np.where(np.isfinite(small), small, 0.0), 1e-6)
    q = (x - np.where(np.isfinite(small), small, 0.0)[:, None, None]) / rng_[:, None, None]
    want = np.clip((q * features._LEVELS).astype(np.int64), 0, features._LEVELS - 1)
    assert np.array_equal(features._quantise(x, m), want)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * x
    assert np.array_equal(features._laplace(x), lap)


def test_chunked_compute_equals_one_batch(small_set, monkeypatch):
    """compute() works in chunks of events; the chunks' rows are the whole batch's."""
    crops, nuc, cell = small_set.crops[:40].astype(np.float32), small_set.nucleus[:40], small_set.cell[:40]
    whole, names = features.compute(crops, nuc, cell, 0.5)
    monkeypatch.setattr(features, "_CHUNK", 7)
    chunked, chunked_names = features.compute(crops, nuc, cell, 0.5)
    assert chunked_names == names
    assert np.allclose(chunked, whole, rtol=1e-6, atol=1e-7)
    empty, empty_names = features.compute(crops[:0], nuc[:0], cell[:0], 0.5)
    assert empty.shape == (0, len(names)) and empty_names == names
