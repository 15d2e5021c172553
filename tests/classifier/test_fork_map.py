"""classifier.parallel.fork_map: the loop's results and exceptions, from forked processes.

It preprocesses large uploads inside the Celery worker, whose prefork processes are
daemonic (``multiprocessing`` refuses them children), and it runs next to the worker's
database and broker connections, which a child must never close or write.
"""

from __future__ import annotations

import atexit
import os

import numpy as np
import pytest

from classifier.parallel import fork_map

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 1001])
@pytest.mark.parametrize("workers,chunk", [(1, 8), (2, 1), (2, 8), (3, 5)])
def test_same_results_in_the_same_order(n: int, workers: int, chunk: int) -> None:
    items = list(range(n))
    assert fork_map(_square, items, workers, chunk=chunk) == [x * x for x in items]


def test_arrays_come_back_bitwise_identical() -> None:
    rng = np.random.default_rng(0)
    items = [rng.random((4, 33, 47)).astype(np.float32) for _ in range(64)]

    def work(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.sqrt(a) * 3.1, a > 0.5

    got = fork_map(work, items, 2, chunk=4)
    for a, (s, m) in zip(items, got, strict=True):
        want_s, want_m = work(a)
        assert s.dtype == want_s.dtype and s.tobytes() == want_s.tobytes()
        assert np.array_equal(m, want_m)


class Bad(ValueError):
    pass


def _fails_at(bad: set[int]):  # noqa: ANN202
    def fn(x: int) -> int:
        if x in bad:
            raise Bad(f"item {x}")
        return x
    return fn


@pytest.mark.parametrize("bad", [{0}, {3}, {8}, {63}, {5, 40}, {40, 5, 63}, set(range(64))])
@pytest.mark.parametrize("workers", [2, 3])
def test_raises_what_the_loop_raises(bad: set[int], workers: int) -> None:
    """The first failing item's exception, wherever it ran (parent or child)."""
    with pytest.raises(Bad) as loop:
        [_fails_at(bad)(x) for x in range(64)]
    for _ in range(3):  # which process takes which chunk varies
        with pytest.raises(Bad) as got:
            fork_map(_fails_at(bad), list(range(64)), workers, chunk=4)
        assert str(got.value) == str(loop.value)


def test_a_child_that_dies_costs_time_not_results() -> None:
    parent = os.getpid()

    def fn(x: int) -> int:
        if os.getpid() != parent and x == 20:
            os._exit(3)  # killed mid-upload: its chunks are lost
        return x + 1

    assert fork_map(fn, list(range(200)), 3, chunk=2) == list(range(1, 201))


def test_progress_only_grows_and_ends_at_n() -> None:
    seen: list[int] = []
    fork_map(_square, list(range(300)), 2, chunk=4, progress=seen.append)
    assert seen and seen[-1] == 300
    assert all(a <= b for a, b in zip(seen, seen[1:], strict=False))
    assert all(0 <= v <= 300 for v in seen)


def test_children_are_reaped_and_run_none_of_the_parents_cleanup() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)

    class Conn:  # stands for a database connection whose close() talks to the server
        def __del__(self) -> None:
            os.write(w, b"closed ")

    conn = Conn()

    def at_exit() -> None:
        os.write(w, b"atexit ")

    atexit.register(at_exit)
    try:
        assert fork_map(_square, list(range(100)), 3, chunk=2) == [x * x for x in range(100)]
        with pytest.raises(BlockingIOError):
            os.read(r, 100)  # nothing was written by any child
        with pytest.raises(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)  # no child left behind
    finally:
        atexit.unregister(at_exit)
        del conn
        os.close(r)
        os.close(w)


def _in_daemon(_: object) -> list[int]:
    return fork_map(_square, list(range(50)), 2, chunk=3)


def test_works_inside_a_daemonic_pool_process() -> None:
    """Celery's prefork pool (billiard): where ProcessPoolExecutor raises."""
    billiard = pytest.importorskip("billiard")
    with billiard.Pool(1) as pool:
        assert pool.map(_in_daemon, [0]) == [[x * x for x in range(50)]]


