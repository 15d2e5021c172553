"""Nucleus segmentation (classifier.nuclei): metrics, shipped weights, real nuclei-dev images,
scale inference, 16-bit camera renders and the implausible-count flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from classifier.nuclei import emulate, infer, metrics
from classifier.nuclei.infer import WEIGHTS, load_model, provenance, segment_nuclei
from classifier.nuclei.prep import resample
from classifier.segmentation import analyse_field, plausibility_warnings, uncertainty_warnings

# five nuclei-dev images (DSB 2018, CC0) ship with the tests (tests/data/nuclei-dev/README.md), so
# real nuclei are segmented on every machine; the whole set lives at ../shared/data/nuclei-dev
NUCLEI_DEV = Path(__file__).resolve().parents[1] / "data" / "nuclei-dev"


def _dev(name: str) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    return (tifffile.imread(NUCLEI_DEV / "images" / f"{name}.tif"),
            tifffile.imread(NUCLEI_DEV / "masks" / f"{name}.tif").astype(np.int32))


# --- metrics -------------------------------------------------------------------------------


def _hand_made() -> tuple[np.ndarray, np.ndarray]:
    true = np.zeros((20, 40), np.int32)
    true[2:8, 2:8] = 1  # found exactly
    true[2:8, 12:18] = 2  # split in two halves: one TP (one half's centroid inside), one FP
    true[12:18, 2:8] = 3  # missed
    true[12:18, 12:18] = 4  # merged with 5 into one object: one TP (centroid in 5), one FN
    true[12:18, 18:24] = 5
    pred = np.zeros_like(true)
    pred[2:8, 2:8] = 7
    pred[2:8, 12:15] = 8
    pred[2:8, 15:18] = 9
    pred[12:18, 12:25] = 3
    pred[2:5, 30:33] = 4  # on background: FP
    return true, pred


def test_detection_and_iou_scores_on_a_hand_made_example() -> None:
    true, pred = _hand_made()
    s = metrics.score(true, pred)
    assert (s.n_true, s.n_pred, s.tp) == (5, 5, 3)
    assert s.precision == pytest.approx(3 / 5) and s.recall == pytest.approx(3 / 5)
    assert s.f1 == pytest.approx(0.6)
    # IoU >= 0.5: object 1 (IoU 1) and object 2 with a half of it (IoU 18/36 = 0.5, inclusive)
    assert s.tp_iou == 2 and s.f1_iou50 == pytest.approx(0.4)
    pooled = s + metrics.score(true, true)
    assert (pooled.n_true, pooled.tp, pooled.tp_iou) == (10, 8, 7)
    empty = metrics.score(true, np.zeros_like(true))
    assert empty.f1 == 0.0 and metrics.score(np.zeros_like(true), np.zeros_like(true)).f1 == 1.0


def test_detection_errors_are_told_apart_and_add_up_to_the_misses_and_false_objects() -> None:
    true, pred = _hand_made()
    true[12:18, 28:34] = 6  # half covered by an object whose centroid lies beside it: off centre
    pred[8:20, 31:40] = 10
    e = metrics.errors(true, pred)
    assert e == {"merged": 1, "not_found": 1, "off_centre": 1, "split": 1, "background": 2}
    s = metrics.score(true, pred)
    assert e["merged"] + e["not_found"] + e["off_centre"] == s.n_true - s.tp
    assert e["split"] + e["background"] == s.n_pred - s.tp
    assert metrics.errors(true, np.zeros_like(true))["not_found"] == 6
    apart = np.zeros_like(true)
    apart[0, 38:40] = 1  # objects that touch no nucleus
    assert metrics.errors(true, apart) == {"merged": 0, "not_found": 6, "off_centre": 0, "split": 0,
                                           "background": 1}
    assert sum(metrics.errors(true, true).values()) == 0


# --- weights ------------------------------------------------------------------------------------


def test_shipped_weights_load_once_and_say_where_they_come_from() -> None:
    assert WEIGHTS.exists() and WEIGHTS.stat().st_size < 2_000_000
    assert load_model() is load_model()  # once per process
    meta = provenance()
    assert "CC0" in meta["training_data"]["licence"]
    assert "nuclei-dev never used" in meta["training_data"]["folder"]
    assert meta["training_command"].startswith("python -m classifier train-nuclei")
    assert isinstance(meta["seed"], int)
    assert meta["val_known_scale"]["f1"] > 0.9


# --- real images ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "min_f1"), [("dsb00", 0.9), ("dsb05", 0.93), ("dsb13", 0.78), ("dsb19", 0.93)])
def test_nuclei_dev_images_are_segmented(name: str, min_f1: float) -> None:
    img, true = _dev(name)
    labels = segment_nuclei(img).labels
    s = metrics.score(true, labels)
    assert s.f1 >= min_f1, s.as_dict()
    e = metrics.errors(true, labels)  # on real outlines too, every error has one cause
    assert (e["merged"] + e["not_found"] + e["off_centre"], e["split"] + e["background"]) == (
        s.n_true - s.tp, s.n_pred - s.tp)


@pytest.mark.parametrize("canvas", ["zero", "level", "black_edge"])
def test_an_image_on_a_larger_blank_canvas_is_segmented_as_alone(canvas: str) -> None:
    """An image pasted onto a blank canvas, or beside an unscanned (black) strip, is the same
    image: the blank part used to move the scale search (dsb00 in a zero 1024^2 canvas: one object
    for its 16 nuclei; nuclei-dev pooled 0.928 -> 0.808) and to put nuclei along the edge."""
    img, true = _dev("dsb00")
    alone = segment_nuclei(img).labels
    h, w = img.shape
    if canvas == "black_edge":  # a straight fill edge on one side (image content on the others)
        big = np.zeros((h, w + 300), img.dtype)
        y0, x0 = 0, 0
    else:
        big = np.full((1024, 1024), 0 if canvas == "zero" else int(np.median(img)), img.dtype)
        y0, x0 = 300, 200
    big[y0:y0 + h, x0:x0 + w] = img
    labels = segment_nuclei(big).labels
    inside = labels[y0:y0 + h, x0:x0 + w]
    assert np.array_equal(inside > 0, alone > 0)
    assert int(labels.max()) == int(alone.max()) == len(np.unique(inside)) - 1  # nothing outside it


def test_the_same_nuclei_at_3x_magnification_give_the_same_count() -> None:
    img, true = _dev("dsb05")
    small = segment_nuclei(img)
    big = segment_nuclei(resample(img.astype(np.float32), 3.0))
    assert abs(big.count - small.count) <= max(2, 0.08 * small.count), (small.count, big.count)
    assert big.measured_diameter_px == pytest.approx(3 * small.measured_diameter_px, rel=0.25)


def test_large_nuclei_worked_small_get_outlines_at_the_recorded_resolution(monkeypatch) -> None:  # noqa: ANN001

    img, true = _dev("dsb19")  # nuclei of ~57 px, worked at about a fifth of that
    fine = segment_nuclei(img)
    assert fine.factor < 0.3 and infer.instance_zoom(fine.factor) == infer.MAX_INSTANCE_ZOOM
    monkeypatch.setattr(infer, "MAX_INSTANCE_ZOOM", 1.0)  # labels drawn at the working scale
    blocky = segment_nuclei(img)
    assert fine.count == blocky.count
    agree = {k: float(((r.labels > 0) == (true > 0)).mean()) for k, r in (("fine", fine), ("blocky", blocky))}
    assert agree["fine"] >= agree["blocky"] + 0.004, agree
    # the measured size is in recorded pixels either way
    assert fine.measured_diameter_px == pytest.approx(blocky.measured_diameter_px, rel=0.05)


def test_a_16_bit_render_with_a_camera_offset_is_segmented_like_the_original() -> None:
    img, true = _dev("dsb12")
    raw, lab = emulate.offset16(img, true, np.random.default_rng(1), max_side=768)
    assert raw.dtype == np.uint16 and np.percentile(raw, 1) > 30000  # the offset is there
    assert raw.shape[0] > 2 * img.shape[0] * 0.9 or raw.shape[0] >= 700  # upsampled 2-4x
    s = metrics.score(lab, segment_nuclei(raw).labels)
    assert s.f1 >= 0.85, s.as_dict()


def test_chromocentres_are_not_taken_for_nuclei(monkeypatch) -> None:  # noqa: ANN001
    # large nuclei (~100 px) speckled with bright heterochromatin foci of nucleus size at the
    # working scale: the fine look reads the foci as nuclei, the coarse look the nuclei
    img, true = _dev("dsb14")
    raw, lab = emulate.render("chromocentres", img, true, np.random.default_rng([0, 14]))
    assert raw.dtype == np.uint16 and raw.shape[0] > 700 and lab.max() >= 50
    r = segment_nuclei(raw)
    s = metrics.score(lab, r.labels)
    assert s.f1 >= 0.8 and r.count <= 1.3 * lab.max(), s.as_dict()
    assert r.diameter_px > 60 and not r.uncertain
    # with one reading only (the look nearest the working size, as before), the foci win
    monkeypatch.setattr(infer, "SCALE_TOLERANCE", 1e9)
    one = segment_nuclei(raw)
    assert one.count > 5 * lab.max() and one.diameter_px < 20 and one.uncertain


def _darkest_spot(img: np.ndarray, lab: np.ndarray) -> float:
    """Median over nuclei of the darkest nucleolus-scale spot in the core, relative to the core's median."""
    from scipy import ndimage as ndi

    ids = np.arange(1, lab.max() + 1)
    areas = np.asarray(ndi.sum(np.ones_like(lab), lab, ids))
    d = 2 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
    sig = ndi.gaussian_filter(img.astype(np.float32), 0.08 * d) - float(np.percentile(img, 5))
    dips = []
    for i in ids[areas > 0.5 * np.median(areas)]:
        core = ndi.binary_erosion(lab == i, iterations=max(1, int(0.15 * d)))
        if core.sum() >= 10:
            dips.append(float(sig[core].min() / max(float(np.median(sig[core])), 1e-6)))
    return float(np.median(dips))


