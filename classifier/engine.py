"""The one call the product makes: files or arrays in, explained per-event calls out.

    clf = Classifier.load()                      # shipped weights, GPU when present
    result = clf.analyse_files(paths, "DAPI,CK,AF,CD45", kind="events")

Stages (each timed in ``AnalysisResult.timings``): decode (``classifier.io``), segment
(field images: ``classifier.segmentation``; for every event: the centre object's masks
and the crop at the model's scale, ``classifier.preprocess``, one :class:`Job` per image,
spread over processes by ``classifier.parallel.fork_map``), features, model
(batched, mixed precision on CUDA), explanation (Grad-CAM, branch contributions, top
attributes; one backward pass per batch).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classifier import features, harmonise
from classifier.canvas import fill_background, tidy_field
from classifier.contract import PreprocessContract
from classifier.decoders import FileForm
from classifier.domain import ReferenceLookup, check_analysis, implausible_ctc_share, load_reference
from classifier.errors import InputError
from classifier.explain import explain_batch, top_attributes
from classifier.io import read_inputs
from classifier.model import DualBranchCTC, fuse_batchnorm
from classifier.parallel import fork_map
from classifier.preprocess import (
    Prepared,
    prepare_centres,
    prepare_image,
    remove_hot_pixels,
    remove_overlays,
    setup_image,
)
from classifier.results import CATEGORIES, AnalysisResult, Attribute, EventResult
from classifier.segmentation import NUCLEUS_DIAMETER_UM, FieldSegmentation, analyse_field
from classifier.weights import load_bundle

Progress = Callable[[float, str], None]

#: progress fractions at the start of each stage
_STAGES = {"decode": 0.0, "segment": 0.15, "features": 0.55, "model": 0.65, "explanation": 0.8, "done": 1.0}


@dataclass(eq=False)
class Job:
    """One image to preprocess: an event thumbnail (``centres`` None: the event is the
    object at its centre) or a field image with one event per cell centre (y, x)."""

    name: str
    image: np.ndarray
    channels: list[str]
    pixel_size_um: float | None
    centres: list[tuple[float, float]] | None = None
    #: where ``pixel_size_um`` came from when not from the caller ("estimated": a field's segmenter)
    scale_source: str | None = None

    @property
    def n_events(self) -> int:
        return 1 if self.centres is None else len(self.centres)

    @property
    def many(self) -> bool:
        """A field with enough events to split its crops across processes."""
        return self.centres is not None and len(self.centres) >= 64

    def prepare(self, contract: PreprocessContract) -> Prepared:
        return self.sourced(prepare_image(self.image, self.channels, contract, self.pixel_size_um,
                                          centres=self.centres, source=self.name))

    def sourced(self, prep: Prepared) -> Prepared:
        if self.scale_source is not None:
            prep.scale_source = [self.scale_source] * len(prep)
        return prep


@dataclass
class _Upload:
    """An upload prepared up to the model: its jobs, one source name per event, the warnings
    found on the way, the model's inputs and attributes, the set's corrections (tone curve, CD45
    bleed into CK) and the stage timings."""

    jobs: list[Job]
    sources: list[str]
    warnings: list[str]
    prep: Prepared
    feats: np.ndarray
    correction: harmonise.SetCorrection
    timings: dict[str, float]


@dataclass
class JobProgress:
    """How many of ``total`` jobs are prepared, told to ``report`` (called with that count).

    Jobs prepared here (serially or by threads) count through :meth:`add`, which reports
    every 32 jobs and at the end, one reporter at a time so that counts never go backwards;
    ``report`` itself is what :func:`fork_map` is given, with its estimates."""

    total: int
    report: Callable[[int], None] | None = None
    done: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, always: bool = False) -> None:
        """One more job done; ``always``: report it even between multiples of 32 (a slow job)."""
        with self._lock:
            self.done += 1
            if self.report is not None and (always or self.done % 32 == 0 or self.done == self.total):
                self.report(self.done)


def _ctc_share_warnings(jobs: list[Job], events: list[EventResult]) -> list[str]:
    """Fields where most cells were called CTC (:func:`classifier.domain.implausible_ctc_share`)."""
    out, start = [], 0
    for job in jobs:
        calls = events[start:start + job.n_events]
        start += job.n_events
        msg = implausible_ctc_share(job.name, sum(e.call == "ctc" for e in calls), len(calls))
        if msg:
            out.append(msg)
    return out


def field_scale(given: float | None, seg: FieldSegmentation) -> tuple[float | None, str | None]:
    """The pixel size a field's cells are classified at, and its source (None: the caller's).

    The segmenter reads the scale from every nucleus of the field; the classifier alone would read
    it from each image's thresholded objects, which on a sparse frame (3-5 cells) ranged 0.40-1.99
    µm/px for a true 0.645 and cost a CTC. And where the segmenter overruled a pixel size the image
    contradicts (x2 off), classifying at the given one turned 1 CTC into 6. So the cells are
    classified at the scale they were segmented at, unless that is the caller's."""
    if given is not None and seg.scale_source == "pixel size":
        return given, None
    if not seg.nucleus_diameter_px or seg.nucleus_diameter_px <= 0:
        return given, None
    return NUCLEUS_DIAMETER_UM / seg.nucleus_diameter_px, "estimated"


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
        self._check_kind(kind)
        t0 = time.perf_counter()
        _report(progress, "decode")
        if not paths:
            raise InputError("No files to analyse.")
        inputs = read_inputs(list(paths), _channel_list(channels) if channels is not None else None,
                             names=list(names) if names is not None else None, pixel_size_um=pixel_size_um)
        decode = time.perf_counter() - t0
        res = self._analyse([(i.source, i.image, list(i.channels), i.pixel_size_um) for i in inputs], kind, progress,
                            forms=[i.form for i in inputs])
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

    def field_attributes(self, images: Sequence[np.ndarray], channels: str | Sequence[str],
                         pixel_size_um: float | None = None) -> np.ndarray:
        """The attributes (N, F) of every cell the field path finds in ``images``, exactly as an
        upload of them would be classified (the domain check's field reference is fitted on them)."""
        chans = _channel_list(channels)
        items = [(f"field{k}", np.asarray(img, np.float32), list(chans), pixel_size_um) for k, img in enumerate(images)]
        return self._prepare_upload(items, "field", None).feats

    def _analyse(self, items: list[tuple[str, np.ndarray, list[str], float | None]], kind: str,
                 progress: Progress | None, forms: Sequence[FileForm | None] | None = None) -> AnalysisResult:
        """``forms``: how each file stored its image (files only: colour composite, compression, bit depth)."""
        if kind == "field":  # constant fill (a rotated field's corners) is no image: nothing judges it
            items = [(name, fill_background(image)[0] if np.ndim(image) == 3 else image, chans, px)
                     for name, image, chans, px in items]
        uploaded = items  # the domain check judges the images as uploaded
        up = self._prepare_upload(items, kind, progress, forms, filled=True)
        timings = up.timings
        events, t_model, t_expl = self._classify(up.prep, up.feats, up.sources, progress)
        field_warnings = up.warnings
        if kind == "field":
            field_warnings += _ctc_share_warnings(up.jobs, events)
        timings["model"] = t_model
        timings["explanation"] = t_expl
        _report(progress, "done")
        result = AnalysisResult(events=events, model_version=self.version, channels=list(self.contract.channels),
                                timings=timings, device=str(self.device), threshold=self.threshold,
                                warnings=field_warnings)
        t = time.perf_counter()
        result.domain_check = check_analysis(uploaded, [j.n_events for j in up.jobs], up.prep.px_um,
                                             up.prep.scale_source, up.feats, kind, self._domain_reference(),
                                             result.warnings, forms, up.prep.windowed_flags())
        up.correction.annotate(result.domain_check)
        timings["domain_check"] = time.perf_counter() - t
        return result

    def _prepare_upload(self, items: list[tuple[str, np.ndarray, list[str], float | None]], kind: str,
                        progress: Progress | None, forms: Sequence[FileForm | None] | None = None,
                        filled: bool = False) -> _Upload:
        """Segmentation (fields), the tone curve (galleries), preprocessing and attributes; ``filled``:
        the fields' constant fill was given background already (:meth:`_analyse`)."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        _report(progress, "segment")
        sources: list[str] = []
        jobs: list[Job] = []
        field_warnings: list[str] = []  # implausible counts and scales: reported, never silently counted
        if kind == "field":  # camera defects, burned-in scale bars, constant fill and a mosaic's tile steps
            # out before the nuclei and markers are read, for segmentation and classification alike
            items = [(name, tidy_field(remove_overlays(remove_hot_pixels(image)), filled=filled), chans, px)
                     for name, image, chans, px in items]
        segs = self._segment_fields(items) if kind == "field" else []
        # an upload of event thumbnails exported with another tone curve is re-mapped to the validated
        # one first (classifier.tone), ... the domain check still judges the images as uploaded
        # and one whose CD45 leaks into CK has it taken out (classifier.harmonise; fields do this per image)
        corr = harmonise.measure([it[1] for it in items], [it[2] for it in items], [it[0] for it in items],
                                 forms=forms) if kind == "events" else harmonise.SetCorrection()
        for k, (name, image, chans, px) in enumerate(items):
            image = corr.apply(image, chans)
            if kind == "field":
                seg = segs[k]
                cells = seg.cells
                field_warnings += [f"{name}: {w}" for w in seg.warnings]
                px_cells, how = field_scale(px, seg)
                jobs.append(Job(name, image, chans, px_cells, [(c.y, c.x) for c in cells], how))
                sources += [f"{name}#{k}" for k in range(len(cells))]
            else:
                jobs.append(Job(name, image, chans, px))
                sources.append(name)

        def report(n: int) -> None:  # jobs done -> the segment stage's share of the run
            if progress is not None:
                progress(_STAGES["segment"] + (_STAGES["features"] - _STAGES["segment"]) * n / len(jobs), "segment")

        parts = self._prepare_all(jobs, JobProgress(len(jobs), report))
        prep = Prepared.concat(parts, self.contract)
        timings["segment"] = time.perf_counter() - t

        t = time.perf_counter()
        _report(progress, "features")
        feats = np.zeros((0, len(self.feature_names)), np.float32)
        if len(prep):
            feats = self._features(prep)
        timings["features"] = time.perf_counter() - t
        return _Upload(jobs, sources, field_warnings, prep, feats, corr, timings)

    def _domain_reference(self) -> ReferenceLookup:
        """The domain check's reference statistics for these weights (read once)."""
        if getattr(self, "_domain_lookup", None) is None:
            self._domain_lookup = load_reference(self.weights_path, self.metadata.get("sha256"), self.feature_names)
        return self._domain_lookup

    def _segment_fields(self, items: list[tuple[str, np.ndarray, list[str], float | None]]) -> list[FieldSegmentation]:
        """Each field's segmentation. Several fields go to this process and its forked copies a
        field at a time (a whole cartridge streams through here a few fields per call); a single
        field spreads its own independent steps instead (:func:`analyse_field`'s parallel map)."""
        for name, image, _chans, _px in items:
            if image.ndim != 3:
                raise InputError(f"{name}: expected a (channels, height, width) image, got shape {image.shape}.")
        if len(items) < 2 or self.prep_workers < 2 or not hasattr(os, "fork"):
            return [analyse_field(image, chans, px, parallel_map=self._segment_map(), level=False)
                    for _name, image, chans, px in items]
        parent = os.getpid()

        def one(item: tuple[str, np.ndarray, list[str], float | None]) -> FieldSegmentation:
            if os.getpid() != parent:
                torch.set_num_threads(1)  # a forked child must not wait on the parent's OpenMP pool
            return analyse_field(item[1], item[2], item[3], level=False)

        return fork_map(one, items, self.prep_workers, chunk=1)

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

    def _prepare_all(self, jobs: list[Job], progress: JobProgress) -> list[Prepared]:
        """Preprocess every image, in parallel when it pays.

        Where the OS can fork, this process and ``prep_workers - 1`` forked copies of it
        share the images (see :func:`fork_map`); that also works inside a Celery prefork
        worker, whose daemonic processes ``multiprocessing`` refuses to give children
        (the worker used to fall back to threads there, which gain little: numpy/scipy
        hold the GIL between their kernels on images this small). Elsewhere, threads.
        An image with many events (a field) is split by events instead. Results are
        identical to the serial loop in every case, in the same order. ``progress``
        counts the jobs done here; forked children never report.
        """
        workers = self.prep_workers
        contract = self.contract

        def prepare(job: Job) -> Prepared:
            out = job.prepare(contract)
            progress.add()
            return out

        if workers >= 2 and hasattr(os, "fork") and any(j.many for j in jobs):
            out = []
            for job in jobs:
                if job.many:
                    out.append(self._prepare_many(job))
                    progress.add(always=True)
                else:
                    out.append(prepare(job))
            return out
        if len(jobs) < 32 or workers < 2:
            return [prepare(j) for j in jobs]
        if hasattr(os, "fork"):
            return fork_map(lambda job: job.prepare(contract), jobs, workers, progress=progress.report)
        with ThreadPoolExecutor(workers) as tpool:
            return list(tpool.map(prepare, jobs))

    def _prepare_many(self, job: Job) -> Prepared:
        """One image with many events (a field): its normalisation and thresholds here,
        then its events' crops and masks in slices across forked processes (each event
        depends only on those and its own position, so the result is the serial one)."""
        setup = setup_image(job.image, job.channels, self.contract, job.pixel_size_um, source=job.name, field=True)
        pts = list(job.centres or [])
        spans = [(a, min(a + 16, len(pts))) for a in range(0, len(pts), 16)]
        contract = self.contract
        parts = fork_map(lambda ab: prepare_centres(setup, pts[ab[0]:ab[1]], contract), spans, self.prep_workers,
                         chunk=1)
        return job.sourced(Prepared.concat(parts, contract))

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


def _report(progress: Progress | None, stage: str) -> None:
    if progress is not None:
        progress(_STAGES[stage], stage)
