"""Preprocessing: channel mapping, intensity and scale normalisation, the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier import features
from classifier.contract import PreprocessContract
from classifier.errors import ContractError, InputError
from classifier.preprocess import normalise, prepare_image, setup_image
from classifier.synth import make_event
from classifier.weights import load_bundle, save_bundle

CH = ["DAPI", "CK", "AF", "CD45"]


def test_crop_shape_dtype_and_channel_order(contract):
    img, _ = make_event(np.random.default_rng(0), "ctc", px_um=0.5, size_px=100)
    prep = prepare_image(img, CH, contract)
    s = contract.crop_px
    assert prep.crops.shape == (1, 4, s, s) and prep.crops.dtype == np.float32
    assert prep.nucleus.shape == (1, s, s) and prep.nucleus.dtype == bool
    # model order is DAPI, CK, CD45, AF: reordering the input channels changes nothing
    perm = [3, 0, 2, 1]
    prep2 = prepare_image(img[perm], [CH[i] for i in perm], contract)
    assert np.allclose(prep.crops, prep2.crops)


def test_intensity_normalisation_ignores_affine_contrast():
    """Raw counts and a linearly stretched render of the same pixels normalise alike."""
    img = np.random.default_rng(0).gamma(2.0, 50.0, (4, 64, 64)).astype(np.float32)
    assert np.allclose(normalise(img), normalise(img * 0.07 + 13.0), atol=1e-4)


def test_scale_normalisation_makes_size_independent_of_magnification(contract):
    """One scene drawn at 0.25 and at 0.8 µm/px: the CTC's measured diameter agrees."""
    diam = {}
    for px in (0.25, 0.8):
        img, info = make_event(np.random.default_rng(11), "ctc", px_um=px, size_px=int(60 / px))
        prep = prepare_image(img, CH, contract, pixel_size_um=px)
        f, names = features.compute(prep.crops, prep.nucleus, prep.cell, contract.um_per_px)
        diam[px] = f[0, names.index("cell_diameter_um")]
    assert diam[0.25] == pytest.approx(diam[0.8], rel=0.2)


def test_pixel_size_is_estimated_from_nuclei_when_not_given(contract):
    ests = []
    for seed in range(4):
        img, info = make_event(np.random.default_rng(seed), "leukocyte", px_um=0.3, size_px=200)
        prep = prepare_image(img, CH, contract)
        assert prep.scale_source == ["estimated"]
        ests.append(prep.px_um[0])
    assert np.median(ests) == pytest.approx(0.3, rel=0.25)


def test_missing_optional_channel_is_zero_and_required_is_an_error(contract):
    img, _ = make_event(np.random.default_rng(0), "ctc", px_um=0.5, size_px=80)
    prep = prepare_image(img[[0, 1, 3]], ["DAPI", "CK", "CD45"], contract)
    assert np.all(prep.crops[0, 3] == 0)
    with pytest.raises(InputError, match="missing required channel.*CD45"):
        prepare_image(img[:3], ["DAPI", "CK", "AF"], contract)


@pytest.mark.parametrize(
    ("image", "channels", "message"),
    [
        (np.full((4, 32, 32), np.nan, np.float32), CH, "NaN"),
        (np.zeros((4, 32), np.float32), CH, "channels, height, width"),
        (np.zeros((3, 32, 32), np.float32), CH, "4 channel names"),
        (np.zeros((4, 4, 4), np.float32), CH, "too small"),
    ],
)
def test_bad_arrays_are_rejected_with_a_message(contract, image, channels, message):
    with pytest.raises(InputError, match=message):
        prepare_image(image, channels, contract)


def test_contract_round_trips_and_mismatch_is_refused(contract, tmp_path):
    assert PreprocessContract.from_dict(contract.to_dict()) == contract
    other = PreprocessContract(**{**contract.__dict__, "crop_px": 64})
    with pytest.raises(ContractError, match="crop_px"):
        other.check_against(contract)
    # weights saved under another contract do not load
    from classifier.model import ctc_dual

    path = tmp_path / "w.pt"
    save_bundle(ctc_dual(len(contract.feature_names)), other, path, {})
    with pytest.raises(ContractError, match="crop_px"):
        load_bundle(path)
    save_bundle(ctc_dual(len(contract.feature_names)), contract, path, {})
    model, loaded, meta = load_bundle(path)
    assert loaded == contract and meta["sha256"]
    # a tampered file is refused
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["head_ctc.bias"] += 1
    torch.save(blob, path)
    with pytest.raises(ContractError, match="sha256"):
        load_bundle(path)


