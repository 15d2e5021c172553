"""What a field's file holds that is not the scene: constant fill, and a mosaic's tile steps.

Exports put constant fill where there was no camera pixel: the corners of a rotated or registered
field, a stitched mosaic's missing tiles, the outside of a round aperture. The nucleus network and
the marker masks read a slowly varying background; the jump from the fill to the scene's background
is an edge they take for cells (a 1024^2 field of 417 nuclei rotated by 17 degrees with black
corners: 440-459 cells, 23-25 CTC calls for 20). Fill is given the scene's background level, so
nothing stands out where nothing was recorded. (Whole lines of fill along the frame's edge are cut
off before the nuclei are read, :func:`classifier.preprocess.fill_border`.) Then the tiles of a
stitched mosaic are levelled (:mod:`classifier.mosaic`).

:func:`tidy_field` is the one entry: the engine calls it before a field is segmented and
classified, and :func:`classifier.segmentation.analyse_field` when called directly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from classifier.mosaic import level_tiles

#: a region of one exact value is fill only from this share of the frame (smaller flat areas are
#: saturated cells or clipped specks, and harmless)
MIN_FILL_SHARE = 0.01
#: fill jumps to the scene: next to it the image is at least this far (share of the way) from the
#: fill value to the scene's background; a clipped background fades into the scene instead
MIN_JUMP = 0.5


#: fill surrounds or cuts into a scene; the scene is most of the frame's recorded pixels in one
#: piece, at least this share of the frame (a black frame around a scale bar, or sharp cells on an
#: exactly-zero background, is not a scene cut by fill)
MIN_SCENE_SHARE = 0.2
#: ... and its largest connected piece holds at least this share of it
MIN_SCENE_PIECE = 0.9


def fill_mask(image: np.ndarray) -> np.ndarray | None:
    """Pixels of a (C, H, W) field that are constant fill, not scene; None when there are none.

    Fill: each channel at its minimum in every channel at once, in connected regions of
    :data:`MIN_FILL_SHARE` of the frame or more, around or into a scene that is one piece
    (:data:`MIN_SCENE_SHARE`, :data:`MIN_SCENE_PIECE`); in each channel whose scene background lies
    above the fill value (one at least), the scene's darkest pixels (1st percentile) and those 2-3 px
    from the fill stand at least :data:`MIN_JUMP` of the way from the fill value to that background
    (20th percentile). An 8-bit render whose background is clipped to 0, or quantised to a few dark
    values, is not fill: it fades into the cells (202 of nuclei-train's 8-bit images have flat
    regions of 1-43 % of the frame at their minimum; none is taken for fill); nor is the zero
    background of cells with hard edges, which leaves the scene in many pieces."""
    c, h, w = image.shape
    values = [image[k].min() for k in range(c)]
    eq = np.ones((h, w), bool)
    for k in range(c):
        eq &= image[k] == values[k]
    lab, n = ndi.label(eq)
    if n == 0:
        return None
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    big = np.flatnonzero(areas[1:] >= MIN_FILL_SHARE * h * w) + 1
    if big.size == 0:
        return None
    mask = np.isin(lab, big)
    # 2-3 px out: the first pixel next to a rotated image's fill is interpolated half way to it
    near = ndi.binary_dilation(mask)
    scene = ~near
    if scene.sum() < MIN_SCENE_SHARE * h * w:
        return None
    pieces, n_pieces = ndi.label(scene)
    if np.bincount(pieces.ravel(), minlength=n_pieces + 1)[1:].max() < MIN_SCENE_PIECE * scene.sum():
        return None
    ring = ndi.binary_dilation(mask, iterations=3) & scene
    jumps = 0
    for k in range(c):
        pixels = image[k][scene][::7]
        low, level = (float(x) for x in np.percentile(pixels, [1, 20]))
        gap = level - float(values[k])
        if gap <= 0:
            continue  # a blank channel, or one whose background is the fill value (a few cells in it)
        # the scene jumps from the fill to its background, next to it and everywhere: a clipped or
        # quantised background has its darkest pixels (and those next to it) down at that value
        if min(low, float(np.median(image[k][ring]))) - float(values[k]) < MIN_JUMP * gap:
            return None
        jumps += 1
    return mask if jumps else None


def fill_background(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, H, W) with its fill (:func:`fill_mask`, and the 2 px next to it, which a rotation or a
    blend interpolates towards the fill value) replaced by background as the scene records it: each
    channel's background level (the scene's 30th percentile) with its pixel noise (from differences
    between neighbouring pixels), from a fixed seed, within the scene's range; and that mask. The
    image itself and None when there is no fill. A flat, noiseless fill at that level still put
    cells along its edge."""
    mask = fill_mask(image)
    if mask is None:
        return image, None
    mask = ndi.binary_dilation(mask, iterations=2)
    out = np.array(image, np.float32, copy=True)
    rng = np.random.default_rng(0)
    n = int(mask.sum())
    for k in range(out.shape[0]):
        ch = out[k]
        scene = ch[~mask]  # fill_mask left at least a fifth of the frame beyond 1 px of the fill
        level = float(np.percentile(scene[::3], 30))
        pairs = (~mask[:, 1:]) & (~mask[:, :-1])
        diffs = np.diff(ch, axis=1)[pairs][::3]
        noise = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2) if diffs.size else 0.0
        fill = np.clip(level + noise * rng.standard_normal(n).astype(np.float32), scene.min(), scene.max())
        # integer counts stay integer counts (bit depth is one of the things the domain check reads)
        ch[mask] = np.round(fill) if not np.any(np.mod(scene[::97], 1)) else fill
    return out, mask


def tidy_field(image: np.ndarray, *, filled: bool = False) -> np.ndarray:
    """A (C, H, W) field with fill set to background and a mosaic's tiles levelled (either, both or
    neither, as the field needs); ``filled``: :func:`fill_background` was applied already (the
    engine does it first, for the domain check). Anything but a 3-D array is returned as it is."""
    if np.ndim(image) != 3 or np.size(image) == 0:
        return image
    if image.dtype == bool:
        image = image.astype(np.uint8)
    return level_tiles(image if filled else fill_background(image)[0])[0]