def test_the_nucleoli_render_has_dark_nucleoli_and_a_wide_brightness_spread() -> None:
    from scipy import ndimage as ndi

    img, true = _dev("dsb12")
    raw, lab = emulate.render("nucleoli", img, true, np.random.default_rng([0, 12]))
    assert raw.dtype == np.uint16 and raw.shape[0] >= 700 and 10 <= lab.max() <= true.max()
    ids = np.arange(1, lab.max() + 1)
    big = ids[np.asarray(ndi.sum(np.ones_like(lab), lab, ids)) > 2000]
    means = np.asarray(ndi.mean(raw.astype(np.float32) - float(np.percentile(raw, 5)), lab, big))
    assert np.percentile(means, 90) > 2.5 * np.percentile(means, 10)  # dim next to bright (0.2-1x)
    # dark spots of nucleolus size in the cores that the real nuclei do not have
    assert _darkest_spot(raw, lab) < _darkest_spot(img, true) - 0.1


# --- implausible counts ---------------------------------------------------------------------


def test_plausibility_flags_impossible_counts_and_sizes_and_passes_ordinary_ones() -> None:
    assert plausibility_warnings(300, (1024, 1024), 11.0, 10.5) == []
    assert plausibility_warnings(0, (1024, 1024), 11.0, None) == []
    too_many = plausibility_warnings(3526, (1024, 1024), 40.0, 38.0)
    assert len(too_many) == 1 and "more than the" in too_many[0] and "3526" in too_many[0]
    fragments = plausibility_warnings(900, (1024, 1024), 30.0, 6.0)
    assert len(fragments) == 1 and "fragments" in fragments[0]
    assert "nucleus size" in plausibility_warnings(20, (512, 512), 1.5, 1.5)[0]
    assert "nucleus size" in plausibility_warnings(2, (4096, 4096), 400.0, 380.0)[0]


