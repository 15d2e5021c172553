"""Texture and fluorescence attributes of events, computed for a whole batch at once.

Input: normalised crops (N, C, S, S) in the contract's channel order (DAPI, CK, CD45,
AF) with the event's nucleus and cell masks. Everything is vectorised over the batch
(numpy, no per-event Python loops) so that a 1,000-event gallery costs milliseconds:

- **intensity**: per channel, mean in nucleus / cytoplasm / cell, max in cell, contrast of
  the cell against the rest of the crop (stretch-invariant signal-to-background);
- **shape**: areas (µm²), equivalent diameter, nucleus-to-cell (N/C) area ratio,
  eccentricities, boundary roughness, nucleus offset, number of DAPI fragments;
- **texture**: grey-level co-occurrence (GLCM/Haralick: contrast, homogeneity, energy,
  correlation, entropy at distances 1 and 2, both axes pooled) and rotation-invariant
  uniform LBP histograms, for DAPI in the nucleus and CK in the cell; granularity;
- **co-localisation**: Pearson DAPI-CK, CK-CD45 and AF-DAPI in the cell, CK overlap
  with the nucleus (Manders-like), CD45 rim-to-interior ratio (membrane ring).

Speed: the cost is passes over full-size planes (and page faults on large temporaries),
so :func:`compute` works in C-ordered chunks of :data:`_CHUNK` events, builds each float
mask once, writes full-size float temporaries into one reused scratch array, and shares
masked extrema, sums and the edge-padded texture planes between attributes. The
reductions that feed a threshold (the quantisation range, the hotspot level, the fragment
threshold) are kept to the bit, so no level or count flips on a rounding difference.
Crops are finite (preprocessing rejects NaN and infinity), which the quantisation relies on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

CH = ("DAPI", "CK", "CD45", "AF")
_LEVELS = 8
_EPS = 1e-6


def _masked_sum(x: np.ndarray, mf: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``(x * m).sum(axis=(-2, -1))`` for the 0/1 float mask ``mf``, to the bit (the same
    products, the same pairwise summation), the products written into ``scratch``."""
    np.multiply(x, mf, out=scratch)
    return scratch.sum(axis=(-2, -1))


def _masked_extreme(ufunc: np.ufunc, x: np.ndarray, m: np.ndarray, fill: float, scratch: np.ndarray) -> np.ndarray:
    """``ufunc.reduce(np.where(m, x, fill), axis=-1)``: ``np.maximum`` with fill -inf (or
    ``np.minimum`` with inf) gives the masked max (min), ``fill`` where the mask is empty.
    A masked copy into ``scratch`` costs half of np.where's select and allocates nothing."""
    scratch.fill(fill)
    np.copyto(scratch, x, where=m)
    return ufunc.reduce(scratch, axis=-1)


def _pearson_all(pix: np.ndarray, m: np.ndarray, pairs: tuple[tuple[int, int], ...],
                 scratch: np.ndarray | None = None) -> list[np.ndarray]:
    """Pearson correlations of several channel pairs inside one mask, from one masked Gram
    matrix per event of the centred channels. ``pix`` (N, C, P) float32, ``m`` (N, P)
    bool or 0/1 float32; ``scratch``: a float32 array shaped like ``pix`` for the centred
    channels. Equal to the definition (deviations from the masked means, averaged over
    the mask; a test checks it) to float32 rounding, several times faster than a pass per
    pair."""
    mf = m.astype(np.float32, copy=False)
    n = np.maximum(mf.sum(-1), 1.0)  # (N,)
    mean = np.einsum("ncp,np->nc", pix, mf) / n[:, None]  # masked means (N, C)
    d = np.subtract(pix, mean[:, :, None], out=scratch)  # centred first: no cancellation
    # two operands (not d @ d.T, which numpy hands to BLAS syrk, twice as slow here)
    gram = np.matmul(d * mf[:, None, :], d.transpose(0, 2, 1)) / n[:, None, None]  # (N, C, C)
    return [gram[:, a, b] / np.sqrt(gram[:, a, a] * gram[:, b, b] + _EPS) for a, b in pairs]


