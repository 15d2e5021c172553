"""``python -m classifier robustness``: every perturbation runs through the evaluate path
and is reported (on synthetic events; ctc-dev is not used in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from classifier import robustness

CH = "DAPI,CK,AF,CD45"
EXPECTED = {"none", "rescale_0.5", "rescale_0.75", "rescale_1.5", "rescale_2", "rescale_3", "raw16",
            "low_contrast8", "gamma_0.6", "gamma_1.6", "no_af", "png_rgb", "jpeg75_rgb", "field_120_offcentre",
            "field_240_offcentre"}


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


def test_jpeg_composite_is_read_back_through_the_rgb_path(tmp_path):
    from classifier.data import load_image

    img, ch = _event()
    rgb, fmt = robustness.jpeg_composite(75)(img, ch, np.random.default_rng(0))
    name = robustness._write(tmp_path / "ev", rgb, fmt)
    back, chans, _ = load_image(tmp_path / name, list(robustness.COMPOSITE_CHANNELS))
    assert back.shape == (3, 160, 160) and chans == ["CD45", "CK", "DAPI"]
    assert abs(float(back[2, 80, 80]) - 200) < 25  # DAPI is blue
