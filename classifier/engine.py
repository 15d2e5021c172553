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

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from classifier import features
from classifier.errors import InputError
from classifier.explain import explain_batch, top_attributes
from classifier.model import DualBranchCTC, fuse_batchnorm
from classifier.preprocess import Prepared, PreprocessContract, prepare_image
from classifier.results import CATEGORIES, AnalysisResult, Attribute, EventResult
from classifier.weights import load_bundle

Progress = Callable[[float, str], None]

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
        return cls(model, contract, meta, dev)

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
        for name, image, chans, px in items:
            if kind == "field":
                from classifier.segmentation import segment_field

                if image.ndim != 3:
                    raise InputError(f"{name}: expected a (channels, height, width) image, got shape {image.shape}.")
                cells, _labels = segment_field(image, chans, px)
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
        return AnalysisResult(events=events, model_version=self.version, channels=list(self.contract.channels),
                              timings=timings, device=str(self.device))

    def _features(self, prep: Prepared) -> np.ndarray:
        """Attributes in two halves on two threads when the batch is large: numpy's
        kernels release the GIL on arrays this size, and every event's attributes depend
        on that event alone (tested), so the result is the same."""
        um = self.contract.um_per_px
        n = len(prep)
        if n < 256 or self.prep_workers < 2:
            return features.compute(prep.crops, prep.nucleus, prep.cell, um)[0]
        cuts = np.linspace(0, n, self.prep_workers + 1).astype(int)
        spans = list(zip(cuts[:-1], cuts[1:], strict=True))
        with ThreadPoolExecutor(len(spans)) as pool:
            parts = list(pool.map(lambda ab: features.compute(prep.crops[ab[0]:ab[1]], prep.nucleus[ab[0]:ab[1]],
                                                              prep.cell[ab[0]:ab[1]], um)[0], spans))
        return np.concatenate(parts)

    def _prepare_all(self, jobs: list[tuple], prepare: Callable[[tuple], Prepared]) -> list[Prepared]:
        """Preprocess every image, in parallel when it pays.

        Worker processes (fork) give ~1.8x on two cores; they are not allowed inside
        daemonic processes (e.g. some Celery pools), where two threads are used instead
        (~1.2x: numpy/scipy hold the GIL between their kernels). Results are identical to
        the serial loop in every case (``map`` keeps the order).
        """
        workers = self.prep_workers
        if len(jobs) < 32 or workers < 2:
            return [prepare(j) for j in jobs]
        try:
            import multiprocessing as mp

            ctx = mp.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                specs = [(self.contract, *j) for j in jobs]
                parts = []
                for k, part in enumerate(pool.map(_prepare_job, specs, chunksize=16)):
                    parts.append(part)
                    if (k + 1) % 32 == 0 or k + 1 == len(jobs):
                        prepare.report(k + 1)  # type: ignore[attr-defined]
                return parts
        except (AssertionError, OSError, RuntimeError, ValueError):
            with ThreadPoolExecutor(workers) as tpool:
                return list(tpool.map(prepare, jobs))

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


def _prepare_job(spec: tuple) -> Prepared:
    contract, name, image, chans, px, centres = spec
    return prepare_image(image, chans, contract, px, centres=centres, source=name)


def _report(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(_STAGES[stage], stage)