def _boundary(m: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (beyond the crop's edge counts as outside)."""
    inner = np.zeros_like(m)
    inner[:, 1:-1, 1:-1] = m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    return m & ~inner


def _moments(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (y, x) and eccentricity of each mask (N, S, S), bool or 0/1 float32, from
    second moments.

    From the mask's row and column sums and its x moment per row (raw moments, centred
    afterwards in float64): the same values as summing over centred coordinate grids to
    float32 rounding, without five full-size temporaries per call. These sums are of small
    integers, exact in float32."""
    s = m.shape[-1]
    mf = m.astype(np.float32, copy=False)
    c = np.arange(s, dtype=np.float64)
    rows = np.einsum("nyx->ny", mf).astype(np.float64)  # (N, S): mass per y
    cols = np.einsum("nyx->nx", mf).astype(np.float64)  # (N, S): mass per x
    x_by_row = np.einsum("nyx,x->ny", mf, c.astype(np.float32)).astype(np.float64)
    mass = rows.sum(axis=1)
    a = np.maximum(mass, 1)
    # products with c as sums, not BLAS gemv: that starts threads from N * S >= 9216, slow on a busy machine
    cy, cx = (rows * c).sum(1) / a, (cols * c).sum(1) / a
    myy = np.maximum((rows * (c * c)).sum(1) / a - cy * cy, 0.0)
    mxx = np.maximum((cols * (c * c)).sum(1) / a - cx * cx, 0.0)
    mxy = (x_by_row * c).sum(1) / a - cy * cx
    tr, det = myy + mxx, myy * mxx - mxy**2
    disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
    ecc = np.sqrt(np.clip(1 - l2 / np.maximum(l1, _EPS), 0, 1))
    return cy, cx, np.where(mass > 0, ecc, 0.0)


def _quantise(x: np.ndarray, m: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
              scratch: np.ndarray | None = None) -> np.ndarray:
    """Quantise each image's (..., S, S) intensities to ``_LEVELS`` levels (uint8) relative
    to its own range inside the mask, so texture is comparable across brightness and
    contrast. ``lo``/``hi``: the masked min/max when known (inf/-inf for an empty mask);
    ``scratch``: a float32 array shaped like ``x`` for the intermediate values."""
    hi = np.where(m, x, -np.inf).max(axis=(-2, -1)) if hi is None else hi
    lo = np.where(m, x, np.inf).min(axis=(-2, -1)) if lo is None else lo
    big = np.where(np.isfinite(hi), hi, 1.0)
    small = np.where(np.isfinite(lo), lo, 0.0)
    rng = np.maximum(big - small, _EPS)
    q = np.subtract(x, small[..., None, None], out=scratch)
    # / (rng / L) is (/ rng) * L to the bit: scaling by a power of two commutes with
    # rounding (no overflow here, and a subnormal quotient is level 0 either way)
    q /= (rng / _LEVELS)[..., None, None]
    # clipping, then truncating gives the level that truncating, then clipping gives (finite values)
    np.clip(q, 0, _LEVELS - 1, out=q)
    return q.astype(np.uint8)


_GLCM_NAMES = ("contrast", "homogeneity", "energy", "correlation", "entropy")
_I, _J = (np.indices((_LEVELS, _LEVELS)).reshape(2, -1)).astype(np.float64)
# per GLCM cell (i, j): the weights of contrast, homogeneity, E[i], E[i^2], E[ij]
_GLCM_WEIGHTS = np.stack([(_I - _J) ** 2, 1.0 / (1.0 + np.abs(_I - _J)), _I, _I * _I, _I * _J], 1)


def _glcm(q: np.ndarray, m: np.ndarray, distances: tuple[int, ...]) -> np.ndarray:
    """Haralick features (G, 5 * len(distances)) of levels ``q`` (G, S, S) uint8 inside ``m``.

    The co-occurrence counts of all images and distances come from one ``bincount`` of
    pair codes ``((image * len(distances) + distance) * L + first) * L + second`` (L levels).
    The planes are laid out with ``max(distances)`` blank columns on the right: a pair is a
    fixed offset in the flat layout (d rows down or d columns across), and one across never
    wraps into the next row inside the mask, so each pass runs over contiguous memory."""
    g, s = q.shape[0], q.shape[-1]
    lv, nd = _LEVELS, len(distances)
    bins = lv * lv
    w = s + max(distances)
    key_t = np.uint16 if g * nd * bins <= 1 << 16 else np.int64  # 2-byte codes for a chunk
    inside = np.zeros((g, s, w), bool)
    inside[..., :s] = m
    first = np.zeros((g, s, w), key_t)  # the image's first bin + first level * L
    np.multiply(q, lv, out=first[..., :s], dtype=key_t)
    first += (np.arange(g, dtype=key_t) * (nd * bins))[:, None, None]
    second = np.zeros((g, s, w), np.uint8)
    second[..., :s] = q
    inside, first, second = inside.reshape(g, -1), first.reshape(g, -1), second.reshape(g, -1)
    size = s * w
    codes = []
    for k, d in enumerate(distances):
        for off in (d * w, d):  # down, across
            c = np.add(first[:, :size - off], second[:, off:], dtype=key_t)[inside[:, :size - off] & inside[:, off:]]
            c += k * bins
            codes.append(c)
    counts = np.bincount(np.concatenate(codes), minlength=g * nd * bins).astype(np.float64)
    p = counts.reshape(g * nd, lv, lv)
    p = (p + p.transpose(0, 2, 1)).reshape(g * nd, bins)  # symmetric
    p /= np.maximum(p.sum(axis=1, keepdims=True), _EPS)
    # the features linear in p in one product; p is symmetric, so the j marginal is the i one
    contrast, homog, mu, mean_ii, mean_ij = (p @ _GLCM_WEIGHTS).T
    var = mean_ii - mu * mu
    corr = (mean_ij - mu * mu) / np.maximum(var, _EPS)
    energy = np.sqrt(np.einsum("gk,gk->g", p, p))
    entropy = -(p * np.log(p + _EPS)).sum(axis=1)
    return np.stack([contrast, homog, energy, corr, entropy], -1).reshape(g, nd * len(_GLCM_NAMES))


def glcm_features(x: np.ndarray, m: np.ndarray, distances: tuple[int, ...] = (1, 2)) -> tuple[np.ndarray, list[str]]:
    """Haralick features from symmetric GLCMs pooled over the two axes, per distance."""
    names = [f"glcm{d}_{k}" for d in distances for k in _GLCM_NAMES]
    return _glcm(_quantise(x, m), m, distances), names


_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _uniform_lbp_codes() -> np.ndarray:
    """Rotation-invariant uniform code (uint8) of each 8-bit neighbour pattern (bit k:
    neighbour k of ``_NEIGHBOURS``, which go round the circle): the number of set bits when
    the circular pattern has at most two 0/1 transitions, else 9."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    transitions = (bits != np.roll(bits, 1, axis=1)).sum(axis=1)
    return np.where(transitions <= 2, bits.sum(axis=1), 9).astype(np.uint8)


_LBP_CODE = _uniform_lbp_codes()


def _edge_pad(x: np.ndarray) -> np.ndarray:
    """``np.pad`` of the last two axes by one pixel, ``mode="edge"``, from five slice copies
    (np.pad's general path costs more than the copy itself at these sizes)."""
    p = np.empty((*x.shape[:-2], x.shape[-2] + 2, x.shape[-1] + 2), x.dtype)
    p[..., 1:-1, 1:-1] = x
    p[..., 0, 1:-1] = x[..., 0, :]
    p[..., -1, 1:-1] = x[..., -1, :]
    p[..., 0] = p[..., 1]
    p[..., -1] = p[..., -2]
    return p


def lbp_histogram(x: np.ndarray, m: np.ndarray, tol: float = 0.02, *, counts: np.ndarray | None = None,
                  padded: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Rotation-invariant uniform LBP (P=8, R=1) histogram inside the mask (10 bins) of each
    image (..., S, S).

    ``tol`` keeps noise on flat regions from flipping bits; ``counts``: the mask's pixel
    count per image and ``padded``: :func:`_edge_pad` of ``x``, when known. Each pixel's 8
    comparisons are packed into one byte (Horner: double, then set the next bit) and the
    masked bytes mapped to their code with a 256-entry table: a few uint8 passes instead
    of popcount and transition planes."""
    s = x.shape[-1]
    p = _edge_pad(x) if padded is None else padded
    xt = x + tol
    pattern = np.zeros(x.shape, np.uint8)
    bit = np.empty(x.shape, bool)
    for dy, dx in reversed(_NEIGHBOURS):  # neighbour k ends up in bit k
        np.greater_equal(p[..., 1 + dy:1 + dy + s, 1 + dx:1 + dx + s], xt, out=bit)
        pattern += pattern
        pattern |= bit.view(np.uint8)
    if counts is None:
        counts = np.count_nonzero(m, axis=(-2, -1))
    g = counts.size
    # boolean indexing keeps C order: image 0's masked pixels first, then image 1's, ...
    key = np.repeat(np.arange(g) * 10, counts.ravel())
    key += np.take(_LBP_CODE, pattern[m])
    hist = np.bincount(key, minlength=g * 10).reshape(*x.shape[:-2], 10).astype(np.float64)
    hist /= np.maximum(hist.sum(axis=-1, keepdims=True), 1)
    return hist, [f"lbp_{k}" for k in range(10)]


_FOUR_CONNECTED_2D = np.zeros((3, 3, 3), bool)  # in-plane 4-connectivity, nothing across events
_FOUR_CONNECTED_2D[1] = ndi.generate_binary_structure(2, 1)


def _fragments(dapi: np.ndarray, cell: np.ndarray, peak: np.ndarray | None = None) -> np.ndarray:
    """Number of separate bright DAPI bodies in the cell (fragmented nuclei have several).

    ``peak``: the cell's brightest DAPI value when known. Only ``peak > 0.1`` and
    ``0.5 * peak`` matter, and there the cell's maximum equals the crop's maximum with 0
    outside the cell."""
    n = dapi.shape[0]
    peak = np.where(cell, dapi, 0).max(axis=(1, 2)) if peak is None else peak
    bright = dapi > np.where(peak > 0.1, 0.5 * peak, np.inf)[:, None, None]
    bright &= cell
    lab, k = ndi.label(bright, structure=_FOUR_CONNECTED_2D)
    if k == 0:
        return np.zeros(n)
    sizes = np.bincount(lab[bright], minlength=k + 1)  # labelled pixels only: far fewer than the crop's
    keep = np.nonzero(sizes[1:] >= 2)[0] + 1
    # labels are numbered in scan order and never span two events (no connectivity along
    # the batch axis), so event i holds the labels in (max of events < i, max of event i]
    last = np.maximum.accumulate(lab.reshape(n, -1).max(axis=1))
    return np.bincount(np.searchsorted(last, keep, side="left"), minlength=n).astype(np.float64)


def _laplace(x: np.ndarray, padded: np.ndarray | None = None) -> np.ndarray:
    """4-neighbour Laplacian of the last two axes with edge-replicated borders; ``padded``:
    :func:`_edge_pad` of ``x`` when already made (texture shares it with the LBP)."""
    p = _edge_pad(x) if padded is None else padded
    lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1]
    lap += p[..., 1:-1, :-2]
    lap += p[..., 1:-1, 2:]
    lap -= 4 * x
    return lap


# Events per internal chunk. A chunk's temporaries (0.6 MB per float plane of 64 crops of
# 48 x 48) stay in cache and are reused by malloc instead of being mapped and page-faulted
# afresh: the bench's 256 events, timed in its process, cost ~180 µs/event in chunks of 32,
# ~155 in 64, ~180 in 128 and ~235 all at once (~4,900 page faults per call).
_CHUNK = 64


def compute(crops: np.ndarray, nucleus: np.ndarray, cell: np.ndarray, um_per_px: float
            ) -> tuple[np.ndarray, list[str]]:
    """All attributes: float32 (N, F) and their names (stable order).

    Each event's attributes depend on that event alone, so chunks of :data:`_CHUNK`
    events give the whole batch's result."""
    crops = np.asarray(crops, np.float32)  # no copy when already float32
    if len(crops) == 0:
        names = feature_names()
        return np.zeros((0, len(names)), np.float32), names
    parts = [_compute(crops[a:a + _CHUNK], nucleus[a:a + _CHUNK], cell[a:a + _CHUNK], um_per_px)
             for a in range(0, len(crops), _CHUNK)]
    return (parts[0][0] if len(parts) == 1 else np.concatenate([f for f, _ in parts])), parts[0][1]


def _compute(crops: np.ndarray, nucleus: np.ndarray, cell: np.ndarray, um_per_px: float
             ) -> tuple[np.ndarray, list[str]]:
    """:func:`compute` of one chunk.

    Reductions that decide a discrete outcome (the quantisation range, the hotspot level,
    the fragment threshold) and the sums that enter a ratio are computed exactly as the
    straightforward expressions (noted in place) so the attributes do not move by more
    than float32 rounding."""
    # one copy to C order: prepared crops come channels-last (strides (.., 4, 16, 768)
    # bytes), where every per-channel pass below would stride through memory, ~2x slower
    crops = np.ascontiguousarray(crops)
    nucleus, cell = np.ascontiguousarray(nucleus), np.ascontiguousarray(cell)
    n, s = crops.shape[0], crops.shape[-1]
    px = s * s
    cols: list[np.ndarray] = []
    names: list[str] = []
    scratch = np.empty((n, len(CH), px), np.float32)  # reused by every full-size float temporary

    # --- intensity per channel: all channels x all masks in one batched contraction
    pix = crops.reshape(n, len(CH), px)
    regions = np.stack([nucleus, cell & ~nucleus, cell, ~cell], 1).reshape(n, 4, px).astype(np.float32)
    area = np.einsum("nmp->nm", regions)  # (N, 4) pixel counts, exact (integers < 2**24)
    counts = np.maximum(area, 1.0)
    nuc_f, cell_f = regions[:, 0].reshape(n, s, s), regions[:, 2].reshape(n, s, s)
    means = np.einsum("ncp,nmp->ncm", pix, regions, optimize=True) / counts[:, None, :]  # (N, C, 4)
    out_sq = np.einsum("ncp,np->nc", np.multiply(pix, pix, out=scratch), regions[:, 3], optimize=True)
    out_sd = np.sqrt(np.maximum(out_sq / counts[:, None, 3] - means[:, :, 3] ** 2, 0.0))
    cell_top = _masked_extreme(np.maximum, pix, cell.reshape(n, 1, px), -np.inf, scratch)  # (N, C)
    cell_max = np.maximum(cell_top, -1.0)  # = np.where(cell, pix, -1).max(-1)
    for k, ch in enumerate(CH):
        vals = {
            "nucleus_mean": means[:, k, 0],
            "cytoplasm_mean": means[:, k, 1],
            "cell_mean": means[:, k, 2],
            "cell_max": cell_max[:, k],
            "outside_mean": means[:, k, 3],
            "contrast": (means[:, k, 2] - means[:, k, 3]) / (out_sd[:, k] + 0.05),
        }
        for key, v in vals.items():
            cols.append(v)
            names.append(f"{ch}_{key}")

    # --- shape (pixel counts are exact, so float64 areas equal those from integer sums)
    px2 = um_per_px**2
    n_nuc, n_cell = area[:, 0].astype(np.float64), area[:, 2].astype(np.float64)
    a_cell, a_nuc = n_cell * px2, n_nuc * px2
    rim_f = _boundary(cell).astype(np.float32)
    n_rim = np.einsum("nij->n", rim_f).astype(np.float64)
    cy, cx, ecc_cell = _moments(cell_f)
    ny, nx, ecc_nuc = _moments(nuc_f)
    has_nuc = n_nuc > 0
    shape = {
        "cell_area_um2": a_cell,
        "nucleus_area_um2": a_nuc,
        "cell_diameter_um": 2 * np.sqrt(a_cell / np.pi),
        "nc_ratio": a_nuc / np.maximum(a_cell, px2),
        "cell_eccentricity": ecc_cell,
        "nucleus_eccentricity": ecc_nuc,
        "cell_roughness": (n_rim * um_per_px) ** 2 / (4 * np.pi * np.maximum(a_cell, px2)),
        "nucleus_offset_um": np.where(has_nuc, np.hypot(ny - cy, nx - cx) * um_per_px, 0.0),
        "has_nucleus": has_nuc.astype(np.float64),
        "dapi_fragments": _fragments(crops[:, 0], cell, peak=cell_top[:, 0]),
    }
    cols += list(shape.values())
    names += list(shape)

    # --- texture of DAPI in the nucleus (the cell if there is none) and CK in the cell,
    # both channels at once: arrays (N, 2, ...) in the order DAPI, CK
    tex = crops[:, :2]
    region = np.stack([np.where(has_nuc[:, None, None], nucleus, cell), cell], 1)
    region_f = region.astype(np.float32)
    n_region = np.stack([np.where(has_nuc, n_nuc, n_cell), n_cell], 1)  # (N, 2) pixel counts
    per = np.maximum(n_region, 1)
    flat, flat_region = scratch[:, :2], region.reshape(n, 2, px)
    top = _masked_extreme(np.maximum, pix[:, :2], flat_region, -np.inf, flat)
    bottom = _masked_extreme(np.minimum, pix[:, :2], flat_region, np.inf, flat)
    levels = _quantise(tex, region, lo=bottom, hi=top, scratch=scratch[:, :2].reshape(n, 2, s, s))
    glcm = _glcm(levels.reshape(2 * n, s, s), region.reshape(2 * n, s, s), (1, 2)).reshape(n, 2, -1)
    padded = _edge_pad(tex)
    lbp, lbp_names = lbp_histogram(tex, region, counts=n_region.astype(np.int64), padded=padded)
    # the mean as _mean computes it, to the bit: the hotspot threshold is 2 x the mean
    total = _masked_sum(tex, region_f, scratch[:, :2].reshape(n, 2, s, s))  # (N, 2) float32
    mu = total / per  # float64, as float32 sum / integer count gives
    lap = _laplace(tex, padded)
    mu_lap = np.einsum("ncij,ncij->nc", lap, region_f) / per
    # spreads of intensity and Laplacian: two-pass, the deviations masked, in float32
    dev = scratch.reshape(n, 2, 2, s, s)  # (N, [intensity, Laplacian], [DAPI, CK], S, S)
    np.subtract(tex, mu.astype(np.float32)[..., None, None], out=dev[:, 0])
    np.subtract(lap, mu_lap.astype(np.float32)[..., None, None], out=dev[:, 1])
    dev *= region_f[:, None]
    sd, sd_lap = np.sqrt(np.einsum("nkcij,nkcij->knc", dev, dev) / per)
    hot = tex > 2 * mu[..., None, None]  # compared in float64, as the float64 mean gives
    hot &= region
    hot_fraction = np.count_nonzero(hot, axis=(-2, -1)) / per
    glcm_names = [f"glcm{d}_{k}" for d in (1, 2) for k in _GLCM_NAMES]
    for c, ch in enumerate(("DAPI", "CK")):
        cols += list(glcm[:, c].T) + list(lbp[:, c].T)
        cols += [sd[:, c] / (np.abs(mu[:, c]) + 0.05), sd_lap[:, c] / (np.abs(mu[:, c]) + 0.05), hot_fraction[:, c]]
        names += [f"{ch}_{k}" for k in (*glcm_names, *lbp_names, "cv", "granularity", "hotspot_fraction")]

    # --- co-localisation (the sums in these ratios to the bit, as (x * mask).sum(...) gives them)
    plane = scratch[:, 0].reshape(n, s, s)
    ck_in_nuc = _masked_sum(crops[:, 1], nuc_f, plane)
    rim_mean = _masked_sum(crops[:, 2], rim_f, plane) / np.maximum(n_rim, 1)
    interior_mean = (_masked_sum(crops[:, 2], cell_f - rim_f, plane)  # interior = cell & ~rim, rim in the cell
                     / np.maximum(n_cell - n_rim, 1))
    per_cell = np.maximum(n_cell, 1)
    af_mean = _masked_sum(crops[:, 3], cell_f, plane) / per_cell
    dapi_mean = _masked_sum(crops[:, 0], cell_f, plane) / per_cell
    p_dapi_ck, p_ck_cd45, p_af_dapi = _pearson_all(pix, regions[:, 2], ((0, 1), (1, 2), (3, 0)), scratch)
    coloc = {
        "pearson_dapi_ck": p_dapi_ck,
        "pearson_ck_cd45": p_ck_cd45,
        "pearson_af_dapi": p_af_dapi,
        "ck_in_nucleus_fraction": np.clip(ck_in_nuc, 0, None) / np.maximum(total[:, 1], _EPS),  # CK in the cell
        "cd45_rim_ratio": rim_mean / (np.abs(interior_mean) + 0.05),
        "af_to_dapi": af_mean / (np.abs(dapi_mean) + 0.05),
    }
    cols += list(coloc.values())
    names += list(coloc)
    feats = np.stack([np.asarray(c, np.float64).reshape(n) for c in cols], 1)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), names


def feature_names() -> list[str]:
    """Names in the order :func:`compute` returns them."""
    s = 16
    z = np.zeros((1, 4, s, s), np.float32)
    m = np.zeros((1, s, s), bool)
    return compute(z, m, m, 1.0)[1]