def test_a_field_is_flagged_when_its_pixel_size_makes_the_count_impossible() -> None:
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(3), 256, 256, 60, pixel_size_um=0.65)
    plain = analyse_field(img, ["DAPI", "CK", "AF", "CD45"], 0.65)
    assert plain.warnings == [] and len(plain.cells) > 40
    wrong = analyse_field(img, ["DAPI", "CK", "AF", "CD45"], 20.0)  # nuclei would be 0.35 px
    assert any("Implausible pixel size" in w for w in wrong.warnings), wrong.warnings


def test_an_empty_textured_field_gives_no_nuclei_and_says_why() -> None:
    import tifffile

    # a 16-bit render (~33,000 camera offset, uneven light) of a stretch of hazy background
    # with no nucleus in it: the network, asked for nuclei, found 3,603 specks of haze before
    # the contrast test; now nothing is counted and the field says why
    root = NUCLEI_DEV.parent / "nuclei-train"
    img = tifffile.imread(root / "images" / "dsbt260.tif")
    lab = tifffile.imread(root / "masks" / "dsbt260.tif").astype(np.int32)
    frame, true = emulate.render("offset16", img, lab, np.random.default_rng([0, 26]))
    assert true.max() == 0 and frame.shape[0] > 1000 and np.percentile(frame, 1) > 30000
    r = segment_nuclei(frame)
    assert r.empty and r.count == 0 and r.contrast is not None and r.contrast < infer.EMPTY_BELOW
    rng = np.random.default_rng(1)
    markers = [33000 + 1.5 * rng.poisson(60, frame.shape) for _ in range(3)]  # no cell in any channel
    image = np.stack([frame, *markers]).astype(np.float32)
    seg = analyse_field(image, ["DAPI", "CK", "AF", "CD45"])
    # an empty frame (a cartridge's edge): nothing counted and nothing to warn about, so that one
    # such frame does not make its whole upload read `shifted`
    assert seg.n_nuclei == 0 and seg.cells == [] and seg.warnings == []
    # the same DAPI where CD45 shows leukocytes: the nuclei must be somewhere, so it says why
    yy, xx = np.indices(frame.shape)
    for cy, cx in ((200, 300), (600, 500), (900, 800)):
        image[3][(yy - cy) ** 2 + (xx - cx) ** 2 <= 30 ** 2] += 3000
    seg = analyse_field(image, ["DAPI", "CK", "AF", "CD45"])
    assert seg.cells == []
    assert len(seg.warnings) == 1 and seg.warnings[0].startswith("No nuclei"), seg.warnings