# --- framing-robust scale and background (issue 11) ----------------------------------------------


def test_tight_high_magnification_render_gets_its_pixel_size_within_25_percent(contract):
    """A CTC filling the frame at ~3x the usual magnification: the population median of
    nuclei would be the CTC's own (taken for a leukocyte: px ~1.5x too small); the lone
    event's reference gets within 25 % of the truth."""
    ratios = []
    for seed in range(8):
        img, info = make_event(np.random.default_rng(seed), "ctc", px_um=0.65 / 3, framing="tight", ck_dim=False)
        st = setup_image(img, CH, contract)
        assert st.scale_source == "estimated"
        ratios.append(st.px_um / info["px_um"])
    assert np.median(ratios) == pytest.approx(1.0, abs=0.25), ratios
    # the old rule (leukocyte reference for every nucleus) is what failed: it is ~1.3x off here
    old = np.median(ratios) * contract.reference_nucleus_um / contract.lone_nucleus_um
    assert old < 0.85


def test_wide_frame_at_low_magnification_keeps_its_pixel_size(contract):
    """400 px among ~40 leukocytes at 0.65 µm/px: block-averaging 4x blurred neighbouring
    nuclei together (+30 % size); measured again finer it is within 15 %."""
    ratios = []
    for seed in range(4):
        img, info = make_event(np.random.default_rng(seed), "leukocyte", px_um=0.65, size_px=400, framing="wide")
        ratios.append(setup_image(img, CH, contract).px_um / 0.65)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.15), ratios


def test_background_anchor_holds_when_the_cell_fills_the_frame():
    """A frame ~80 % filled by a cell: p20 lies in the cell, so the old anchor put the
    background at -0.5 (clipped) and the cell at ~0; the darkest blocks are background."""
    rng = np.random.default_rng(0)
    img = rng.normal(10.0, 1.0, (4, 96, 96)).astype(np.float32)
    yy, xx = np.mgrid[:96, :96]
    body = np.hypot(yy - 47.5, xx - 47.5) < 48  # the corners stay background
    img[1][body] += 100.0
    norm = normalise(img)
    corner = norm[1, :8, :8].mean()
    assert abs(corner) < 0.1, corner
    assert norm[1, 40:56, 40:56].mean() > 0.8


def test_contract_v1_weights_are_refused_naming_the_change(contract):
    old = {**contract.to_dict(), "version": 1}
    del old["lone_nucleus_um"], old["background"]
    v1 = PreprocessContract.from_dict(old)
    with pytest.raises(ContractError, match="version.*lone_nucleus_um|version"):
        v1.check_against(contract)


def _with_bar(img: np.ndarray, planes: list[int], label: bool = False) -> np.ndarray:
    """A scale bar as viewers burn it in: 6 x 40 px at the maximum, near the bottom right corner."""
    out = img.copy()
    top = out.max()
    h, w = out.shape[1:]
    for c in planes:
        out[c, h - 12:h - 6, w - 46:w - 6] = top
        if label:  # "10 µm" strokes above it
            out[c, h - 24:h - 16, w - 40:w - 39] = top
            out[c, h - 24:h - 16, w - 30:w - 29] = top
    return out


def test_a_burned_in_scale_bar_is_left_out_and_a_saturated_cell_is_not():
    from classifier.preprocess import remove_overlays

    rng = np.random.default_rng(0)
    img = rng.integers(5, 40, (4, 96, 96)).astype(np.float32)
    yy, xx = np.mgrid[:96, :96]
    img[1][(yy - 40) ** 2 + (xx - 40) ** 2 <= 64] = 255.0  # a CK-saturated cell: a blob, kept
    assert remove_overlays(img) is img
    for planes in ([0, 1, 2, 3], [1]):
        barred = _with_bar(img, planes, label=True)
        clean = remove_overlays(barred)
        assert np.all(clean[:, 84:90, 50:90] < 40)  # the bar is background again
        assert np.all(clean[:, 72:80, 56] < 40) and np.all(clean[:, 72:80, 66] < 40)  # its label too
        assert np.all(clean[1][(yy - 40) ** 2 + (xx - 40) ** 2 <= 64] == 255.0)
    blank = img.copy()
    blank[2] = 0.0  # an absent AF written as zeros: one constant plane, no overlay
    assert remove_overlays(blank) is blank


