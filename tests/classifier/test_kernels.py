"""The classifier split: one copy of each numeric kernel (classifier.kernels) used by both
preprocessing and field segmentation, bit for bit what each replaced; the stored contract
(classifier.contract) apart from the steps; the engine's jobs as ``Job`` values with their
progress passed explicitly (``JobProgress``)."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from classifier import contract, engine, kernels, preprocess, segmentation
from classifier.engine import Job, JobProgress
from classifier.synth import make_event, make_field
from classifier.weights import DEFAULT_WEIGHTS

CH = ["DAPI", "CK", "AF", "CD45"]


def test_preprocessing_and_segmentation_share_one_copy_of_each_kernel() -> None:
    assert preprocess.block_mean is kernels.block_mean
    assert preprocess.percentile_rows is kernels.percentile_rows
    assert preprocess.otsu_rows is kernels.otsu_rows
    assert preprocess.bilinear is kernels.bilinear
    assert segmentation.block_mean_padded is kernels.block_mean_padded
    assert segmentation.otsu is kernels.otsu
    # the nucleus-size estimate: thumbnails (scale inference) and fields (plausibility)
    assert preprocess.median_disc_diameter is segmentation.median_disc_diameter is kernels.median_disc_diameter
    # and none of the old private copies is left beside them
    for module, name in [(preprocess, "_block_mean"), (preprocess, "_percentile_rows"), (preprocess, "_bilinear"),
                         (segmentation, "_downsample"), (segmentation, "_otsu"), (segmentation, "threshold_otsu")]:
        assert not hasattr(module, name), (module.__name__, name)
    assert preprocess.PreprocessContract is contract.PreprocessContract
    assert engine.fork_map.__module__ == "classifier.parallel"


def _old_segmentation_threshold(values: np.ndarray) -> float:
    return float(threshold_otsu(values))


def test_otsu_is_skimages_threshold_on_segmentation_samples() -> None:
    """segmentation._threshold called skimage on a strided 2-D float32 sample; the kernel
    must give the same float, and the same answer or exception on the special inputs."""
    rng = np.random.default_rng(7)
    img, _ = make_field(rng, 300, 300, 40, pixel_size_um=0.65)
    for ch in (img[1], img[3]):
        fg = segmentation._background_subtracted(kernels.block_mean_padded(ch, 2), 5.0)
        sample = fg[::2, ::2]
        assert not sample.flags.c_contiguous
        assert kernels.otsu(sample) == _old_segmentation_threshold(sample)
    for _ in range(50):
        sample = rng.lognormal(0, 1.5, (int(rng.integers(3, 60)), int(rng.integers(3, 60)))).astype(np.float32)
        assert kernels.otsu(sample) == _old_segmentation_threshold(sample)
    flat = np.full((5, 5), 0.25, np.float32)
    assert kernels.otsu(flat) == _old_segmentation_threshold(flat) == 0.25
    with pytest.raises(ValueError):
        _old_segmentation_threshold(np.array([[0.0, np.inf]], np.float32))
    with pytest.raises(ValueError):
        kernels.otsu(np.array([[0.0, np.inf]], np.float32))


def test_block_mean_padded_is_the_old_downsample() -> None:
    rng = np.random.default_rng(3)
    for h, w, f in [(37, 50, 3), (64, 64, 4), (10, 7, 1), (9, 9, 2)]:
        img = rng.normal(100, 20, (h, w)).astype(np.float32)
        gh, gw = -(-h // f), -(-w // f)
        padded = np.pad(img, ((0, gh * f - h), (0, gw * f - w)), mode="edge")
        want = padded.reshape(gh, f, gw, f).mean(axis=(1, 3), dtype=np.float32) if f > 1 else img.copy()
        got = kernels.block_mean_padded(img, f)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        assert not np.shares_memory(got, img)


def test_median_disc_diameter_is_both_old_formulas() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        areas = rng.integers(1, 5000, int(rng.integers(1, 40)))
        old_field = float(2 * math.sqrt(np.median(areas) / math.pi))
        old_thumbnail = float(2.0 * np.sqrt(np.median(areas) / np.pi))
        assert kernels.median_disc_diameter(areas) == old_field == old_thumbnail


def test_two_nucleus_sizes_for_two_measurements() -> None:
    """7 µm is the physical size segmentation works at; 6.75 µm the thresholded median the
    shipped weights' contract was calibrated with. The stored contract must carry the latter."""
    stored = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["preprocessing"]
    assert stored["reference_nucleus_um"] == contract.THRESHOLDED_NUCLEUS_UM
    assert contract.PreprocessContract().reference_nucleus_um == contract.THRESHOLDED_NUCLEUS_UM
    assert segmentation.NUCLEUS_DIAMETER_UM != contract.THRESHOLDED_NUCLEUS_UM


def test_a_job_prepares_what_prepare_image_prepares(contract) -> None:  # noqa: ANN001
    rng = np.random.default_rng(11)
    img = make_event(rng, px_um=0.65)[0].astype(np.float32)
    event = Job("e0", img, CH, 0.65)
    assert event.n_events == 1 and not event.many
    got = event.prepare(contract)
    want = preprocess.prepare_image(img, CH, contract, 0.65, source="e0")
    for name in ("crops", "nucleus", "cell", "x", "y", "px_um"):
        assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
    centres = [(20.0 + k, 30.0) for k in range(64)]
    cells = Job("field", img, CH, None, centres)
    assert cells.n_events == 64 and cells.many
    assert not Job("field", img, CH, None, centres[:63]).many
    assert len(cells.prepare(contract)) == 64


def test_job_progress_counts_every_32_and_the_last_without_going_back() -> None:
    seen: list[int] = []
    progress = JobProgress(100, seen.append)
    threads = [threading.Thread(target=lambda: [progress.add() for _ in range(25)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [32, 64, 96, 100] and progress.done == 100
    got: list[int] = []
    fields = JobProgress(3, got.append)
    fields.add(always=True)  # a field, split across processes: slow enough to report alone
    fields.add()
    fields.add()
    assert got == [1, 3]
    quiet = JobProgress(2)  # no reporter: counting only
    quiet.add()
    assert quiet.done == 1
