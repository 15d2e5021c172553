"""Tone-curve harmonisation (classifier.tone): a set of 8-bit exports whose display gamma moved
the mid-tones far from the validated ones is re-mapped before classification, the same way in the
engine (uploads), in labelled folders (evaluate, finetune, lab training) and nowhere else; sets
like the validated ones, raw counts and small sets are left exactly as given."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from classifier import data, domain, tone
from classifier.preprocess import Prepared, prepare_image


def test_a_validated_looking_set_is_left_alone(validated):
    images, chans, names, _y = validated
    out, curve = tone.harmonise(images, chans, names)
    assert not curve.applied and curve.measured == 16
    assert abs(curve.midtone - domain.VALIDATED_MIDTONE) <= tone.CORRECT_ABOVE
    assert all(a is b for a, b in zip(out, images, strict=True))


def test_a_darkened_export_is_brought_back_to_the_validated_midtones(gamma16):
    images, chans, names, _y = gamma16
    out, curve = tone.harmonise(images, chans, names)
    assert curve.applied and curve.midtone < domain.VALIDATED_MIDTONE - tone.CORRECT_ABOVE
    # about the inverse of the 1.6 applied (mid-tones are a statistic, not the curve itself)
    assert 0.5 < curve.gamma < 0.8
    again = tone.measure([np.round(o) for o in out], chans, names)  # as if exported again in 8 bits
    assert abs(again.midtone - domain.VALIDATED_MIDTONE) < 0.05 and not again.applied
    assert "re-mapped" in curve.note() and f"{curve.gamma:.2f}" in curve.note()


def test_raw_counts_and_small_sets_are_never_remapped(gamma16):
    images, chans, names, _y = gamma16
    few, curve = tone.harmonise(images[: domain.MIN_IMAGES_FOR_TONE - 1], chans, names)
    assert not curve.applied and curve.midtone is None
    raw = [(img * 40.0 + 300.0).astype(np.float32) for img in images]  # 16-bit camera counts
    out, curve = tone.harmonise(raw, chans, names)
    assert not curve.applied
    assert all(np.array_equal(a, b) for a, b in zip(out, raw, strict=True))
    assert tone.remap(raw[0], tone.ToneCurve(0.6, 0.4, 16)) is raw[0]


def test_the_engine_classifies_the_remapped_images_and_says_so(shipped, gamma16):
    images, chans, names, _y = gamma16
    res = shipped.analyse_arrays(images, chans[0], names=names)
    _out, curve = tone.harmonise(images, chans, names)
    fixed = [tone.remap(img, curve) for img in images]
    ref = shipped.analyse_arrays(fixed, chans[0], names=names)  # already validated-looking: used as given
    p = np.array([e.ctc_probability for e in res.events])
    p_ref = np.array([e.ctc_probability for e in ref.events])
    np.testing.assert_allclose(p, p_ref, atol=1e-6)
    # the check judges what was uploaded: still shifted, and its tone sentence says what was done
    assert res.domain_check["status"] == "shifted"
    assert any("re-mapped" in r for r in res.domain_check["reasons"])
    assert not any(r.startswith(domain.TONE_REASON) for r in res.domain_check["reasons"])
    assert not any("re-mapped" in r for r in ref.domain_check["reasons"])


def test_only_the_8bit_images_of_a_mixed_set_are_remapped(gamma16):
    images, chans, names, _y = gamma16
    raw = [(img * 40.0 + 300.0).astype(np.float32) for img in images[:4]]  # 16-bit counts among them
    out, curve = tone.harmonise([*raw, *images], chans[:4] + chans, names[:4] + names)
    assert curve.applied
    assert all(a is b for a, b in zip(out[:4], raw, strict=True))
    assert not np.array_equal(out[4], images[0])


def _write_folder(folder: Path, images, names, y) -> None:
    rows = []
    for img, name, label in zip(images, names, y, strict=True):
        f = Path(name).with_suffix(".tif").name
        tifffile.imwrite(folder / f, np.clip(img, 0, 255).astype(np.uint8), photometric="minisblack")
        rows.append((f, int(label)))
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "is_ctc"])
        w.writerows(rows)


def _crops(images, chans, contract, curve=None):
    u8 = [np.clip(img, 0, 255).astype(np.uint8) for img in images]
    preps = [prepare_image(tone.remap(img, curve) if curve else img, chans, contract, None) for img in u8]
    return Prepared.concat(preps, contract).crops


@pytest.mark.parametrize("sample", [tone.SAMPLE, 8])  # 8: the curve read from a sample of the folder
def test_a_labelled_folder_is_harmonised_like_an_upload(tmp_path: Path, gamma16, contract, monkeypatch, sample):
    images, chans, names, y = gamma16
    monkeypatch.setattr(tone, "SAMPLE", sample)
    _write_folder(tmp_path, images, names, y)
    prepared = data.prepare_folder(tmp_path, chans[0], contract)
    _out, curve = tone.harmonise(images, chans, names)
    assert prepared.tone.applied
    assert prepared.tone.gamma == pytest.approx(curve.gamma, rel=1e-6)
    # the folder's events are those of the remapped images prepared one by one
    np.testing.assert_allclose(prepared.events.crops, _crops(images, chans[0], contract, prepared.tone), atol=1e-6)
    assert prepared.tone.measured == min(sample, 16)


def test_a_team_folder_for_lab_training_is_used_as_exported(tmp_path: Path, gamma16, contract):
    """Lab training gathers events of many uploads (some as the pipeline's thumbnails): no set-wide curve."""
    images, chans, names, y = gamma16
    _write_folder(tmp_path, images, names, y)
    ds = data.folder(tmp_path, chans[0], contract, harmonise=False)
    np.testing.assert_allclose(ds.crops, _crops(images, chans[0], contract), atol=1e-6)


def test_the_calibration_sets_are_prepared_as_the_engine_prepares_them(gamma16, contract):
    images, chans, names, _y = gamma16
    prep, _feats, sigs = domain.prepare_set(images, chans, names, contract)
    _out, curve = tone.harmonise(images, chans, names)
    np.testing.assert_allclose(prep.crops, _crops(images, chans[0], contract, curve), atol=1e-6)
    assert np.median([s.midtone for s in sigs]) < domain.VALIDATED_MIDTONE - tone.CORRECT_ABOVE  # as given


CTC_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ctc-dev"


@pytest.mark.skipif(not (CTC_DEV / "labels.csv").exists(), reason="ctc-dev is not on this machine")
def test_the_midtone_follows_the_curve_not_the_events_or_their_position():
    """A probe drew same-lab galleries from ctc-dev: sets without CTCs read "brighter" (CK-negative
    frames 0.65, CTC frames 0.54) and a quarter of 30-event ones were re-mapped, and moving the
    content by 1 px moved an image's mid-tone by up to 0.5 (400 grid samples, the 2nd brightest
    their top). The nuclear mid-tone is read densely on DAPI, which every event has."""
    items = data.read_labels(CTC_DEV)
    chans = ["DAPI", "CK", "AF", "CD45"]
    images = [data.load_input(CTC_DEV / it.file, chans).image.astype(np.float32) for it in items]
    ctc = [im for im, it in zip(images, items, strict=True) if it.is_ctc]
    rest = [im for im, it in zip(images, items, strict=True) if not it.is_ctc]

    def midtone(ims: list[np.ndarray]) -> float:
        return float(np.median([s.midtone for s in domain.image_signals_batch(ims, [chans] * len(ims),
                                                                               ["e.tif"] * len(ims))]))

    whole = midtone(images)
    assert abs(whole - domain.VALIDATED_MIDTONE) < 0.02
    assert abs(midtone(ctc) - midtone(rest)) < 0.03
    assert not tone.measure(rest, [chans] * len(rest)).applied
    for dy, dx in ((1, 0), (0, 1), (2, -3)):
        moved = []
        for im in images:
            m = im.copy()
            m[:, 1:-1, 1:-1] = np.roll(im[:, 1:-1, 1:-1], (dy, dx), axis=(1, 2))  # the export's edge lines stay
            moved.append(m)
        assert abs(midtone(moved) - whole) < 0.02, (dy, dx)