def test_a_scale_bar_does_not_move_the_calls(shipped):
    """ctc-dev with a 6 x 80 px bar in every channel: a leukocyte went from p 0.16 to 0.48 and BA
    0.955 -> 0.909 (CK only: 0.864), all in_domain (a helper's probe)."""
    from classifier import domain

    images, chans, names, _y = domain.synthetic_set("in_domain", 12, 9)
    p = [e.ctc_probability for e in shipped.analyse_arrays(images, chans[0], names=names).events]
    for planes in ([0, 1, 2, 3], [1]):
        barred = [_with_bar(np.asarray(im, np.float32), planes) for im in images]
        q = [e.ctc_probability for e in shipped.analyse_arrays(barred, chans[0], names=names).events]
        np.testing.assert_allclose(q, p, atol=0.05)  # without the step: 0.16 (all planes), 0.12 (CK)


def test_an_event_a_few_px_off_centre_keeps_its_own_nucleus():
    """The centre falls in the gap between the event's large nucleus (below) and a smaller
    neighbour (above) whose edge is nearer: the nucleus is the one covering most of the centre's
    disc. Taking the nearest pixel seeded on the neighbour (ctc-dev object024 moved 3 px)."""
    from classifier.preprocess import masks

    s, um = 48, 0.5
    yy, xx = np.mgrid[:s, :s]
    crop = np.zeros((4, s, s), np.float32)
    event = np.hypot(yy - 33, xx - 24) <= 8.0  # edge 1 px below the centre (24, 24)
    neighbour = np.hypot(yy - 15, xx - 23) <= 7.5  # edge ~1.5 px above it, nearest pixel closer
    crop[0][event | neighbour] = 1.0
    nucleus, cell = masks(crop, np.array([0.5, 0.5, 0.5], np.float32), um)
    assert nucleus[33, 24] and not nucleus[15, 23]
    assert cell[33, 24] and not cell[15, 23]