def test_engine_prepares_the_same_with_and_without_forks(shipped) -> None:  # noqa: ANN001
    from classifier.engine import Job, JobProgress
    from classifier.synth.events import make_event

    rng = np.random.default_rng(4)
    images = [make_event(rng, px_um=0.65)[0].astype(np.float32) for _ in range(40)]
    jobs = [Job(f"e{i}", img, ["DAPI", "CK", "AF", "CD45"], 0.65) for i, img in enumerate(images)]
    serial_counts: list[int] = []
    forked_counts: list[int] = []
    workers = shipped.prep_workers
    try:
        shipped.prep_workers = 1
        serial = shipped._prepare_all(jobs, JobProgress(len(jobs), serial_counts.append))
        shipped.prep_workers = 2
        forked = shipped._prepare_all(jobs, JobProgress(len(jobs), forked_counts.append))
    finally:
        shipped.prep_workers = workers
    assert serial_counts == [32, 40]  # every 32 jobs and the last
    assert forked_counts and forked_counts[-1] == len(jobs) and forked_counts == sorted(forked_counts)
    for a, b in zip(serial, forked, strict=True):
        for name in ("crops", "nucleus", "cell", "x", "y", "px_um"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert a.scale_source == b.scale_source


def test_engine_attributes_of_a_large_batch_equal_the_whole_batch_call(shipped, small_set) -> None:  # noqa: ANN001
    """Slices across forked processes give the attribute matrix of one call, bit for bit."""
    from classifier import features
    from classifier.preprocess import Prepared

    idx = np.arange(330) % len(small_set)  # > 256: the parallel path, uneven slices
    crops = small_set.crops[idx].astype(np.float32)
    rng = np.random.default_rng(9)
    crops += rng.normal(0, 0.01, crops.shape).astype(np.float32)  # no two events alike
    prep = Prepared(crops, small_set.nucleus[idx], small_set.cell[idx], np.zeros(len(idx)), np.zeros(len(idx)),
                    np.full(len(idx), 0.5), ["given"] * len(idx))
    want = features.compute(prep.crops, prep.nucleus, prep.cell, shipped.contract.um_per_px)[0]
    workers = shipped.prep_workers
    try:
        for w in (1, 2, 3):
            shipped.prep_workers = w
            got = shipped._features(prep)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), w
    finally:
        shipped.prep_workers = workers


def test_engine_prepares_a_field_the_same_with_and_without_forks(shipped, monkeypatch) -> None:  # noqa: ANN001
    """A field's events split across processes: the serial crops and masks, in order."""
    from classifier.engine import Job, JobProgress
    from classifier.preprocess import prepare_image
    from classifier.segmentation import segment_field
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(6), 512, 512, 90, pixel_size_um=0.65)
    chans = ["DAPI", "CK", "AF", "CD45"]
    cells, _labels = segment_field(img, chans, 0.65)
    centres = [(c.y, c.x) for c in cells]
    assert len(centres) >= 64  # the split path
    want = prepare_image(img, chans, shipped.contract, 0.65, centres=centres, source="field")
    reported: list[int] = []
    job = Job("field", img, chans, 0.65, centres)
    assert job.many and job.n_events == len(centres)
    workers = shipped.prep_workers
    try:
        shipped.prep_workers = 2
        with monkeypatch.context() as m:  # the whole-image path must not run: the field is split by events
            m.setattr(Job, "prepare", lambda *_: pytest.fail("the field should be split by events"))
            (got,) = shipped._prepare_all([job], JobProgress(1, reported.append))
    finally:
        shipped.prep_workers = workers
    assert reported == [1]
    for name in ("crops", "nucleus", "cell", "x", "y", "px_um"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert got.scale_source == want.scale_source


@pytest.mark.parametrize("chans", [["DAPI", "CK", "AF", "CD45"], ["DAPI", "CK", "AF"]])
def test_field_segmentation_through_forks_is_the_serial_one(chans: list[str]) -> None:
    from classifier import segmentation
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(12), 1024, 1024, 200, pixel_size_um=0.65)
    img = img[: len(chans)]  # without CD45: one marker mask is None
    calls: list[list[int]] = []

    def forked(fn, items):  # noqa: ANN001, ANN202
        calls.append(list(items))
        return fork_map(fn, items, 2, chunk=1)

    cells, labels = segmentation.segment_field(img, chans, 0.65)
    cells2, labels2 = segmentation.segment_field(img, chans, 0.65, parallel_map=forked)
    assert calls == [[0, 1, 2]]  # large enough for the parallel path
    assert labels.dtype == labels2.dtype and np.array_equal(labels, labels2)
    assert cells == cells2 and len(cells) > 50
