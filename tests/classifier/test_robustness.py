"""``python -m classifier robustness``: every perturbation runs through the evaluate path
and is reported (on synthetic events; ctc-dev is not used in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from classifier import robustness

CH = "DAPI,CK,AF,CD45"
EXPECTED = {"none", "rescale_0.5", "rescale_0.75", "rescale_1.5", "rescale_2", "rescale_3", "raw16",
            "low_contrast8", "gamma_0.6", "gamma_1.6", "no_af", "png_rgb", "jpeg75_rgb", "field_120_offcentre",
            "field_240_offcentre", "wide360_neighbours", "wide360_neighbours_no_af", "ck_dim_ctc", "ck_dim_ctc_no_af",
            "tight_x3_rgb_png", "tight_x4_rgb_jpeg85", "tight_x4_ckdim_rgb_jpeg85", "bleed_cd45_ck_20", "blur_1px",
            "blur_2px", "dapi_blur_2px", "misregistered_2px", "turned_90", "mirrored", "moved_1px", "moved_3px"}


def test_robustness_command_reports_every_perturbation(synth_folder):
    proc = subprocess.run([sys.executable, "-m", "classifier", "robustness", "--data", str(synth_folder),
                           "--channels", CH], capture_output=True, text=True, timeout=600,
                          env={"CLASSIFIER_DEVICE": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    table = out["perturbations"]
    assert set(table) == EXPECTED
    for name, row in table.items():
        assert row["n"] == 24, name
        for k in ("balanced_accuracy", "roc_auc", "sensitivity", "specificity"):
            assert row[k] is None or 0.0 <= row[k] <= 1.0, (name, k)
        assert 0 <= row["flipped"] <= 24
    assert table["none"]["flipped"] == 0 and table["none"]["mean_abs_dp"] == 0.0
    # the pixel size is inferred from nuclei, so it follows the magnification
    for s in (0.5, 2, 3):
        ratio = table[f"rescale_{s:g}"]["px_um_median"] / table["none"]["px_um_median"]
        assert 0.7 / s < ratio < 1.4 / s, (s, ratio)
    assert set(out["summary"]) >= {"mean_roc_auc", "min_roc_auc", "total_flipped"}
    # each row carries the folder's domain check, as `evaluate` prints it: AF-less input and RGB
    # composites were never validated, so they say so whatever their score
    for name, row in table.items():
        assert row["domain"] in ("in_domain", "shifted") and 0.0 <= row["domain_score"] <= 1.0, name
        assert row["domain"] == "in_domain" or row["domain_reasons"], name
    for name in ("no_af", "png_rgb", "jpeg75_rgb", "wide360_neighbours_no_af", "tight_x3_rgb_png"):
        assert table[name]["domain"] == "shifted", (name, table[name]["domain_reasons"])
    assert any("AF" in r for r in table["no_af"]["domain_reasons"]), table["no_af"]["domain_reasons"]
    assert set(out["summary"]["shifted"]) == {k for k, v in table.items() if v["domain"] == "shifted"}


def test_summary_names_the_renderings_below_target_that_pass_as_in_domain():
    def row(auc: float, ba: float, status: str) -> dict:
        return {"roc_auc": auc, "balanced_accuracy": ba, "flipped": 0, "domain": status}

    table = {"none": row(1.0, 0.95, "in_domain"), "a": row(0.93, 0.95, "shifted"), "b": row(0.97, 0.85, "in_domain"),
             "c": row(0.94, 0.95, "in_domain"), "d": row(0.96, 0.92, "in_domain")}
    s = robustness.summary(table)
    assert s["below_target"] == ["a", "b", "c"]
    assert s["below_target_in_domain"] == ["b", "c"]  # "a" says shifted: the product warns there
    assert s["shifted"] == ["a"]


def _event() -> tuple[np.ndarray, list[str]]:
    img = np.zeros((4, 160, 160), np.float32)
    img[:, 78:82, 78:82] = 200.0  # the event at the centre
    img[0, 10:14, 10:14] = 255.0
    return img, ["DAPI", "CK", "AF", "CD45"]


def test_perturbations_do_what_they_say():
    img, ch = _event()
    rng = np.random.default_rng(0)
    p = robustness.perturbations()
    up, _ = p["rescale_2"](img, ch, rng)
    assert up.shape == (4, 320, 320)
    raw, _ = p["raw16"](img, ch, rng)
    assert raw.dtype == np.uint16 and 250 < np.median(raw) < 350 and raw.max() > 5000
    flat, _ = p["low_contrast8"](img, ch, rng)
    assert flat.dtype == np.uint8 and flat.min() == 20 and flat.max() == 20 + 85
    rgb, fmt = p["jpeg75_rgb"](img, ch, rng)
    assert rgb.shape == (160, 160, 3) and fmt == "jpg:75"
    assert p["png_rgb"](img, ch, rng)[1] == "png"
    three, fmt = p["no_af"](img, ch, rng)
    assert three.shape == (3, 160, 160) and fmt == "tif:DAPI,CK,CD45"
    for size in (120, 240):
        fr, _ = p[f"field_{size}_offcentre"](img, ch, rng)
        assert fr.shape == (4, size, size)
        ys, xs = np.nonzero(fr[1] > 100)
        centre = (size - 1) / 2.0
        assert abs(ys.mean() - (centre + 3)) < 0.6 and abs(xs.mean() - (centre - 4)) < 0.6
    # other optics: CD45 light added to CK only; blur spreads every channel; CK and CD45 moved, DAPI not
    leak = img.copy()
    leak[3, 30:40, 30:40] = 200.0  # a CD45-bright leukocyte
    bled, _ = p["bleed_cd45_ck_20"](leak, ch, rng)
    assert bled[1, 35, 35] == 40 and np.array_equal(bled[[0, 2, 3]], leak[[0, 2, 3]].astype(np.uint8))
    soft, _ = p["blur_1px"](img, ch, rng)
    assert soft[0].max() < 255 and (soft[0] > 0).sum() > (img[0] > 0).sum()
    dapi_soft, _ = p["dapi_blur_2px"](img, ch, rng)
    assert (dapi_soft[0] > 0).sum() > (soft[0] > 0).sum() and np.array_equal(dapi_soft[1:], img[1:].astype(np.uint8))
    # another scan's framing: lossless turns, mirror images and moves
    turned, _ = p["turned_90"](img, ch, rng)
    assert np.array_equal(turned, np.rot90(img, 1, axes=(1, 2)))
    assert np.array_equal(p["mirrored"](img, ch, rng)[0], img[..., ::-1])
    for name, by in (("moved_1px", 1), ("moved_3px", 3)):
        shifted, _ = p[name](img, ch, rng)
        assert np.array_equal(shifted, np.roll(img, (by, by), axis=(1, 2))), name
        assert shifted[0, 10 + by, 10 + by] == 255.0 and shifted[0, 9 + by, 9 + by] == 0.0
    moved, _ = p["misregistered_2px"](img, ch, rng)
    assert np.array_equal(moved[0], img[0].astype(np.uint8)) and np.array_equal(moved[2], img[2].astype(np.uint8))
    for c in (1, 3):
        ys, xs = np.nonzero(moved[c] > 100)
        assert (ys.mean(), xs.mean()) == pytest.approx((79.5 + 2, 79.5 + 1), abs=0.6)


def test_jpeg_composite_is_read_back_through_the_rgb_path(tmp_path):
    from classifier.data import load_image

    img, ch = _event()
    rgb, fmt = robustness.jpeg_composite(75)(img, ch, np.random.default_rng(0))
    name = robustness._write(tmp_path / "ev", rgb, fmt)
    back, chans, _ = load_image(tmp_path / name, list(robustness.COMPOSITE_CHANNELS))
    assert back.shape == (3, 160, 160) and chans == ["CD45", "CK", "DAPI"]
    assert abs(float(back[2, 80, 80]) - 200) < 25  # DAPI is blue


def _noisy_event(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    img = rng.normal(12.0, 3.0, (4, 160, 160)).astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    img[1][np.hypot(yy - 79.5, xx - 79.5) < 12] += 150.0  # CK+ event at the centre
    img[0][np.hypot(yy - 79.5, xx - 79.5) < 7] += 120.0
    img[0][np.hypot(yy - 20, xx - 20) < 6] += 120.0  # a neighbour's nucleus
    img[3][np.hypot(yy - 20, xx - 20) < 9] += 90.0
    return np.clip(np.round(img), 0, 255), ["DAPI", "CK", "AF", "CD45"]


def test_ck_dim_acts_on_ctcs_only_and_keeps_the_noise():
    img, ch = _noisy_event()
    f = robustness.dim_ck_in_ctc(0.2, 0.2)
    rng = np.random.default_rng(0)
    same, _ = f(img, ch, rng, robustness.Context(is_ctc=0))
    assert np.array_equal(same, img)
    dim, fmt = f(img, ch, rng, robustness.Context(is_ctc=1))
    assert fmt == "tif" and dim.shape == img.shape
    assert np.array_equal(dim[[0, 2, 3]], img[[0, 2, 3]])  # other channels untouched
    signal = img[1, 72:88, 72:88].mean() - 12.0
    assert 0.12 < (dim[1, 72:88, 72:88].mean() - 12.0) / signal < 0.35
    # background noise is kept (not scaled down with the signal)
    assert dim[1, 130:150, 130:150].std() > 0.8 * img[1, 130:150, 130:150].std()


def test_wide_frame_puts_the_event_at_the_centre_among_other_images_cells():
    img, ch = _noisy_event(0)
    others = [(_noisy_event(s)[0], 0) for s in (1, 2, 3)]
    out, fmt = robustness.wide_neighbours(360)(img, ch, np.random.default_rng(0), robustness.Context(1, others))
    assert out.shape == (4, 360, 360) and out.dtype == np.uint8 and fmt == "tif"
    assert np.array_equal(out[:, 100:260, 100:260], img.astype(np.uint8))  # the event image, unchanged
    # the surroundings hold nuclei (from the other images) but no second CK+ event
    assert out[0, :100].max() > 100 and out[1, :100].max() < 100
    three, fmt = robustness.wide_neighbours(360, drop="AF")(img, ch, np.random.default_rng(0),
                                                            robustness.Context(1, others))
    assert three.shape == (3, 360, 360) and fmt == "tif:DAPI,CK,CD45"


def test_tight_rgb_composite_is_magnified_red_ck_and_read_back(tmp_path):
    from classifier.data import load_image

    img, ch = _noisy_event()
    rgb, fmt = robustness.tight_rgb(3.0, crop=44)(img, ch, np.random.default_rng(0))
    assert rgb.shape == (132, 132, 3) and rgb.dtype == np.uint8 and fmt == "png:CK,CD45,DAPI"
    assert robustness._channels_written(fmt, ch) == ["CK", "CD45", "DAPI"]
    name = robustness._write(tmp_path / "ev", rgb, fmt)
    back, chans, _ = load_image(tmp_path / name, robustness._channels_written(fmt, ch))
    assert chans == ["CK", "CD45", "DAPI"] and back.shape == (3, 132, 132)
    assert back[0, 60:72, 60:72].mean() > 120  # red = CK, bright at the centre
    jpg, fmt = robustness.tight_rgb(4.0, quality=85)(img, ch, np.random.default_rng(0))
    assert jpg.shape == (176, 176, 3) and fmt == "jpg:85:CK,CD45,DAPI"