def test_a_vignetted_field_is_not_taken_for_an_empty_one() -> None:
    """Corners at 30 % of the light: the block background leaves ramps that the plain spread took
    for noise (contrast 15, under the 'empty' bar: no cell counted); read about the local level the
    nuclei stand out as they do under even light."""
    from classifier.synth import make_field

    img, lab = make_field(np.random.default_rng(0), 512, 512, 200, pixel_size_um=0.65)
    yy, xx = np.indices(lab.shape)
    fall = 1 - 0.7 * ((yy - 255.5) ** 2 + (xx - 255.5) ** 2) / (2 * 255.5**2)
    even, dim = segment_nuclei(img[0], 10.8), segment_nuclei((img[0] * fall).astype(np.float32), 10.8)
    assert not dim.empty and dim.contrast > 3 * infer.EMPTY_BELOW, (even.contrast, dim.contrast)
    assert abs(dim.count - lab.max()) <= 0.05 * lab.max() and abs(dim.count - even.count) <= 10


def test_real_nuclei_stand_out_of_the_noise_however_dim() -> None:
    img, true = _dev("dsb19")  # the dimmest nuclei-dev image: maximum 30 of 255
    r = segment_nuclei(img)
    assert not r.empty and r.contrast > 2 * infer.EMPTY_BELOW and r.count >= 15, r.contrast
    # the same nuclei at a tenth of the brightness, on a 16-bit camera with an offset and noise
    rng = np.random.default_rng(3)
    faint = 1000 + rng.poisson(20 + img.astype(np.float64) * 2.0) + rng.normal(0, 3, img.shape)
    r = segment_nuclei(faint.astype(np.float32))
    assert not r.empty and metrics.score(true, r.labels).f1 >= 0.85


