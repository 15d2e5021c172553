"""Zero-padded event frames (classifier.preprocess.fill_border): black padding to a larger frame, or
the black beyond the scan edge of a cell there, is not dark background. It is left out of the tone
measurement (classifier.tone), the domain check's measures and the intensity anchors, and the domain
check says it is there; images without fill take exactly the path they took before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier import domain, tone
from classifier.preprocess import fill_border, prepare_image, setup_image

CTC_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "ctc-dev"
PAD_LR = ((0, 0), (0, 0), (40, 40))  # ev_nonsquare: 160 px frames padded to 160 x 240



def _pad(images, pad=PAD_LR, value=0.0):
    return [np.pad(a, pad, constant_values=value) for a in images]


# --- finding the fill ----------------------------------------------------------------------------------


def test_fill_is_found_on_each_side_and_real_images_have_none(validated):
    images = validated[0]
    assert all(fill_border(a) == (0, 0, 0, 0) for a in images)
    a = images[0]
    assert fill_border(np.pad(a, ((0, 0), (3, 5), (7, 2)))) == (3, 5, 7, 2)
    assert fill_border(np.pad(a, PAD_LR, constant_values=9)) == (0, 0, 40, 40)
    edge = a.copy()
    edge[:, :, :40] = 0  # a cell at the scan edge, exported with black fill
    assert fill_border(edge) == (0, 0, 40, 0)


def test_what_is_not_fill(validated):
    a = validated[0][0]
    assert fill_border(np.zeros_like(a)) == (0, 0, 0, 0)  # blank, not padded
    one = a.copy()
    one[:, -1] = 26  # one constant line: a quantised edge or a frame line drawn by the viewer
    assert fill_border(one) == (0, 0, 0, 0)
    faded = a.copy()
    faded[:, :10] = 0  # clipped black background that fades into the scene: the next line is black too
    faded[:, 10, : a.shape[2] * 3 // 4] = 0
    assert fill_border(faded) == (0, 0, 0, 0)


# --- the tone curve and the domain check ----------------------------------------------------------------


@pytest.mark.parametrize("pad", [PAD_LR, ((0, 0), (20, 20), (20, 20)), ((0, 0), (0, 0), (60, 0))])
def test_a_padded_copy_gets_the_same_tone_decision(gamma16, validated, pad):
    for images, chans, names, _y in (gamma16, validated):
        plain = tone.measure(images, chans, names)
        padded = tone.measure(_pad(images, pad), chans, names)
        assert padded == plain, (plain, padded)
    assert tone.measure(*gamma16[:3]).applied and not tone.measure(*validated[:3]).applied


def test_the_domain_check_measures_inside_the_fill_and_says_it_is_there(validated):
    images, chans, names, _y = validated
    plain = domain.image_signals_batch(images, chans, names)
    padded = domain.image_signals_batch(_pad(images), chans, names)
    for p, q in zip(plain, padded, strict=True):
        assert q.midtone == p.midtone and q.n_nuclei == p.n_nuclei and q.grey_range == p.grey_range
        assert p.fill == 0.0 and q.fill == pytest.approx(80 / 240) and q.width == 240
    report = domain.check(padded)
    assert report.status == "in_domain"
    assert any("padded frame" in r and f"({len(images)} of {len(images)} images)" in r for r in report.reasons)
    assert not any("padded" in r for r in domain.check(plain).reasons)


# --- preprocessing ----------------------------------------------------------------------------------------


def test_a_symmetrically_padded_event_is_prepared_exactly_as_the_plain_one(validated, contract):
    images, chans, _names, _y = validated
    for img in images[:4]:
        plain = prepare_image(img, chans[0], contract)
        padded = prepare_image(np.pad(img, PAD_LR), chans[0], contract)
        assert padded.px_um[0] == plain.px_um[0] and padded.scale_source == plain.scale_source
        assert np.array_equal(padded.crops, plain.crops)
        assert np.array_equal(padded.nucleus, plain.nucleus) and np.array_equal(padded.cell, plain.cell)


def test_the_fill_is_background_to_the_model(validated, contract):
    img, chans = validated[0][0], validated[1][0]
    plain = setup_image(img, chans, contract)
    padded = setup_image(np.pad(img, PAD_LR, constant_values=30), chans, contract)
    assert np.array_equal(padded.norm[:, :, 40:-40], plain.norm)
    assert not padded.norm[:, :, :40].any() and not padded.norm[:, :, -40:].any()


@pytest.mark.skipif(not (CTC_DEV / "labels.csv").exists(), reason="ctc-dev is not on this machine")
def test_ctc_dev_padded_keeps_its_tone_curve():
    from classifier.data import load_image, read_labels

    items = read_labels(CTC_DEV)
    loaded = [load_image(CTC_DEV / it.file, ["DAPI", "CK", "AF", "CD45"]) for it in items]
    images, chans = [im for im, _, _ in loaded], [ch for _, ch, _ in loaded]
    plain = tone.measure(images, chans)
    padded = tone.measure(_pad(images), chans)
    assert padded == plain and not padded.applied
