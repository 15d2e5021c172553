"""The synthetic generator: shapes, determinism, ground truth that segmentation can use."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from classifier.results import CATEGORIES
from classifier.synth import make_event, make_field


@pytest.mark.parametrize("category", CATEGORIES)
def test_event_has_four_channels_and_its_category(category):
    img, info = make_event(np.random.default_rng(1), category, px_um=0.5, size_px=96)
    assert img.shape == (4, 96, 96) and img.dtype == np.float32
    assert np.isfinite(img).all()
    assert info["category"] == category
    assert info["is_ctc"] == int(category == "ctc")


def test_same_seed_same_event_different_seed_different_event():
    a, _ = make_event(np.random.default_rng(7))
    b, _ = make_event(np.random.default_rng(7))
    c, _ = make_event(np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_ctc_is_ck_bright_at_the_centre_and_leukocyte_is_not():
    """The defining marker pattern: CK+ at the centre for a CTC, not for a leukocyte."""
    rng = np.random.default_rng(3)
    ctc_ck, wbc_ck = [], []
    for _ in range(6):
        img, _ = make_event(rng, "ctc", px_um=0.5, size_px=96)
        ctc_ck.append(img[1, 40:56, 40:56].mean() / (img[1].mean() + 1e-6))
        img, _ = make_event(rng, "leukocyte", px_um=0.5, size_px=96)
        wbc_ck.append(img[3, 40:56, 40:56].mean() / (img[3].mean() + 1e-6))
    assert np.median(ctc_ck) > 3.0
    assert np.median(wbc_ck) > 1.0  # CD45 at the centre of a leukocyte event


def test_field_labels_one_per_cell():
    img, labels = make_field(np.random.default_rng(0), 256, 256, 40)
    assert img.shape == (4, 256, 256) and img.dtype == np.float32
    assert labels.dtype == np.int32 and labels.shape == (256, 256)
    assert len(np.unique(labels[labels > 0])) == 40
    # every cell has DAPI signal on its label
    dapi = img[0]
    bg = np.median(dapi[labels == 0])
    means = [dapi[labels == k].mean() for k in range(1, 41)]
    assert min(means) > bg


def test_write_folder_layout_matches_ctc_dev(synth_folder):
    with open(synth_folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24
    assert set(rows[0]) == {"file", "is_ctc", "category"}
    import tifffile

    arr = tifffile.imread(synth_folder / rows[0]["file"])
    assert arr.ndim == 3 and arr.shape[0] == 4
