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
