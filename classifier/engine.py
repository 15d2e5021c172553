"""The one call the product makes: files or arrays in, explained per-event calls out.

    clf = Classifier.load()                      # shipped weights, GPU when present
    result = clf.analyse_files(paths, "DAPI,CK,AF,CD45", kind="events")

Stages (each timed in ``AnalysisResult.timings``): decode (``classifier.io``), segment
(field images: ``classifier.segmentation``; for every event: the centre object's masks
and the crop at the model's scale, ``classifier.preprocess``), features, model
(batched, mixed precision on CUDA), explanation (Grad-CAM, branch contributions, top
attributes; one backward pass per batch).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn, TypeVar

import numpy as np
import torch

from classifier import features
from classifier.domain import ReferenceLookup, check_analysis, load_reference
from classifier.errors import InputError
from classifier.explain import explain_batch, top_attributes
from classifier.model import DualBranchCTC, fuse_batchnorm
from classifier.preprocess import Prepared, PreprocessContract, prepare_centres, prepare_image, setup_image
from classifier.results import CATEGORIES, AnalysisResult, Attribute, EventResult
from classifier.weights import load_bundle

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
_T = TypeVar("_T")
_R = TypeVar("_R")

#: progress fractions at the start of each stage
_STAGES = {"decode": 0.0, "segment": 0.15, "features": 0.55, "model": 0.65, "explanation": 0.8, "done": 1.0}


def _device(device: str | None) -> torch.device:
    if device is None:
        device = os.environ.get("CLASSIFIER_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _channel_list(channels: str | Sequence[str]) -> list[str]:
    if isinstance(channels, str):
        return [c.strip() for c in channels.split(",") if c.strip()]
    return list(channels)


class Classifier:
    """A loaded model with its preprocessing contract."""

    def __init__(self, model: DualBranchCTC, contract: PreprocessContract, metadata: dict, device: torch.device,
                 batch_size: int = 256) -> None:
        self.model = model
        self.contract = contract
        self.metadata = metadata
        self.device = device
        self.batch_size = batch_size
        self.feature_names = list(contract.feature_names)
        self.threshold = float(metadata.get("threshold", 0.5))
        self.prep_workers = int(os.environ.get("CLASSIFIER_PREP_WORKERS", min(2, os.cpu_count() or 1)))
        self.weights_path: Path | None = None  # set by load(); None: the shipped weights

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | None = None) -> Classifier:
        """Load weights (None: the shipped ones) on ``device`` (None: CUDA if available,
        unless ``CLASSIFIER_DEVICE`` says otherwise)."""
        dev = _device(device)
        model, contract, meta = load_bundle(Path(weights) if weights else None)
        model = fuse_batchnorm(model).to(dev)
        if dev.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        clf = cls(model, contract, meta, dev)
        clf.weights_path = Path(weights) if weights else None  # the domain check's reference lies beside it
        return clf

    # --- public API ----------------------------------------------------------------------

    def analyse_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        channels: str | Sequence[str] | None,
        kind: str = "events",
        pixel_size_um: float | None = None,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> AnalysisResult:
        from classifier.io import read_inputs

        self._check_kind(kind)
        t0 = time.perf_counter()
        _report(progress, "decode")
        if not paths:
            raise InputError("No files to analyse.")
        inputs = read_inputs(list(paths), _channel_list(channels) if channels is not None else None,
                             names=list(names) if names is not None else None, pixel_size_um=pixel_size_um)
        decode = time.perf_counter() - t0
        res = self._analyse([(i.source, i.image, list(i.channels), i.pixel_size_um) for i in inputs], kind, progress)
        res.timings = {"decode": decode, **res.timings}
        return res

    def analyse_arrays(
        self,
        images: Sequence[np.ndarray],
        channels: str | Sequence[str],
        kind: str = "events",
        pixel_size_um: float | None = None,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> AnalysisResult:
        self._check_kind(kind)
        chans = _channel_list(channels)
        if names is not None and len(names) != len(images):
            raise InputError(f"{len(names)} names for {len(images)} images.")
        labels = list(names) if names is not None else [f"image{i:04d}" for i in range(len(images))]
        items = []
        for name, img in zip(labels, images, strict=True):
            arr = np.asarray(img)
            if arr.ndim == 2 and len(chans) == 1:
                arr = arr[None]
            items.append((name, arr.astype(np.float32, copy=False), chans, pixel_size_um))
        res = self._analyse(items, kind, progress)
        res.timings = {"decode": 0.0, **res.timings}
        return res

    # --- pipeline ------------------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in ("events", "field"):
            raise InputError(f"Unknown kind {kind!r}: use 'events' (gallery thumbnails) or 'field' (field images).")

    def _analyse(self, items: list[tuple[str, np.ndarray, list[str], float | None]], kind: str,
                 progress: Progress | None) -> AnalysisResult:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        _report(progress, "segment")
        sources: list[str] = []
        jobs: list[tuple[str, np.ndarray, list[str], float | None, list[tuple[float, float]] | None]] = []
        field_warnings: list[str] = []  # implausible counts and scales: reported, never silently counted
        for name, image, chans, px in items:
            if kind == "field":
                from classifier.segmentation import analyse_field

                if image.ndim != 3:
                    raise InputError(f"{name}: expected a (channels, height, width) image, got shape {image.shape}.")
                seg = analyse_field(image, chans, px, parallel_map=self._segment_map())
                cells = seg.cells
                field_warnings += [f"{name}: {w}" for w in seg.warnings]
                jobs.append((name, image, chans, px, [(c.y, c.x) for c in cells]))
                sources += [f"{name}#{k}" for k in range(len(cells))]
            else:
                jobs.append((name, image, chans, px, None))
                sources.append(name)
        done = 0
        lock = threading.Lock()

        def report(n: int) -> None:
            if progress is not None:
                progress(_STAGES["segment"] + (_STAGES["features"] - _STAGES["segment"]) * n / len(jobs), "segment")

        def prepare(job: tuple) -> Prepared:
            nonlocal done
            name, image, chans, px, centres = job
            out = prepare_image(image, chans, self.contract, px, centres=centres, source=name)
            with lock:  # one reporter at a time, so fractions never go backwards
                done += 1
                if done % 32 == 0 or done == len(jobs):
                    report(done)
            return out

        prepare.report = report  # type: ignore[attr-defined]

        parts = self._prepare_all(jobs, prepare)
        prep = Prepared.concat(parts, self.contract)
        timings["segment"] = time.perf_counter() - t

        t = time.perf_counter()
        _report(progress, "features")
        feats = np.zeros((0, len(self.feature_names)), np.float32)
        if len(prep):
            feats = self._features(prep)
        timings["features"] = time.perf_counter() - t

        events, t_model, t_expl = self._classify(prep, feats, sources, progress)
        timings["model"] = t_model
        timings["explanation"] = t_expl
        _report(progress, "done")
        result = AnalysisResult(events=events, model_version=self.version, channels=list(self.contract.channels),
                                timings=timings, device=str(self.device), threshold=self.threshold,
                                warnings=field_warnings)
        t = time.perf_counter()
        result.domain_check = check_analysis(items, [1 if j[4] is None else len(j[4]) for j in jobs], prep.px_um,
                                             prep.scale_source, feats, kind, self._domain_reference(), result.warnings)
        timings["domain_check"] = time.perf_counter() - t
        return result

    def _domain_reference(self) -> ReferenceLookup:
        """The domain check's reference statistics for these weights (read once)."""
        if getattr(self, "_domain_lookup", None) is None:
            self._domain_lookup = load_reference(self.weights_path, self.metadata.get("sha256"), self.feature_names)
        return self._domain_lookup

    def _segment_map(self) -> Callable[[Callable, list], list] | None:
        """The ordered map ``segment_field`` may spread its independent steps with."""
        if self.prep_workers < 2 or not hasattr(os, "fork"):
            return None
        workers = self.prep_workers
        return lambda fn, items: fork_map(fn, items, workers, chunk=1)

    def _features(self, prep: Prepared) -> np.ndarray:
        """Attributes in slices across processes (or threads) when the batch is large.

        Every event's attributes depend on that event alone (tested), so the result is
        the same. Forked processes (:func:`fork_map`, slices of ~128 events handed out as
        they finish) beat two threads on the shared 2-core machine (0.39-0.59 s against
        0.48-0.76 s per 1,000 events, interleaved); threads where there is no fork.
        """
        um = self.contract.um_per_px
        n = len(prep)
        if n < 256 or self.prep_workers < 2:
            return features.compute(prep.crops, prep.nucleus, prep.cell, um)[0]

        def part(ab: tuple[int, int]) -> np.ndarray:
            a, b = ab
            return features.compute(prep.crops[a:b], prep.nucleus[a:b], prep.cell[a:b], um)[0]

        if hasattr(os, "fork"):
            cuts = np.linspace(0, n, max(2, n // 128) + 1).astype(int)
            spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
            return np.concatenate(fork_map(part, spans, self.prep_workers, chunk=1))
        cuts = np.linspace(0, n, self.prep_workers + 1).astype(int)
        spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
        with ThreadPoolExecutor(len(spans)) as pool:
            return np.concatenate(list(pool.map(part, spans)))

    def _prepare_all(self, jobs: list[tuple], prepare: Callable[[tuple], Prepared]) -> list[Prepared]:
        """Preprocess every image, in parallel when it pays.

        Where the OS can fork, this process and ``prep_workers - 1`` forked copies of it
        share the images (see :func:`fork_map`); that also works inside a Celery prefork
        worker, whose daemonic processes ``multiprocessing`` refuses to give children
        (the worker used to fall back to threads there, which gain little: numpy/scipy
        hold the GIL between their kernels on images this small). Elsewhere, threads.
        An image with many events (a field) is split by events instead. Results are
        identical to the serial loop in every case, in the same order.
        """
        workers = self.prep_workers
        if workers >= 2 and hasattr(os, "fork") and any(j[4] is not None and len(j[4]) >= 64 for j in jobs):
            out = []
            for k, job in enumerate(jobs):
                if job[4] is not None and len(job[4]) >= 64:
                    out.append(self._prepare_many(job))
                    prepare.report(k + 1)  # type: ignore[attr-defined]
                else:
                    out.append(prepare(job))
            return out
        if len(jobs) < 32 or workers < 2:
            return [prepare(j) for j in jobs]
        if hasattr(os, "fork"):
            contract = self.contract
            return fork_map(lambda job: _prepare_job((contract, *job)), jobs, workers,
                            progress=prepare.report)  # type: ignore[attr-defined]
        with ThreadPoolExecutor(workers) as tpool:
            return list(tpool.map(prepare, jobs))

    def _prepare_many(self, job: tuple) -> Prepared:
        """One image with many events (a field): its normalisation and thresholds here,
        then its events' crops and masks in slices across forked processes (each event
        depends only on those and its own position, so the result is the serial one)."""
        name, image, chans, px, centres = job
        setup = setup_image(image, chans, self.contract, px, source=name)
        pts = list(centres)
        spans = [(a, min(a + 16, len(pts))) for a in range(0, len(pts), 16)]
        contract = self.contract
        parts = fork_map(lambda ab: prepare_centres(setup, pts[ab[0]:ab[1]], contract), spans, self.prep_workers,
                         chunk=1)
        return Prepared.concat(parts, contract)

    def _classify(self, prep: Prepared, feats: np.ndarray, sources: list[str], progress: Progress | None
                  ) -> tuple[list[EventResult], float, float]:
        events: list[EventResult] = []
        t_model = t_expl = 0.0
        cuda = self.device.type == "cuda"
        n = len(prep)
        for s in range(0, n, self.batch_size):
            t = time.perf_counter()
            x = torch.from_numpy(np.ascontiguousarray(prep.crops[s:s + self.batch_size])).to(self.device)
            if not cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            f = torch.from_numpy(feats[s:s + self.batch_size]).to(self.device)
            # the forward pass is shared with the explanation; its cost is booked to "model"
            # in proportion measured once: a plain forward pass
            ex = explain_batch(self.model, x, f, with_explanations=True, autocast=cuda)
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t
            t_model += elapsed / 3.0  # forward ~ 1/3 of forward + backward
            t = time.perf_counter()
            tops = (top_attributes(ex.attribute_effect, feats[s:s + self.batch_size], self.feature_names)
                    if ex.attribute_effect is not None else [[] for _ in range(len(ex.probability))])
            for i in range(len(ex.probability)):
                j = s + i
                p = float(ex.probability[i])
                cat = ex.category_probabilities[i]
                crop = prep.crops[j]
                thumb = (np.clip(crop, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
                heat = ((ex.heatmap[i] * 255.0 + 0.5).astype(np.uint8) if ex.heatmap is not None
                        else np.zeros(crop.shape[1:], np.uint8))
                events.append(EventResult(
                    source=sources[j],
                    index=j,
                    x=float(prep.x[j]),
                    y=float(prep.y[j]),
                    call="ctc" if p >= self.threshold else "non_ctc",
                    ctc_probability=p,
                    category=CATEGORIES[int(cat.argmax())],
                    category_probabilities={c: float(v) for c, v in zip(CATEGORIES, cat, strict=True)},
                    embedding=[float(v) for v in ex.embedding[i]],
                    branch_contributions={"spatial": float(ex.gate[i, 0]), "texture": float(ex.gate[i, 1])},
                    top_attributes=[Attribute(nm, v, e) for nm, v, e in tops[i]],
                    thumbnail=thumb,
                    heatmap=heat,
                ))
            t_expl += time.perf_counter() - t + elapsed * 2.0 / 3.0
            if progress is not None:
                progress(_STAGES["model"] + (_STAGES["done"] - _STAGES["model"]) * min(1.0, (s + self.batch_size) / n),
                         "model")
        return events, t_model, t_expl


def fork_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int, chunk: int = 8,
             progress: Callable[[int], None] | None = None) -> list[_R]:
    """``[fn(x) for x in items]`` computed by this process and ``workers - 1`` forked
    children, with the same result and the same exception as the loop.

    Why not ``ProcessPoolExecutor``: it is refused inside daemonic processes (Celery's
    prefork pool), it pickles every input to its workers, and the parent sits idle.
    Here the children inherit ``items`` and ``fn`` through fork (nothing is sent to
    them), the parent works too, and chunks of ``chunk`` items are handed out through a
    pipe of 4-byte chunk numbers that every process reads from, so a process that the
    shared machine slows down simply takes fewer chunks. A child pickles its results
    back once, when no chunks are left.

    Anything a child did not deliver -- a chunk whose ``fn`` raised, a child that died
    or could not be forked -- is computed again by the parent in order, so an exception
    is raised here exactly as the loop raises it (the first failing item's). Only the
    parent calls ``progress`` (with an estimate of items done) and touches anything
    outside ``fn``: children leave through ``os._exit``, so inherited database or broker
    connections are never closed or written by them.
    """
    n = len(items)
    chunk = max(1, chunk, -(-n // 4096))  # at most 4,096 chunk numbers: 16 KiB, within a pipe's buffer
    spans = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    done: dict[int, list[_R]] = {}
    task_r, task_w = os.pipe()
    try:
        os.write(task_w, b"".join(struct.pack("<I", k) for k in range(len(spans))))
    finally:
        os.close(task_w)  # before forking: the queue ends (EOF) once every number is taken
    children: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    error: tuple[int, Exception] | None = None  # the parent's own failure: (chunk, exception)
    try:
        for _ in range(max(0, workers - 1)):
            res_r, res_w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(res_r)
                os.close(res_w)
                break
            if pid == 0:  # child
                _fork_child(fn, items, spans, task_r, res_w, [r for _, r in children] + [res_r])
            os.close(res_w)
            children.append((pid, res_r))
        while error is None and (k := _next_chunk(task_r)) is not None:
            a, b = spans[k]
            try:
                done[k] = [fn(x) for x in items[a:b]]
            except Exception as err:  # noqa: BLE001 - raised below, once earlier chunks are known good
                error = (k, err)
            if progress is not None:
                progress(min(n - 1, sum(len(v) for v in done.values()) * (len(children) + 1)))
        mine = len(done)
        for _pid, res_r in children:
            done.update(_child_results(res_r))
        # how the work was shared: a child that died or could not fork shows here as 0
        logger.debug("fork_map: %d items in %d chunks; %d forked; parent did %d chunks, children %d",
                     n, len(spans), len(children), mine, len(done) - mine)
    finally:
        os.close(task_r)
        for pid, res_r in children:
            _close_quietly(res_r)
            _reap(pid)
    out: list[_R] = []
    for k, (a, b) in enumerate(spans):
        if error is not None and k == error[0]:
            raise error[1]
        out += done[k] if k in done else [fn(x) for x in items[a:b]]
    if progress is not None:
        progress(n)
    return out


def _next_chunk(task_r: int) -> int | None:
    # a pipe read of 4 bytes is atomic between readers (the writer wrote whole records)
    data = os.read(task_r, 4)
    return struct.unpack("<I", data)[0] if len(data) == 4 else None


def _fork_child(fn: Callable, items: Sequence, spans: list[tuple[int, int]], task_r: int, res_w: int,
                close: list[int]) -> NoReturn:
    """Body of a forked child: take chunks until none are left, send the results, exit."""
    try:
        for fd in close:  # other children's result pipes and our own read end
            os.close(fd)
        # the parent's handlers (e.g. Celery's warm shutdown on SIGTERM) are not ours to run
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        out: dict[int, list] = {}
        while (k := _next_chunk(task_r)) is not None:
            a, b = spans[k]
            try:
                out[k] = [fn(x) for x in items[a:b]]
            except Exception:  # noqa: BLE001 - the parent redoes the chunk and raises
                break
        with os.fdopen(res_w, "wb") as f:
            pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
        pass
    finally:
        os._exit(0)


def _child_results(res_r: int) -> dict[int, list]:
    chunks = []
    while data := os.read(res_r, 1 << 20):
        chunks.append(data)
    try:
        got = pickle.loads(b"".join(chunks)) if chunks else {}
    except Exception:  # noqa: BLE001 - a child killed mid-write: the parent redoes its chunks
        return {}
    return got if isinstance(got, dict) else {}


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):  # already closed by the reader
        os.close(fd)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped by someone else's SIGCHLD handler
        os.waitpid(pid, 0)


def _prepare_job(spec: tuple) -> Prepared:
    contract, name, image, chans, px, centres = spec
    return prepare_image(image, chans, contract, px, centres=centres, source=name)


def _report(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(_STAGES[stage], stage)
