"""Constant fill in field images (classifier.canvas): found where there is some, nowhere else, and
given the scene's background so that no cell is read along its edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.ndimage import rotate

from classifier.canvas import fill_background, fill_mask
from classifier.segmentation import analyse_field

CHANNELS = ["DAPI", "CK", "AF", "CD45"]
NUCLEI_DEV = Path(__file__).resolve().parents[1] / "data" / "nuclei-dev"

synth = pytest.importorskip("classifier.synth.field")


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return synth.make_field(np.random.default_rng(7), 768, 768, 240, pixel_size_um=0.5)[0]


def _rotated(image: np.ndarray, angle: float = 17.0) -> np.ndarray:
    """The field rotated as a registration or an export does it: black corners, edge interpolated."""
    return np.stack([rotate(c, angle, reshape=True, order=1, cval=0) for c in image])


def test_fill_is_found_in_rotated_corners_and_missing_tiles_only(field: np.ndarray) -> None:
    assert fill_mask(field) is None
    corners = fill_mask(_rotated(field))
    assert corners is not None and 0.3 < corners.mean() < 0.4
    missing = field.copy()
    missing[:, 256:512, 256:512] = 0
    tile = fill_mask(missing)
    assert tile is not None and tile.sum() == 256 * 256
    # an 8-bit render whose background is clipped to 0 fades into its cells: not fill
    lo, hi = (np.percentile(field, q, axis=(1, 2), keepdims=True) for q in (60, 99.9))
    clipped = np.clip((field - lo) / (hi - lo) * 255, 0, 255).round()
    assert (clipped[0] == 0).mean() > 0.5 and fill_mask(clipped) is None


@pytest.mark.parametrize("name", ["dsb00", "dsb05", "dsb12", "dsb13", "dsb14", "dsb19"])
def test_real_images_have_no_fill(name: str) -> None:
    """8-bit nucleus images with flat, quantised dark backgrounds (none of nuclei-dev's 22 and
    nuclei-train's 518 is taken for fill)."""
    img = tifffile.imread(NUCLEI_DEV / "images" / f"{name}.tif")
    assert fill_mask(img[None]) is None
    same, mask = fill_background(img[None])
    assert mask is None and np.array_equal(same, img[None])


def test_a_rotated_field_counts_its_cells_not_its_corners(field: np.ndarray) -> None:
    """17 degrees, black corners: without the fill set to background the corners' edges were read as
    cells (440-459 cells for 417 on a 1024^2 field, and 23-25 CTC calls for 20)."""
    n = len(analyse_field(field, CHANNELS, 0.5).cells)
    rot = _rotated(field)
    tidy = len(analyse_field(rot, CHANNELS, 0.5).cells)
    raw = len(analyse_field(rot, CHANNELS, 0.5, level=False).cells)
    assert abs(tidy - n) <= 0.02 * n, (tidy, n)
    assert raw > n + 0.05 * n, (raw, n)
    filled, mask = fill_background(rot)
    assert mask is not None and not np.any(filled[:, mask] == 0)  # the corners are background now


def test_what_is_not_fill_is_left_alone_and_odd_frames_do_not_fail() -> None:
    """A black frame with one hot pixel or a scale bar, and sharp cells on an exactly-zero background:
    the zero is their background, not fill around a scene (a review found the first raising inside
    the engine and the others' backgrounds set to the objects' brightness)."""
    from classifier.canvas import tidy_field

    dark = np.zeros((4, 256, 256), np.uint8)
    dark[0, 100, 100] = 255
    assert fill_mask(dark) is None and tidy_field(dark) is dark
    bar = np.zeros((3, 512, 512), np.uint8)
    bar[:, 480:488, 380:480] = 255
    assert fill_mask(bar) is None
    yy, xx = np.mgrid[:512, :512]
    discs = np.zeros((2, 512, 512), np.float32)
    rng = np.random.default_rng(0)
    for cy, cx in rng.integers(30, 482, (30, 2)):
        discs[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = rng.uniform(120, 220)
    assert fill_mask(discs) is None
    for odd in (np.zeros((0, 64, 64), np.float32), np.zeros((3, 64, 0), np.float32), np.ones((2, 32, 32), bool)):
        tidy_field(odd)  # nothing to do, and no error


def test_fill_is_found_when_a_marker_has_no_background_and_stays_in_range(field: np.ndarray) -> None:
    """A CK channel whose background was subtracted to 0 (a few CK+ cells in it) does not hide the
    fill the other channels show; the fill's noise never leaves the scene's range, and integer counts
    stay integers."""
    rot = _rotated(field)
    rot[1] = np.where(rot[1] > np.percentile(rot[1], 99), rot[1], 0)
    assert fill_mask(rot) is not None
    counts = np.clip(np.round(_rotated(field)), 0, 65535).astype(np.uint16)
    filled, mask = fill_background(counts)
    assert mask is not None
    scene = counts[:, ~mask]
    assert filled.min() >= scene.min() and not np.any(np.mod(filled, 1))