def test_boundary_ambiguity_tracks_how_sure_the_outlines_are() -> None:
    yy, xx = np.indices((256, 256))
    discs = np.zeros((256, 256), np.float32)
    for cy in range(16, 256, 32):
        for cx in range(16, 256, 32):
            discs[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1.0  # working-size nuclei (12 px)
    from scipy import ndimage as ndi

    crisp = ndi.gaussian_filter(discs, 0.7)
    blurred = ndi.gaussian_filter(discs, 2.5) * 1.6  # wide unsure rims: faint or crowded nuclei
    a_crisp, a_blur = infer.boundary_ambiguity(crisp), infer.boundary_ambiguity(blurred)
    assert a_crisp is not None and a_crisp < 0.6 < infer.AMBIGUOUS_ABOVE
    assert a_blur is not None and a_blur > infer.AMBIGUOUS_ABOVE
    assert infer.boundary_ambiguity(np.zeros((64, 64), np.float32)) is None  # nothing called nuclear


@pytest.mark.parametrize("name", ["dsb00", "dsb05", "dsb12", "dsb19"])
def test_real_fields_segmented_well_are_not_called_uncertain(name: str) -> None:
    img, _ = _dev(name)
    r = segment_nuclei(img)
    assert r.ambiguity is not None and not r.uncertain and uncertainty_warnings(r) == []


def test_an_uncertain_field_carries_a_warning_to_the_analysis(monkeypatch) -> None:  # noqa: ANN001
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(5), 256, 256, 60, pixel_size_um=0.65)
    assert analyse_field(img, ["DAPI", "CK", "AF", "CD45"], 0.65).warnings == []
    monkeypatch.setattr(infer, "AMBIGUOUS_ABOVE", 0.0)  # every outline now counts as unsure
    warned = analyse_field(img, ["DAPI", "CK", "AF", "CD45"], 0.65).warnings
    assert len(warned) == 1 and warned[0].startswith("Uncertain nucleus outlines"), warned


def test_the_engine_reports_the_flag_as_an_analysis_warning(shipped) -> None:  # noqa: ANN001
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(4), 256, 256, 60, pixel_size_um=0.65)
    ok = shipped.analyse_arrays([img], "DAPI,CK,AF,CD45", kind="field", pixel_size_um=0.65, names=["f1"])
    assert not any("Implausible" in w for w in ok.warnings)
    bad = shipped.analyse_arrays([img], "DAPI,CK,AF,CD45", kind="field", pixel_size_um=20.0, names=["f1"])
    assert any(w.startswith("f1: Implausible") for w in bad.warnings), bad.warnings


# --- sparse fields: the network runs where the signal is -------------------------------------


def test_a_sparse_field_is_segmented_on_its_signal_regions_with_the_same_nuclei(monkeypatch) -> None:  # noqa: ANN001
    from classifier.nuclei.prep import prepare
    from classifier.synth.field import make_field

    img, truth = make_field(np.random.default_rng(100), 640, 800, 10, pixel_size_um=0.65)
    dapi = img[0].astype(np.float32)
    regions = infer.signal_regions(prepare(dapi))
    assert regions is not None and 5 <= regions.max() <= 30  # the cells, in a few groups
    assert (regions > 0).mean() < infer.SPARSE_BELOW
    sparse = segment_nuclei(dapi, 7 / 0.65)
    assert sparse.count == len(np.unique(truth)) - 1
    assert metrics.score(truth, sparse.labels).f1 == 1.0
    monkeypatch.setattr(infer, "SPARSE_BELOW", 0.0)  # every image dense: the network everywhere
    dense = segment_nuclei(dapi, 7 / 0.65)
    # on the nuclei the two passes agree to the pixel (boxes on the pooling grid); the whole-image
    # pass may also call an object in flat background noise, where the sparse pass does not look
    on_cells = np.isin(dense.labels, np.unique(dense.labels[truth > 0])) & (dense.labels > 0)
    dense_cells = np.where(on_cells, dense.labels, 0)
    s = metrics.score(dense_cells, sparse.labels)
    assert s.f1 == 1.0 and s.f1_iou50 == 1.0
    assert ((dense_cells > 0) != (sparse.labels > 0)).sum() < 0.005 * (dense_cells > 0).sum()


