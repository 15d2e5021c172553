"""Stitched mosaics (classifier.mosaic): seams found where tiles' backgrounds step, nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from classifier.mosaic import level_tiles, tile_grid
from classifier.segmentation import analyse_field

CHANNELS = ["DAPI", "CK", "AF", "CD45"]
NUCLEI_DEV = Path(__file__).resolve().parents[1] / "data" / "nuclei-dev"

synth = pytest.importorskip("classifier.synth.field")


def _field(seed: int, size: int, n: int) -> np.ndarray:
    return synth.make_field(np.random.default_rng(seed), size, size, n, pixel_size_um=0.65)[0]


def _stitched(image: np.ndarray, tiles: int, offset: float, seed: int = 0) -> np.ndarray:
    """``image`` cut into ``tiles`` x ``tiles`` camera tiles, each channel of each tile with its own
    offset (0 to ``offset`` counts), as a scanner that stitches its tiles leaves them."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    t = image.shape[1] // tiles
    for c in range(image.shape[0]):
        for i in range(tiles):
            for j in range(tiles):
                out[c, i * t:(i + 1) * t, j * t:(j + 1) * t] += rng.uniform(0, offset)
    return out


def test_the_seams_of_a_stitched_mosaic_are_found_and_the_tiles_levelled() -> None:
    clean = _field(0, 768, 500)
    assert tile_grid(clean) == ([], [])
    same, n = level_tiles(clean)
    assert same is clean and n == 1  # a field without seams is read as it is
    mosaic = _stitched(clean, 3, 300.0)
    assert tile_grid(mosaic) == ([256, 512], [256, 512])
    levelled, n = level_tiles(mosaic)
    assert n == 9
    for c in range(4):  # every tile's background back within a few counts of the others
        lows = [np.percentile(levelled[c, i:i + 256, j:j + 256], 5) for i in (0, 256, 512) for j in (0, 256, 512)]
        steps = [np.percentile(mosaic[c, i:i + 256, j:j + 256], 5) for i in (0, 256, 512) for j in (0, 256, 512)]
        assert np.ptp(lows) < 10 < np.ptp(steps)


def test_a_mosaic_field_counts_its_cells_not_its_seams() -> None:
    """4 x 4 tiles with offsets of 0-300 counts: 748 objects for 705 before (strips and fragments
    along the seams), within 1 % of the unstitched field's count now."""
    clean = _field(0, 1024, 700)
    mosaic = _stitched(clean, 4, 300.0)
    n_clean = len(analyse_field(clean, CHANNELS, 0.65).cells)
    n_mosaic = len(analyse_field(mosaic, CHANNELS, 0.65).cells)
    assert abs(n_mosaic - n_clean) <= 0.01 * n_clean, (n_mosaic, n_clean)
    unlevelled = len(analyse_field(mosaic, CHANNELS, 0.65, level=False).cells)
    assert unlevelled > n_clean + 20  # what the levelling takes away


@pytest.mark.parametrize("name", ["dsb00", "dsb05", "dsb12", "dsb13", "dsb14", "dsb19"])
def test_real_images_and_long_bright_structures_have_no_seams(name: str) -> None:
    """No seam in real nucleus images (none in nuclei-dev's 22 and nuclei-train's 518), turned or
    not, nor at the two edges of a long bright band across a field (a fibre, a scratch): it is a
    structure, not a camera tile."""
    img = tifffile.imread(NUCLEI_DEV / "images" / f"{name}.tif").astype(np.float32)
    for a in (img, img.T, img[::-1]):
        assert tile_grid(a[None]) == ([], []), name
    banded = img.copy()
    x0 = banded.shape[1] // 2
    banded[:, x0:x0 + 30] += 0.5 * float(banded.max())
    assert tile_grid(banded[None]) == ([], [])


def test_seams_are_found_in_fields_scaled_to_0_1() -> None:
    """Float data in other units than counts (a field normalised to 0-1) has its seams found too."""
    clean = _field(1, 512, 200)
    mosaic = _stitched(clean, 2, 300.0, seed=3)
    scaled = (mosaic - mosaic.min()) / np.ptp(mosaic)
    assert tile_grid(scaled) == tile_grid(mosaic) == ([256], [256])
