"""Stitched mosaics: a field assembled from camera tiles whose backgrounds differ.

A scanner that images a slide or cartridge tile by tile and stitches the tiles leaves each tile
with its own offset (dark current, stray light, the exposure of that tile), so the background
steps along the straight seams between tiles. The nucleus network and the marker masks read a
slowly varying background; a step is not slow, and a 4 x 4 mosaic with tile offsets of 0-300
counts gave 748 objects for 705 (strips and fragments along the seams; model card, "Stitched
mosaics"). Here the seams are found and each tile's background is brought to the same level,
before anything else reads the field.

A seam is a whole row or column where the background (a low percentile of each line, read over
segments of :data:`SEGMENT` lines) steps by far more than it steps between any two neighbouring
lines elsewhere, in at least half of the segments along it. Nuclei, edges of cells and uneven
light change the background gradually or over a short stretch; only a seam does it straight
across the image. A field without seams is returned as it is.
"""

from __future__ import annotations

import numpy as np

#: lines are compared over segments of this many pixels along them
SEGMENT = 128
#: a step counts where it is this many robust SDs of the steps between neighbouring lines
MIN_STEP_SDS = 8.0
#: lines this close to the image's edge are never seams (drawn frames, scan borders: elsewhere)
EDGE = 4
#: a seam may wander this far between segments (stage positions are not exact)
JITTER = 2
#: camera tiles are at least this wide: two "seams" closer together are the edges of one long
#: bright structure (a fibre across nuclei-train's dsbt045 gave two, 31 px apart), not a tile
MIN_TILE = 96


def seams(channel: np.ndarray, axis: int) -> list[int]:
    """Positions ``j`` of straight seams across a 2-D ``channel``: between columns ``j - 1`` and
    ``j`` for ``axis`` 1 (vertical seams), between rows for ``axis`` 0."""
    a = np.asarray(channel, np.float32)
    if axis == 0:
        a = a.T
    h, w = a.shape  # seams run along the h axis, between columns
    seg = min(SEGMENT, h // 2)
    if seg < 16 or w < 2 * EDGE + 2:
        return []
    n = h // seg
    # each column's background over each segment: its 10th percentile (every second pixel; the
    # gaps between cells, even in a dense field)
    level = np.percentile(a[: n * seg].reshape(n, seg, w)[:, ::2], 10, axis=1)
    step = np.diff(level, axis=1)  # (n, w - 1): column j + 1 minus column j
    step -= np.median(step, axis=1, keepdims=True)
    # the steps' robust SD; where most lines read the same (a clipped 8-bit background at 0) that is
    # ~0, and the mean step (0.8 SD for noise; a few seams among hundreds of lines barely move it)
    # stands in
    spread = np.maximum(1.4826 * np.median(np.abs(step), axis=1, keepdims=True),
                        np.mean(np.abs(step), axis=1, keepdims=True))
    # and never under half a count of integer data (its quantisation; real 8-bit images of a few
    # grey levels read seams below that), nor, for data in other units, under the same share of
    # an 8-bit range of them (a field normalised to 0-1)
    sample = a[::7, ::7]
    integral = not np.any(np.mod(sample, 1))
    spread = np.maximum(spread, 0.5 if integral else 0.5 * min(1.0, max(float(np.ptp(sample)), 1e-12) / 255))
    big = np.abs(step) > MIN_STEP_SDS * spread
    # a seam steps alike over the neighbouring segment of the same tile (same sign, within 2x);
    # where a column runs into a few cells in one segment, the next segment does not repeat it
    ratio = step[:-1] / np.where(step[1:] == 0, np.inf, step[1:])
    alike = big[:-1] & big[1:] & (ratio >= 0.5) & (ratio <= 2.0)
    big = np.zeros_like(big)
    big[:-1] |= alike
    big[1:] |= alike
    big[:, : EDGE - 1] = False
    big[:, w - EDGE :] = False
    # a seam may sit a pixel or two apart from one segment to the next
    near = big.copy()
    for k in range(1, JITTER + 1):
        near[:, k:] |= big[:, :-k]
        near[:, :-k] |= big[:, k:]
    votes = near.sum(axis=0)
    lines = np.flatnonzero(votes >= max(2, -(-n // 2)))
    # one seam per run of neighbouring candidates: where the most segments saw the step
    out: list[int] = []
    for run in np.split(lines, np.flatnonzero(np.diff(lines) > 1) + 1) if lines.size else []:
        own = big[:, run].sum(axis=0)
        out.append(int(run[int(np.argmax(own))]) + 1)
    return out


def tile_grid(image: np.ndarray) -> tuple[list[int], list[int]]:
    """The row and column seams of a (C, H, W) field: those found in any channel."""
    rows: set[int] = set()
    cols: set[int] = set()
    for ch in image:
        if np.ptp(ch[::8, ::8]) == 0 and np.ptp(ch) == 0:
            continue  # an absent (zero) or constant channel
        rows.update(seams(ch, 0))
        cols.update(seams(ch, 1))
    _c, h, w = image.shape
    return _tiles(_merge(rows), h), _tiles(_merge(cols), w)


def _merge(lines: set[int]) -> list[int]:
    """Seams found a pixel or two apart in different channels are one seam."""
    out: list[int] = []
    for j in sorted(lines):
        if not out or j - out[-1] > 2 * JITTER:
            out.append(j)
    return out


def _tiles(lines: list[int], n: int) -> list[int]:
    """The seams that bound tiles: none within :data:`MIN_TILE` of another seam or of the edge
    closer than half of it (a narrow strip is a structure in the scene, whatever bounds it)."""
    keep = []
    for k, j in enumerate(lines):
        prev = lines[k - 1] if k else None
        nxt = lines[k + 1] if k + 1 < len(lines) else None
        crowded = (prev is not None and j - prev < MIN_TILE) or (nxt is not None and nxt - j < MIN_TILE)
        if not crowded and MIN_TILE // 2 <= j <= n - MIN_TILE // 2:
            keep.append(j)
    return keep


def level_tiles(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(C, H, W) with every tile of a stitched mosaic brought to one background level per channel,
    and the number of tiles (1: no seam, the image itself is returned).

    A tile's level is the 5th percentile of its pixels (every second one): background in any tile
    that is not almost wholly covered by cells; each tile is shifted by its level's difference from
    the median tile's, so the field keeps its overall level. Anything but a (C, H, W) array is
    returned as it is (the callers refuse it with their own message)."""
    if np.ndim(image) != 3:
        return image, 1
    rows, cols = tile_grid(image)
    if not rows and not cols:
        return image, 1
    _c, h, w = image.shape
    ys = [0, *rows, h]
    xs = [0, *cols, w]
    out = np.array(image, np.float32, copy=True)
    boxes = [(slice(y0, y1), slice(x0, x1))
             for y0, y1 in zip(ys[:-1], ys[1:], strict=True) for x0, x1 in zip(xs[:-1], xs[1:], strict=True)]
    for k in range(out.shape[0]):
        levels = np.array([np.percentile(out[k][b][::2, ::2], 5) for b in boxes], np.float32)
        ref = float(np.median(levels))
        for b, lv in zip(boxes, levels, strict=True):
            out[k][b] -= lv - ref
    return out, (len(ys) - 1) * (len(xs) - 1)