def test_a_dense_or_small_image_takes_the_whole_image_path() -> None:
    from classifier.nuclei.prep import prepare
    from classifier.synth.field import make_field

    dense, _ = make_field(np.random.default_rng(1), 640, 640, 600, pixel_size_um=0.65)
    assert infer.signal_regions(prepare(dense[0].astype(np.float32))) is None
    small, _ = make_field(np.random.default_rng(2), 256, 256, 3, pixel_size_um=0.65)
    assert infer.signal_regions(prepare(small[0].astype(np.float32))) is None


def test_a_nucleus_cut_in_two_is_joined_and_two_touching_nuclei_are_not() -> None:
    from classifier.nuclei.infer import merge_convex

    yy, xx = np.indices((80, 160))
    lab = np.zeros((80, 160), np.int32)
    # one round nucleus (r 14) cut down the middle into labels 1 and 2
    disc = (yy - 40) ** 2 + (xx - 30) ** 2 <= 14 ** 2
    lab[disc & (xx < 30)] = 1
    lab[disc & (xx >= 30)] = 2
    # two touching nuclei (r 10, centres 19 px apart): a waisted pair, labels 3 and 4
    lab[(yy - 40) ** 2 + (xx - 90) ** 2 <= 10 ** 2] = 3
    lab[((yy - 40) ** 2 + (xx - 109) ** 2 <= 10 ** 2) & (lab == 0)] = 4
    # lone nuclei of the usual size (r 13) set the median
    for k, (cy, cx) in enumerate([(14, 140), (66, 140), (14, 60), (66, 60), (66, 20)], start=5):
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= 13 ** 2) & (lab == 0)] = k
    out = merge_convex(lab)
    assert out[40, 20] == out[40, 40] != 0  # the halves are one nucleus again
    assert out[40, 85] != out[40, 114]  # the touching pair stays two
    assert len(np.unique(out[out > 0])) == 8


@pytest.mark.parametrize("artefact_um", [40.0, 80.0])
def test_one_large_artefact_does_not_set_a_sparse_frames_scale(artefact_um: float) -> None:
    """A CellSearch-like frame (25 cells at 0.645 µm) with one DAPI-bright artefact 40-80 µm across and
    no pixel size: the pixel-weighted size vote followed the artefact (the scale 5-10x off) and kept
    1 of 25 nuclei, in_domain. Scattered small objects now vote one each against a few large ones."""
    from scipy import ndimage as ndi

    from classifier.synth.field import make_field

    img, truth = make_field(np.random.default_rng(1), 1036, 1384, 25, pixel_size_um=0.645, ctc_fraction=0.12)
    r = artefact_um / 2 / 0.645
    yy, xx = np.mgrid[:1036, :1384]
    blob = ndi.gaussian_filter((((yy - 200) ** 2 + (xx - 1100) ** 2) < r * r).astype(np.float32), 2)
    dapi = img[0] + float(np.percentile(img[0], 99.9)) * blob
    res = segment_nuclei(dapi)
    assert res.diameter_px == pytest.approx(7 / 0.645, rel=0.35)
    assert metrics.score(truth, res.labels).recall >= 0.9, res.count


def test_bfloat16_inference_finds_the_same_nuclei(monkeypatch) -> None:  # noqa: ANN001
    """CLASSIFIER_NUCLEI_PRECISION=bf16 (the default "auto" where the CPU has AMX): half the network time
    there, and nuclei-dev scored the same to within one nucleus an image (pooled 0.9285 against 0.9281)."""
    img, true = _dev("dsb12")  # 125 nuclei, 520x696

    def scored(mode: str) -> metrics.Scores:
        infer.bfloat16.cache_clear()
        monkeypatch.setenv(infer.PRECISION_ENV, mode)
        assert infer.bfloat16() is (mode == "bf16")
        return metrics.score(true, segment_nuclei(img).labels)

    try:
        full, half = scored("fp32"), scored("bf16")
        assert abs(half.n_pred - full.n_pred) <= 2 and abs(half.tp - full.tp) <= 2, (half.as_dict(), full.as_dict())
        assert half.f1 >= 0.95
        infer.bfloat16.cache_clear()
        monkeypatch.setenv(infer.PRECISION_ENV, "float8")
        with pytest.raises(ValueError, match="fp32, bf16 or auto"):
            infer.bfloat16()
    finally:
        infer.bfloat16.cache_clear()  # the next test reads the environment it restores


