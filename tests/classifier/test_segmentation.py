"""Field segmentation: cell counts on synthetic fields, crops, CK-only objects, real events."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from classifier.errors import InputError
from classifier.segmentation import Cell, central_object, crop_event, segment_field

CHANNELS = ["DAPI", "CK", "AF", "CD45"]
CTC_DEV = Path(__file__).resolve().parents[3] / "shared/data/ctc-dev"

synth = pytest.importorskip("classifier.synth.field")


def synthetic_field(seed: int, size: int = 512, n: int = 400, **kw: object) -> tuple[np.ndarray, int]:
    image, labels = synth.make_field(np.random.default_rng(seed), size, size, n, **kw)
    return image, len(np.unique(labels)) - 1


def disc_field(pairs: int = 6, r: float = 6.0, overlap: float = 0.8) -> tuple[np.ndarray, int]:
    """Pairs of touching round nuclei (centres ``overlap`` diameters apart) with CD45 rims,
    one large anuclear CK blob and one small CK speck. Our own fixture: it does not
    depend on the synthetic generator and its right answer is exact."""
    h = w = 40 * pairs
    yy, xx = np.mgrid[:h, :w]
    img = np.full((4, h, w), 10.0, np.float32)
    n = 0
    for i in range(pairs):
        for j in range(pairs - 1):
            cy, cx = 20 + 40 * i, 20 + 40 * j
            for dx in (-overlap * r, overlap * r):
                d2 = (yy - cy) ** 2 + (xx - cx - dx) ** 2
                img[0][d2 <= r * r] = 200.0
                img[3][(d2 <= (1.6 * r) ** 2) & (d2 > r * r)] = 120.0
                n += 1
    cy, cx = 20 + 40 * (pairs // 2), w - 20
    img[1][(yy - cy) ** 2 + (xx - cx) ** 2 <= 10**2] = 150.0  # 20 px wide, no nucleus
    img[1][(yy - 20) ** 2 + (xx - (w - 20)) ** 2 <= 2**2] = 150.0  # a 5 px speck
    noise = np.random.default_rng(0).normal(0, 2, img.shape).astype(np.float32)
    return ndi.gaussian_filter(img, (0, 1, 1)) + noise, n


def test_touching_nuclei_are_separated_in_a_field_of_known_discs() -> None:
    img, n = disc_field()
    cells, labels = segment_field(img, CHANNELS, pixel_size_um=7.0 / 12)
    nucleated = [c for c in cells if c.nucleus_area_px > 0]
    assert len(nucleated) == n
    # the large anuclear CK blob is kept as an event, the speck is not
    assert len([c for c in cells if c.nucleus_area_px == 0]) == 1
    assert labels.dtype == np.int32 and labels.shape == img.shape[1:]


def test_ck_only_objects_follow_the_ck_only_setting() -> None:
    img, n = disc_field()
    counts = {m: len(segment_field(img, CHANNELS, 7.0 / 12, ck_only=m)[0]) for m in ("none", "large", "all")}
    assert counts == {"none": n, "large": n + 1, "all": n + 2}


@pytest.mark.parametrize(("seed", "kw"), [
    (0, {}),
    (1, {}),
    (2, {"rendering": "display8", "touching": 0.75}),
])
def test_cell_count_of_dense_synthetic_fields_is_within_5_percent(seed: int, kw: dict[str, object]) -> None:
    image, truth = synthetic_field(seed, **kw)
    cells, _ = segment_field(image, CHANNELS, pixel_size_um=0.65)
    assert abs(len(cells) - truth) <= 0.05 * truth, (len(cells), truth)


def test_the_count_holds_without_a_pixel_size() -> None:
    image, truth = synthetic_field(3)
    cells, _ = segment_field(image, CHANNELS)
    assert abs(len(cells) - truth) <= 0.05 * truth, (len(cells), truth)


def test_each_true_cell_is_covered_by_exactly_one_segmented_cell() -> None:
    image, gt = synth.make_field(np.random.default_rng(4), 384, 384, 250)
    cells, labels = segment_field(image, CHANNELS, pixel_size_um=0.65)
    ids = np.arange(1, gt.max() + 1)
    centres = np.round(ndi.center_of_mass(gt > 0, gt, ids)).astype(int)
    hit = labels[centres[:, 0], centres[:, 1]]
    assert (hit > 0).mean() >= 0.98
    assert len(set(hit[hit > 0].tolist())) >= 0.95 * len(ids)


def test_a_4x2048x2048_dense_field_segments_whole() -> None:
    tile, truth = synthetic_field(5)
    image = np.tile(tile, (1, 4, 4))  # 16 copies: ~6,000 cells, the cost of a dense field
    # CPU time, not wall time: the test must not fail because the machine is busy
    start = time.process_time()
    cells, labels = segment_field(image, CHANNELS, pixel_size_um=0.65)
    elapsed = time.process_time() - start
    assert labels.shape == (2048, 2048)
    assert abs(len(cells) - 16 * truth) <= 0.05 * 16 * truth
    # the speed target (field 4x2048^2 <= 15 s end to end) is measured by bench.pipeline; here only a
    # pathological slow-down fails (5-9 s of CPU here with the nucleus network, depending on the load)
    assert elapsed < 30, f"{elapsed:.1f} s"


def test_cells_describe_their_labels() -> None:
    image, _ = synthetic_field(6, size=256, n=100)
    cells, labels = segment_field(image, CHANNELS, pixel_size_um=0.65)
    assert [c.label for c in cells] == list(range(1, len(cells) + 1))
    assert set(np.unique(labels)) == {0, *range(1, len(cells) + 1)}
    for c in cells[:20]:
        r0, c0, r1, c1 = c.bbox
        region = labels[r0:r1, c0:c1] == c.label
        assert region.sum() == c.cell_area_px
        assert r0 <= c.y < r1 and c0 <= c.x < c1
        assert 0 < c.nucleus_area_px <= c.cell_area_px


def test_it_works_with_dapi_alone_and_on_an_empty_image() -> None:
    image, truth = synthetic_field(7, size=256, n=100)
    cells, _ = segment_field(image[:1], ["DAPI"], pixel_size_um=0.65)
    assert abs(len(cells) - truth) <= 0.05 * truth
    cells, labels = segment_field(np.zeros((2, 64, 64), np.float32), ["Hoechst", "CK"])
    assert cells == [] and not labels.any()


def test_a_field_without_a_single_nucleus_has_no_cells_and_says_why() -> None:
    """CK-only objects stand in for CTCs with a dim nucleus beside nuclei that were found; with a
    blank DAPI channel (or another marker given as DAPI) nothing is a cell, and the field says so."""
    from classifier.segmentation import analyse_field

    img, n = disc_field()
    assert len(segment_field(img, CHANNELS, 7.0 / 12)[0]) == n + 1  # with DAPI: nuclei + the CK blob
    img[0] = 0.0
    seg = analyse_field(img, CHANNELS, 7.0 / 12)
    assert seg.cells == [] and not seg.labels.any()
    assert any(w.startswith("No nuclei") and "check the channel order" in w for w in seg.warnings)


def test_an_empty_frame_is_just_empty_at_coarse_pixel_sizes() -> None:
    """Camera noise in every channel: no cell, and no "No nuclei" warning (which would make the whole
    upload `shifted`), also at 1.3 µm where a quarter nucleus (5.7 px) is smaller than noise specks."""
    from classifier.segmentation import analyse_field

    rng = np.random.default_rng(2)
    frame = rng.poisson(3.0, (4, 512, 512)).astype(np.float32)
    for px in (0.65, 1.0, 1.3, None):
        seg = analyse_field(frame, CHANNELS, px)
        assert seg.cells == [] and seg.warnings == [], (px, seg.warnings)


def test_one_large_artefact_does_not_overrule_a_right_pixel_size() -> None:
    """An 80 px bright blob (dust, a clump) holds more nuclear pixels than 40 cells of 11 px: by
    pixels it read as 'nuclei measure about 46 px', the scale followed it and every cell was lost.
    One vote per object keeps the pixel size the cells agree with."""
    from classifier.segmentation import analyse_field

    image, truth = synthetic_field(11, size=512, n=40, pixel_size_um=0.65)
    yy, xx = np.mgrid[:512, :512]
    blob = (yy - 256) ** 2 + (xx - 256) ** 2 <= 40**2
    image[0][blob] = image[0].max()
    seg = analyse_field(image, CHANNELS, 0.65)
    assert seg.scale_source == "pixel size", seg.warnings
    assert truth - 5 <= len(seg.cells) <= truth + 8, (len(seg.cells), truth)  # old: 13 of 40


def test_it_needs_a_dapi_channel() -> None:
    with pytest.raises(InputError, match="DAPI"):
        segment_field(np.zeros((2, 32, 32), np.float32), ["CK", "CD45"])


def test_segmenting_does_not_modify_the_input() -> None:
    image, _ = synthetic_field(8, size=128, n=30)
    before = image.copy()
    segment_field(image, CHANNELS, pixel_size_um=0.65)
    assert np.array_equal(image, before)


def test_crop_event_centres_the_cell_and_pads_with_zeros() -> None:
    image = np.arange(2 * 50 * 60, dtype=np.float32).reshape(2, 50, 60) + 1
    mid = Cell(1, 25.0, 30.0, (20, 25, 30, 35), 10, 20)
    crop = crop_event(image, mid, 11)
    assert crop.shape == (2, 11, 11) and crop[0, 5, 5] == image[0, 25, 30]
    corner = Cell(2, 1.2, 58.6, (0, 55, 3, 60), 5, 9)
    crop = crop_event(image, corner, 10)
    assert crop.shape == (2, 10, 10) and crop[0, 5, 5] == image[0, 1, 59]
    assert not crop[:, :4].any() and not crop[:, :, 6:].any()
    assert crop[1, 4:, :6].all()


@pytest.mark.skipif(not (CTC_DEV / "labels.csv").exists(), reason="ctc-dev is not present")
def test_the_central_object_of_real_ctc_dev_events_is_found() -> None:
    from classifier.io import read_inputs

    rows = list(csv.DictReader((CTC_DEV / "labels.csv").open()))
    inputs = read_inputs([CTC_DEV / r["file"] for r in rows])
    for row, inp in zip(rows, inputs, strict=True):
        cell = central_object(inp.image, inp.channels)
        assert cell is not None, row["file"]
        h, w = inp.image.shape[1:]
        assert np.hypot(cell.y - h / 2, cell.x - w / 2) < 15, row["file"]
        # The event is the CK+ object of the thumbnail: the central object is the most
        # CK-bright object of all those segmented (for the CK foci, among the top three; for an
        # apoptotic CTC among the top two: its fragmented nucleus may be two DAPI bodies, each
        # claiming part of the CK+ body, as the nucleus network finds in object015).
        _, labels = segment_field(inp.image, inp.channels, ck_only="all")
        ck = inp.image[inp.channels.index("CK")]
        means = np.asarray(ndi.mean(ck, labels, np.arange(1, labels.max() + 1)))
        rank = int((means > means[cell.label - 1]).sum()) + 1
        allowed = 3 if "Foci" in row["category"] else 2 if "Apoptotic" in row["category"] else 1
        assert rank <= allowed, (row["file"], rank)
        if row["category"] == "CTC":
            assert cell.nucleus_area_px > 0, row["file"]
