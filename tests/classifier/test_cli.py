"""``python -m classifier`` as a lab would run it: JSON out, per the architecture contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.data import read_labels

CH = "DAPI,CK,AF,CD45"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "classifier", *args], capture_output=True, text=True, timeout=300,
                          env={"CLASSIFIER_DEVICE": "cpu", "PATH": "/usr/bin:/bin"})


def test_evaluate_prints_metrics_json_last(synth_folder):
    proc = run("evaluate", "--data", str(synth_folder), "--channels", CH)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("n", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc", "per_category"):
        assert key in out
    assert out["n"] == 24
    assert 0 <= out["accuracy"] <= 1
    assert set(out["per_category"]) <= {"ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact"}


def test_predict_prints_one_json_line_per_event(synth_folder):
    rows = read_labels(synth_folder)[:3]
    files = [str(synth_folder / r.file) for r in rows]
    proc = run("predict", "--channels", CH, *files)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert len(lines) == 3
    for line, f in zip(lines, files, strict=True):
        assert set(line) >= {"source", "x", "y", "call", "ctc_probability", "category"}
        assert f.endswith(line["source"])
        assert line["call"] in ("ctc", "non_ctc")


def test_predict_on_a_field_without_cells_says_so(tmp_path):
    """An empty frame (camera noise in every channel) prints no event line and no domain warning
    (it is just empty), but says that nothing was classified instead of printing nothing."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    frame = (400 + rng.normal(0, 8, (4, 512, 512))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "edge.tif", frame)
    proc = run("predict", "--kind", "field", "--channels", CH, "--pixel-size-um", "0.65", str(tmp_path / "edge.tif"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert "no cell found in these images" in proc.stderr and "No nuclei" not in proc.stderr, proc.stderr


def test_bad_channels_exit_with_a_message(synth_folder):
    f = str(next((synth_folder / "events").iterdir()))
    proc = run("predict", "--channels", "DAPI,CK,AF,VIM", f)
    assert proc.returncode != 0
    assert "CD45" in proc.stderr


def test_synth_shifted_writes_a_folder_evaluate_reads_with_its_channels(tmp_path):
    """A shifted test set (wide frames, AF absent) as a lab would get it, then evaluated."""
    proc = run("synth", "--shifted", "wide_no_af", "--n", "4", "--seed", "3", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shifted"] == "wide_no_af" and out["channels"] == "DAPI,CK,CD45" and out["n"] == 4
    import tifffile

    items = read_labels(tmp_path)
    img = tifffile.imread(tmp_path / items[0].file)
    assert img.shape[0] == 3 and 160 <= img.shape[1] <= 400
    ev = run("evaluate", "--data", str(tmp_path), "--channels", out["channels"])
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["n"] == 4


NUCLEI_DEV_SUBSET = Path(__file__).resolve().parents[1] / "data" / "nuclei-dev"


def test_segment_eval_reports_each_image_with_its_ambiguity_and_contrast() -> None:
    r = run("segment-eval", "--data", str(NUCLEI_DEV_SUBSET), "--only", "dsb00,dsb05", "--markdown", "--quiet")
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert out[0].startswith("| image |") and "ambiguity" in out[0]
    report = json.loads(out[-1])
    assert [row["name"] for row in report["images"]] == ["dsb00", "dsb05"]
    for row in report["images"]:
        assert row["f1"] >= 0.9 and row["contrast"] > 12 and row["uncertain"] is False
        assert 0 < row["ambiguity"] < 0.75 and row["baseline_f1"] > 0
    assert report["pooled"]["n_true"] == 16 + 38 and report["uncertain"]["images"] == 0
    # the errors, per image and pooled, account for every miss and every false object
    e, p = report["errors"], report["pooled"]
    assert e["merged"] + e["not_found"] + e["off_centre"] == p["n_true"] - p["tp"]
    assert e["split"] + e["background"] == p["n_pred"] - p["tp"]
    assert sum(row["errors"]["merged"] for row in report["images"]) == e["merged"]
    assert any(line.startswith("Misses: ") for line in out)


def test_segment_eval_refuses_an_unknown_render_with_the_list() -> None:
    r = run("segment-eval", "--data", str(NUCLEI_DEV_SUBSET), "--render", "confocal", "--quiet")
    assert r.returncode == 2 and "unknown render 'confocal'" in r.stderr and "chromocentres" in r.stderr
    assert "Traceback" not in r.stderr


def test_segment_finds_the_nuclei_of_a_stain_alone_as_segment_eval_scores_them(tmp_path):
    """A nucleus field without CK or CD45 cannot be classified, but its nuclei can be found and counted:
    `segment` prints one line per nucleus (the nuclei `segment-eval` scores, each centroid inside its
    label), a count per file on stderr, and writes the labels;
    `predict` on the same file points to it."""
    import numpy as np
    import tifffile

    from classifier.nuclei.infer import segment_nuclei
    from classifier.nuclei.metrics import score

    images = NUCLEI_DEV_SUBSET / "images"
    files = [str(images / "dsb00.tif"), str(images / "dsb05.tif")]
    r = run("segment", "--labels-out", str(tmp_path), *files)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    for stem in ("dsb00", "dsb05"):
        mine = [x for x in lines if x["source"].startswith(f"{stem}.tif#")]
        labels = tifffile.imread(tmp_path / f"{stem}_nuclei.tif")
        assert len(mine) == labels.max() and f"{stem}.tif: {len(mine)} nuclei, about " in r.stderr
        for x in mine:
            k = int(x["source"].split("#")[1])
            assert x["area_px"] == int((labels == k).sum())
            assert labels[round(x["y"]), round(x["x"])] == k  # nuclei are convex enough for this
        true = tifffile.imread(NUCLEI_DEV_SUBSET / "masks" / f"{stem}.tif")
        assert score(true, labels).f1 >= 0.9
        # the very nuclei segment-eval scores (the product's field path and the network agree)
        assert len(mine) == segment_nuclei(tifffile.imread(images / f"{stem}.tif")).count

    p = run("predict", "--kind", "field", "--channels", "DAPI", files[0])
    assert p.returncode == 2 and "missing required channel(s) CK, CD45" in p.stderr
    assert "python -m classifier segment" in p.stderr
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.zeros((64, 64), np.uint8))
    b = run("segment", str(blank))
    assert b.returncode == 0 and b.stdout == "" and "blank.tif: 0 nuclei" in b.stderr, b.stderr


def test_recalibrate_sets_rotations_and_refits_threshold_on_the_recorded_split(tmp_path):
    """Trained weights run with four views get a temperature and threshold of their own, fitted
    on the validation split their metadata records; the weights are carried over unchanged."""
    import torch

    from classifier.model import ctc_dual
    from classifier.weights import default_contract, load_bundle, save_bundle

    contract = default_contract()
    torch.manual_seed(0)
    model = ctc_dual(len(contract.feature_names)).eval()
    src = tmp_path / "one.pt"
    save_bundle(model, contract, src, {"base_version": "0.9.0", "temperature": 1.0, "threshold": 0.3,
                                       "training_data": {"n_val": 24, "n_test": 12,
                                                         "seeds": {"train": 7, "val": 1007, "test": 2007}}})
    out = tmp_path / "four.pt"
    proc = run("recalibrate", "--weights", str(src), "--out", str(out), "--no-cache", "--workers", "0",
               "--base-version", "0.9.1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    new, _, meta = load_bundle(out)
    assert new.cfg.rotations == 4 and meta["version"] == printed["version"] and meta["version"].startswith("0.9.1+")
    assert meta["recalibration"]["from_threshold"] == 0.3 and meta["recalibration"]["rotations"] == 4
    assert 0.1 <= meta["threshold"] <= 0.5 and round(meta["threshold"], 4) == printed["threshold"]["to"]
    assert printed["threshold"]["from"] == 0.3 and printed["rotations"] == {"from": 1, "to": 4}
    assert float(new.temperature) == pytest.approx(meta["temperature"], rel=1e-6) and meta["temperature"] != 1.0
    assert meta["metrics"]["synthetic_test"]["n"] == 12
    kept = {k: v for k, v in new.state_dict().items() if k != "temperature"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in kept.items())
    assert printed["next"].startswith("python -m classifier domain-calibrate --weights")
    # recalibrated again: the earlier record is kept beneath the new one
    proc = run("recalibrate", "--weights", str(out), "--out", str(tmp_path / "again.pt"), "--no-cache",
               "--workers", "0", "--rotations", "1", "--base-version", "0.9.2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    again = load_bundle(tmp_path / "again.pt")[2]["recalibration"]
    assert again["rotations"] == 1 and again["previous"]["rotations"] == 4
    # no recorded split, or the test half of it: refused with what is missing, nothing written
    for meta, missing in (({}, "training_data.n_val"),
                          ({"training_data": {"n_val": 24, "seeds": {"val": 1007}}}, "training_data.n_test")):
        bare = tmp_path / "bare.pt"
        save_bundle(model, contract, bare, meta)
        proc = run("recalibrate", "--weights", str(bare), "--out", str(tmp_path / "x.pt"), "--no-cache",
                   "--base-version", "0.9.3", "--quiet")
        assert proc.returncode != 0 and "validation split" in proc.stderr and missing in proc.stderr
        assert not (tmp_path / "x.pt").exists()
    # writing over the source is refused before anything is read
    proc = run("recalibrate", "--weights", str(src), "--out", str(src), "--no-cache", "--base-version", "0.9.4",
               "--quiet")
    assert proc.returncode != 0 and "is the bundle being recalibrated" in proc.stderr


def test_evaluate_per_event_gives_the_call_and_no_made_up_category(tmp_path, synth_folder):
    """Each line carries the model's call beside labels.csv's is_ctc; a labels.csv without a category
    column gives category null, not the last category's name."""
    import shutil

    folder = tmp_path / "nocat"
    shutil.copytree(synth_folder, folder)
    rows = (folder / "labels.csv").read_text().splitlines()
    (folder / "labels.csv").write_text("\n".join(",".join(r.split(",")[:2]) for r in rows) + "\n")
    proc = run("evaluate", "--data", str(folder), "--channels", CH, "--per-event")
    assert proc.returncode == 0, proc.stderr
    *events, summary = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert len(events) == 24
    for line in events:
        assert line["category"] is None
        # the call is the probability against the version's threshold (printed rounded to 4 places)
        if abs(line["ctc_probability"] - summary["threshold"]) > 1e-3:
            assert line["call"] == ("ctc" if line["ctc_probability"] > summary["threshold"] else "non_ctc")