def test_star_convex_outlines_part_touching_nuclei_the_distance_map_joins(monkeypatch) -> None:  # noqa: ANN001
    """Two pressed-together nuclei whose distance map has one ridge (no valley to cut along) are one
    object from the distance map alone, and two once each pixel's star-convex outline is read
    (`classifier.nuclei.star`): the outlines seen from the two centres overlap little, so
    non-maximum suppression keeps both, as seeds or as the nuclei themselves; "off" ignores them."""
    from skimage.morphology import convex_hull_image
    from stardist import star_dist

    yy, xx = np.indices((64, 64))
    lab = np.zeros((64, 64), np.int32)
    lab[(yy - 32) ** 2 + (xx - 26) ** 2 <= 49] = 1
    lab[((yy - 32) ** 2 + (xx - 38) ** 2 <= 49) & (lab == 0)] = 2
    fg = (lab > 0).astype(np.float32)
    # one ridge across both, as a network that merges them sees them: the distance map of their hull
    edt = ndi.distance_transform_edt(convex_hull_image(fg > 0))
    dist = (edt / edt.max() * fg).astype(np.float32)
    rays = star_dist(lab, 32).transpose(2, 0, 1) / infer.WORK_DIAMETER
    maps = np.concatenate([np.stack([fg, dist, np.zeros_like(fg)]), rays]).astype(np.float32)
    assert infer.instances(maps[:3]).max() == 1
    two = infer.instances(maps)
    assert two.max() == 2
    for k in (1, 2):  # each found object is one of the two nuclei (the cut follows the distance map)
        found = np.bincount(two[lab == k]).argmax()
        iou = ((two == found) & (lab == k)).sum() / ((two == found) | (lab == k)).sum()
        assert found > 0 and iou > 0.75
    monkeypatch.setenv("CLASSIFIER_NUCLEI_STAR", "polygons")
    assert infer.instances(maps).max() == 2
    monkeypatch.setenv("CLASSIFIER_NUCLEI_STAR", "off")
    assert infer.instances(maps).max() == 1
    monkeypatch.setenv("CLASSIFIER_NUCLEI_STAR", "stars")
    with pytest.raises(ValueError, match="CLASSIFIER_NUCLEI_STAR must be one of seeds, polygons, off"):
        infer.instances(maps)


# --- the product's field path on a nuclear stain alone -----------------------------------------


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same objects, whatever their numbers."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("name", ["dsb05", "dsb14"])  # nuclei of ~20 and ~25 px: cells grown at 2x
def test_a_nuclear_stain_alone_is_segmented_as_the_nucleus_network_finds_it(name: str) -> None:
    """With no CK or CD45 to grow cells into, a field's cells are its nuclei at the input's resolution:
    what ``segment-eval`` measures is what the product counts. A made-up rim around each nucleus took
    nuclei-dev's F1 at IoU 0.5 from 0.876 to 0.734, and mending undrawn edges cost 5 of 1,538 matches."""
    img, true = _dev(name)
    alone = segment_nuclei(img)
    blank = np.zeros_like(img)
    # the stain alone, and with blank CK and CD45 channels (a field made to fit a 3-channel reader)
    for stack, channels in ((img[None], ["DAPI"]), (np.stack([img, blank, blank]), ["DAPI", "CK", "CD45"])):
        seg = analyse_field(stack.astype(np.float32), channels)
        assert _same_partition(seg.labels, alone.labels), channels
        assert metrics.score(true, seg.labels).tp_iou == metrics.score(true, alone.labels).tp_iou