def _central(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[1:]
    sy, sx = min(side, h), min(side, w)
    y0, x0 = int(round((h - 1) / 2 - (sy - 1) / 2)), int(round((w - 1) / 2 - (sx - 1) / 2))
    return img[:, y0:y0 + sy, x0:x0 + sx]


def _same_analysis(a, b) -> None:  # noqa: ANN001 - two ImageSetups
    assert np.allclose(a.thresholds, b.thresholds, atol=1e-6)
    assert np.allclose(a.crops, b.crops, atol=1e-5)
    assert (a.nucleus == b.nucleus).all() and (a.cell == b.cell).all()


def _analysis(img: np.ndarray, contract: PreprocessContract, px: float | None):  # noqa: ANN202
    """Thresholds and the event's crop and masks, side by side."""
    from types import SimpleNamespace

    setup = setup_image(img, CH, contract, px)
    prep = prepare_image(img, CH, contract, px)
    return SimpleNamespace(thresholds=setup.thresholds, crops=prep.crops, nucleus=prep.nucleus, cell=prep.cell,
                           px=setup.px_um)


@pytest.fixture(scope="module")
def wide_ctc() -> np.ndarray:
    """A CTC exported at 400 px, 0.42 µm (168 µm: the event among many leukocytes), as one scene."""
    img, info = make_event(np.random.default_rng(11), "ctc", px_um=0.42, size_px=400, framing="wide")
    assert info["size_px"] == 400
    return img


@pytest.mark.parametrize("px, size", [(0.42, 400), (0.3, 501)])  # windows centred on the pixel grid
def test_a_wide_frame_is_analysed_on_its_central_window(contract, monkeypatch, px, size):
    """A thumbnail wider than the validated framing is normalised and thresholded on its central
    100 µm: thresholds, the event's crop and masks are those of that window exported alone, the
    scale given or inferred from the whole frame (at 0.3 µm the window's objects are read at the
    scale's block factor, not the window size's). Without the window (the whole frame's anchors and
    thresholds, as before the tenth session) they differ."""
    from classifier import preprocess

    wide_ctc, _ = make_event(np.random.default_rng(11), "ctc", px_um=px, size_px=size, framing="wide")
    side = preprocess.analysis_side(wide_ctc.shape[1:], px, "given")
    assert side == round(preprocess.ANALYSIS_FRAME_UM / px)
    _same_analysis(_analysis(wide_ctc, contract, px), _analysis(_central(wide_ctc, side), contract, px))

    inferred = setup_image(wide_ctc, CH, contract)  # the scale read on all the frame's nuclei
    assert 0.75 * px < inferred.px_um < 1.35 * px
    h, w = wide_ctc.shape[1:]
    side_inferred = preprocess.analysis_side((h, w), inferred.px_um, "estimated")
    y0, y1, x0, x1 = preprocess.analysis_window((h, w), side_inferred, ((h - 1) / 2, (w - 1) / 2))
    alone = setup_image(wide_ctc[:, y0:y1, x0:x1], CH, contract, inferred.px_um)
    assert np.allclose(inferred.thresholds, alone.thresholds, atol=1e-6)
    assert np.allclose(inferred.norm[:, y0:y1, x0:x1], alone.norm, atol=1e-5)

    monkeypatch.setattr(preprocess, "ANALYSIS_FRAME_UM", 1e6)  # the whole frame, as before the window
    whole = setup_image(wide_ctc, CH, contract, px)
    assert not np.allclose(whole.thresholds, _analysis(_central(wide_ctc, side), contract, px).thresholds, atol=1e-3)
    assert setup_image(wide_ctc, CH, contract).px_um == inferred.px_um  # the scale is the whole frame's either way


def test_the_window_leaves_padding_and_the_frame_s_short_side_alone(contract, wide_ctc):
    """Padding is not scene: a validated 160 px frame padded out to 300 px is analysed whole (no
    window). Padded on one side only (a cell at the scan's edge), the window is centred on the
    frame's centre, as the event is, kept inside the scene. A strip wider than the window on one
    side only is cut on that side."""
    from classifier import preprocess

    px = 0.42
    side = preprocess.analysis_side(wide_ctc.shape[1:], px, "given")
    one_side = np.pad(wide_ctc, ((0, 0), (0, 0), (120, 0)))  # frame centre x 259.5: scene x 139.5
    y0 = (400 - side) // 2
    x0 = int(round(139.5 - (side - 1) / 2))
    window = wide_ctc[:, y0:y0 + side, x0:x0 + side]
    got, alone = setup_image(one_side, CH, contract, px), setup_image(window, CH, contract, px)
    assert np.allclose(got.thresholds, alone.thresholds, atol=1e-6)
    assert np.allclose(got.norm[:, y0:y0 + side, 120 + x0:120 + x0 + side], alone.norm, atol=1e-5)
    assert (got.norm[:, :, :120] == 0).all()  # the fill is background

    small, _ = make_event(np.random.default_rng(12), "ctc", px_um=px, size_px=160)
    assert preprocess.analysis_side((160, 160), px, "given") is None
    bigger = np.pad(small, ((0, 0), (70, 70), (70, 70)))  # 300 px, 126 µm as given; the scene is 67 µm
    assert preprocess.analysis_side(bigger.shape[1:], px, "given") is not None
    _same_analysis(_analysis(bigger, contract, px), _analysis(small, contract, px))

    strip = wide_ctc[:, 120:280, :]  # 160 x 400 px
    side = preprocess.analysis_side(strip.shape[1:], px, "given")
    assert _central(strip, side).shape[1:] == (160, side)
    _same_analysis(_analysis(strip, contract, px), _analysis(_central(strip, side), contract, px))


def test_no_window_is_cut_by_an_untrustworthy_scale():
    """A pixel size coarser than 1.0 µm, estimated (from nuclei under ~7 px: specks, or a lone
    nucleus in a tight crop) or given (file calibrations are sometimes wrong), or the default scale
    (no nuclei) cuts no window."""
    from classifier.preprocess import WINDOW_MAX_PX_UM, analysis_side

    assert analysis_side((160, 160), 2.3, "estimated") is None
    assert analysis_side((160, 160), WINDOW_MAX_PX_UM, "estimated") == round(100 / WINDOW_MAX_PX_UM)
    assert analysis_side((400, 400), 0.42, "default") is None
    # a given scale as coarse (a wrong file calibration would cut a 160 px thumbnail to 43 px): none
    assert analysis_side((160, 160), 2.3, "given") is None
    assert analysis_side((400, 400), 0.42, "given") == round(100 / 0.42)
    assert analysis_side((160, 160), float("nan"), "given") is None
