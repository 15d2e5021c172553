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
    """The defining marker pattern: CK+ at the centre for a (typical, not CK-dim) CTC, not
    for a leukocyte. CK-dim CTCs are tested below."""
    rng = np.random.default_rng(3)
    ctc_ck, wbc_ck = [], []
    for _ in range(6):
        img, _ = make_event(rng, "ctc", px_um=0.5, size_px=96, ck_dim=False)
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


# --- framings, CK-dim CTCs and instrument exports (issue 11) -----------------------------------


def _nuclei(img: np.ndarray) -> int:
    from scipy import ndimage as ndi

    d = ndi.gaussian_filter(img[0], 1.0)
    lab, n = ndi.label(d > np.percentile(d, 50) + 0.3 * (d.max() - np.percentile(d, 50)))
    return int(n)


def test_wide_framing_holds_many_neighbours_and_tight_framing_is_filled_by_the_cell():
    rng = np.random.default_rng(21)
    wide = [make_event(rng, "ctc", framing="wide") for _ in range(4)]
    for img, info in wide:
        assert 160 <= img.shape[1] <= 400 and info["framing"] == "wide"
        assert _nuclei(img) >= 5, _nuclei(img)
    for _ in range(4):
        img, info = make_event(rng, "ctc", framing="tight")
        s = img.shape[1]
        assert info["framing"] == "tight" and 48 <= s <= 400
        fov_um = s * info["px_um"]
        assert 10.0 <= fov_um <= 45.0  # 1.15-2x a 10-22 µm cell
        # the cell fills the frame: its nucleus or CK body covers much of it
        from scipy import ndimage as ndi

        fg = np.zeros(img.shape[1:], bool)
        for c in (0, 1):
            sm = ndi.gaussian_filter(img[c], 0.5 / info["px_um"])
            bg = np.percentile(sm, 5)
            fg |= sm > bg + 0.25 * (sm.max() - bg)
        assert fg.mean() > 0.15, fg.mean()


def test_ck_dim_ctcs_are_ctcs_with_faint_ck_above_background():
    rng = np.random.default_rng(4)
    dim_ratio, bright_ratio = [], []
    for _ in range(8):
        for ck_dim, out in ((True, dim_ratio), (False, bright_ratio)):
            img, info = make_event(rng, "ctc", px_um=0.5, size_px=96, ck_dim=ck_dim)
            assert info["is_ctc"] == 1 and info["category"] == "ctc"
            ck = img[1].astype(np.float64)
            bg = np.median(ck)
            out.append((ck[38:58, 38:58].mean() - bg) / (np.percentile(ck, 99.9) - bg + 1e-9))
            # still present: the event's CK is above the background's noise
            assert ck[38:58, 38:58].mean() > bg
    # after the display stretch a dim rim is a thin structure: less CK filling the centre
    assert np.median(dim_ratio) < 0.75 * np.median(bright_ratio)


def test_ck_dim_fraction_of_generated_ctcs():
    from classifier.synth import events

    rng = np.random.default_rng(0)
    draws = [rng.random() < events.CK_DIM_FRACTION for _ in range(2000)]
    assert 0.2 <= events.CK_DIM_FRACTION <= 0.3 and 0.2 < np.mean(draws) < 0.3


def test_exports_af_absent_rgb_and_jpeg():
    from classifier.synth.export import RGB_ORDERS, export, export_as, rgb_composite

    img, _ = make_event(np.random.default_rng(2), "ctc", px_um=0.5, size_px=96)
    three, ch = export_as(img, np.random.default_rng(0), "tiff3")
    assert three.shape == (3, 96, 96) and ch == ["DAPI", "CK", "CD45"]
    rgb, ch = export_as(img, np.random.default_rng(0), "rgb_png")
    assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8 and ch == list(RGB_ORDERS[0])
    # red is CK: the CK+ event is red at the centre
    assert rgb[40:56, 40:56, 0].mean() > rgb[..., 0].mean()
    lossless = rgb_composite(img, np.random.default_rng(5), RGB_ORDERS[0], None)
    lossy = rgb_composite(img, np.random.default_rng(5), RGB_ORDERS[0], 60)
    assert lossless.shape == lossy.shape and 0 < np.abs(lossless - lossy).mean() < 20
    kinds = [export(img, np.random.default_rng(s))[2] for s in range(300)]
    no_af = np.mean([k != "tiff4" for k in kinds])  # RGB composites never show AF
    assert 0.3 <= no_af <= 0.6, no_af
    assert 0.1 <= np.mean([k.startswith("rgb") for k in kinds]) <= 0.35


def test_shifted_folder_is_read_back_with_its_channels(tmp_path):
    from classifier.data import load_image, read_labels
    from classifier.synth.folder import write_shifted_folder

    infos, ch = write_shifted_folder(tmp_path, 6, 1, "tight_rgb_jpeg", progress=False)
    assert ch == ["CK", "CD45", "DAPI"]
    items = read_labels(tmp_path)
    assert len(items) == 6 and all(it.file.endswith(".jpg") for it in items)
    img, chans, _ = load_image(tmp_path / items[0].file, ch)
    assert img.shape[0] == 3 and chans == ch