def test_only_a_drawn_frame_is_mended_before_the_nuclei_are_found() -> None:
    """An export's drawn 1 px frame (ctc-dev's have them) would read as nuclei along the edge; it is
    mended, the real image's edges are not."""
    from classifier.segmentation import _drawn_frame_sides

    img, true = _dev("dsb05")
    img = img.astype(np.float32)
    assert _drawn_frame_sides(img) == ()
    framed = img.copy()
    framed[:, :1] = framed[:1, :] = img.max()
    assert _drawn_frame_sides(framed) == ("top", "left")
    plain, drawn = (analyse_field(x[None], ["DAPI"]).labels for x in (img, framed))
    # unmended: 38 objects, two of them along the frame, and 27 IoU matches instead of 32
    a, b = metrics.score(true, plain), metrics.score(true, drawn)
    assert (b.n_pred, b.tp, b.tp_iou) == (a.n_pred, a.tp, a.tp_iou)


def _half_defocused(seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 1024^2 field of 300 cells (0.645 µm) whose right half is out of focus: its light
    blurred (Gaussian, ``sigma`` px) and the camera's noise, which no defocus smooths, put back."""
    synth = pytest.importorskip("classifier.synth.field")
    img, labels = synth.make_field(np.random.default_rng(seed), 1024, 1024, 300, pixel_size_um=0.645)
    dapi = img[0].copy()
    step = np.diff(dapi, axis=1)
    noise = 1.4826 * float(np.median(np.abs(step - np.median(step)))) / np.sqrt(2)
    right = ndi.gaussian_filter(img[0], sigma)[:, 512:]
    dapi[:, 512:] = right + np.random.default_rng(seed + 100).normal(0, noise, right.shape)
    return dapi, labels


def test_a_field_half_out_of_focus_is_segmented_at_its_sharp_nuclei_size_and_says_so(monkeypatch) -> None:  # noqa: ANN001
    """Blurred nuclei look larger and outvote the sharp ones by pixels: without a pixel size the field
    was worked at ~30 px nuclei, where the sharp half's 11 px nuclei were lost (206 objects for 300,
    no warning). A second, smaller population is now worked at its own size, and the field says why."""
    dapi, labels = _half_defocused(7, 6.0)
    r = segment_nuclei(dapi)
    assert r.smaller_share is not None and r.smaller_share > 0.3
    assert 285 <= r.count <= 310 and metrics.score(labels, r.labels).f1 > 0.95, r.count
    xs = np.asarray(ndi.center_of_mass(r.labels > 0, r.labels, range(1, r.count + 1)))[:, 1]
    assert (xs < 512).sum() >= 145  # the sharp half (~155 nuclei)
    assert any(w.startswith("Nuclei of two sizes") for w in uncertainty_warnings(r))
    sharp = pytest.importorskip("classifier.synth.field").make_field(
        np.random.default_rng(7), 1024, 1024, 300, pixel_size_um=0.645)[0][0]
    assert uncertainty_warnings(segment_nuclei(sharp)) == []  # in focus: one size, no warning
    monkeypatch.setattr(infer, "_SMALLER_SHARE", 1.1)  # the rule off: the sharp half is lost
    assert segment_nuclei(dapi).count < 240


def test_segment_eval_scores_the_product_path_and_reports_what_the_field_would_say(tmp_path) -> None:  # noqa: ANN001
    """`segment-eval` reads each image as a field of that stain alone: the half-defocused field gets its
    second pass and its warning in the row, as an upload of it would."""
    import tifffile

    from classifier.nuclei.evaluate import evaluate_folder

    dapi, labels = _half_defocused(7, 6.0)
    counts = np.clip(np.round(dapi), 0, None).astype(np.uint16)  # as a 16-bit camera writes it
    for sub, arr in (("images", counts), ("masks", labels.astype(np.uint16))):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "half.tif", arr)
    row = evaluate_folder(tmp_path, baseline=False)["images"][0]
    assert row["two_sizes"] > 0.3 and row["f1"] > 0.95, row
    assert any(w.startswith("Nuclei of two sizes") for w in row["warnings"])
