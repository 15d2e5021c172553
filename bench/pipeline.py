"""Upload-to-results time through the real worker, PostgreSQL and Redis.

    python -m bench.pipeline                # 1,000-event gallery (zip of TIFFs) + 4x2048x2048 field, ~1,000 cells
    python -m bench.pipeline --quick        # 16-event gallery + 4x384x384 field (~30 cells), for tests
    python -m bench.pipeline --repeats 3    # median of three uploads of each

A ``celery worker`` subprocess (prefork, concurrency 1, as ``make worker`` runs it) consumes a
queue of its own on Redis and writes to PostgreSQL database ``ctc_bench`` (created and
migrated if missing). The inputs are synthetic (``classifier.synth.make_event`` /
``make_field``), written once to ``var/bench/`` and reused. Each upload goes through
``patients.uploads.create_upload`` (validation, storage, header check, queued on commit),
exactly as the form and the API do; the clock runs from that call until the upload row says
``done`` (polled every 20 ms). One small warm-up upload first loads the model in the worker,
as in a running service; its time is reported apart (``warmup_s``). When the shipped
weights are missing (``classifier/weights/ctc-dual.pt``) or do not fit the code's
preprocessing contract, a randomly initialised bundle of the same architecture is written to
``var/bench/`` and used (``weights`` says so): speed does not depend on weight values.

The last line of stdout is one JSON object:

- ``benchmark``: ``"pipeline"``; ``quick``; ``database``; ``weights``; ``worker_threads`` (torch
  threads per worker process, ``CLASSIFIER_THREADS``: ``--worker-threads``, else the settings' default
  1; 0 means torch's default, one per core); ``worker_start_s``;
  ``warmup_s``; ``repeats``;
- ``gallery`` and ``field``: each ``{"files", "input_mb", "events", "upload_s" (create_upload:
  validation + storage), "seconds" (end to end, median), "runs" (each run's seconds),
  "events_per_s", "stages_s" (the worker's ``ImagingUpload.timings`` of the median run: decode,
  segment, features, model, explanation, database, analyse_total), "share" (each of decode,
  segment, features, model, explanation, database, and ``other`` = queueing, claim, loading
  the rows, as a fraction of ``seconds``), "target_s", "meets_target"}``;
- ``priority`` (issue 15.2): ``{"events", "bulk_queued", "bulk_queue_s", "idle_s" (an interactive
  30-event upload on the idle worker), "behind_bulk_s" (the same upload submitted behind
  ``bulk_queued`` = 60 queued bulk uploads of 30 events), "delta_s", "bulk_done_before",
  "target_delta_s" (5), "meets_target"}``;
- ``cartridge`` (issue 15.4): a CellSearch-like cartridge as one upload, a zip of per-field
  4 x 1036 x 1384 uint16 TIFFs (~25 cells per field; 8 distinct synthetic fields in turn), for
  1, 25 and 175 fields: ``runs[n]`` = ``{"fields", "input_mb", "raw_pixels_mb", "events",
  "upload_s", "seconds" (upload to stored), "per_field_s", "stages_s" (unpack, decode, segment,
  features, model, explanation, database, domain_check, analyse_total; summed over fields),
  "peak_rss_mb" (the worker's main process + pool child + their children, sampled every 50 ms),
  "streamed"}``; ``target_s`` 120 and ``target_rss_mb`` 2048 for 175 fields, ``meets_target``;
- ``machine``: host, cpu, cores, python, date, loadavg_1m.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from bench.common import REDIS_URL, ROOT, database_url, emit, log, machine, median, setup_django

STAGES = ("decode", "segment", "features", "model", "explanation", "database")
DATA_DIR = ROOT / "var" / "bench"
CHANNELS = "DAPI,CK,AF,CD45"  # classifier.synth's channel order


# --- inputs -----------------------------------------------------------------------------------


def gallery_zip(n: int, seed: int = 1, px_um: float = 0.65) -> Path:
    """A zip of ``n`` 4-channel TIFF event thumbnails (cached)."""
    import numpy as np
    import tifffile

    path = DATA_DIR / f"gallery-{n}-s{seed}.zip"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    from classifier.synth.events import make_event

    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img, _ = make_event(rng, px_um=px_um)
            arr = np.clip(img, 0, None)
            if arr.max() <= 1.0:
                arr = arr * 65535.0
            buf = io.BytesIO()
            tifffile.imwrite(buf, np.clip(arr, 0, 65535).astype(np.uint16))
            zf.writestr(f"event_{i:05d}.tif", buf.getvalue())
    tmp.rename(path)
    log(f"  wrote {path.name} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.0f}s")
    return path


def field_tiff(size: int, cells: int, seed: int = 2, px_um: float = 0.65) -> Path:
    """A 4 x size x size uint16 field image with about ``cells`` cells (cached)."""
    import numpy as np
    import tifffile

    path = DATA_DIR / f"field-{size}-{cells}-s{seed}.tif"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    from classifier.synth.field import make_field

    t0 = time.perf_counter()
    img, labels = make_field(np.random.default_rng(seed), size, size, cells, pixel_size_um=px_um)
    arr = np.clip(img, 0, None)
    if arr.max() <= 1.0:
        arr = arr * 65535.0
    tmp = path.with_suffix(".tmp")
    tifffile.imwrite(tmp, np.clip(arr, 0, 65535).astype(np.uint16))
    tmp.rename(path)
    log(f"  wrote {path.name}: {int(labels.max())} cells in {time.perf_counter() - t0:.0f}s")
    return path


def bench_weights() -> tuple[str, str]:
    """(CLASSIFIER_WEIGHTS value, label): the shipped weights, else a random-init bundle."""
    from classifier.errors import ContractError
    from classifier.weights import DEFAULT_WEIGHTS, default_contract, load_bundle

    if DEFAULT_WEIGHTS.exists():
        try:
            load_bundle(DEFAULT_WEIGHTS)
            return "", "shipped"
        except ContractError as err:
            log(f"shipped weights do not fit the code ({err}); using random weights of the same architecture")
    path = DATA_DIR / "random-init.pt"
    try:
        load_bundle(path)
        ok = True
    except (FileNotFoundError, ContractError):
        ok = False
    if not ok:
        import torch

        from classifier.model import ctc_dual
        from classifier.weights import SHIPPED_ROTATIONS, save_bundle

        torch.manual_seed(0)
        contract = default_contract()
        model = ctc_dual(len(contract.feature_names), in_chans=len(contract.channels),
                         rotations=SHIPPED_ROTATIONS).eval()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        save_bundle(model, contract, path, {"base_version": "0.0.0-bench-random", "note": "bench only"})
    return str(path), "random-init"


# --- worker -----------------------------------------------------------------------------------


class Worker:
    def __init__(self, db: str, queue: str, media: Path, weights: str, threads: int | None = None) -> None:
        self.log = Path(tempfile.mkstemp(prefix="ctc-bench-worker-", suffix=".log")[1])
        self.env = dict(os.environ)
        self.env.update(DATABASE_URL=database_url(db), REDIS_URL=REDIS_URL, CELERY_QUEUE=queue,
                        MEDIA_ROOT=str(media), CLASSIFIER_DEVICE="cpu", DJANGO_SETTINGS_MODULE="config.settings.local",
                        PYTHONUNBUFFERED="1", CLASSIFIER_WEIGHTS=weights, DEBUG="0")
        if threads is not None:  # torch threads per worker process (config/celery_app.py)
            self.env["CLASSIFIER_THREADS"] = str(threads)
        self.queue = queue
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1",
               "--pool=prefork", "-Q", self.queue, "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
               "--without-mingle", "--without-heartbeat"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        while time.perf_counter() - t0 < timeout:
            if "ready." in self.log.read_text(errors="replace"):
                return time.perf_counter() - t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


# --- one upload ---------------------------------------------------------------------------------


def run_upload(draw, user, path: Path, kind: str, px_um: float, weights: str, timeout: float = 600) -> dict:  # noqa: ANN001
    from django.core.files.uploadedfile import SimpleUploadedFile

    from patients.models import ClassifierVersion, ImagingUpload, UploadStatus
    from patients.uploads import UploadRequest, create_upload

    if weights:  # a registered version would point the worker at the (missing) shipped weights
        ClassifierVersion.objects.update(weights_path=weights)
    data = path.read_bytes()
    f = SimpleUploadedFile(path.name, data, content_type="application/octet-stream")
    t0 = time.perf_counter()
    upload = create_upload(draw, UploadRequest(files=[f], channels=CHANNELS.split(","), kind=kind,
                                               pixel_size_um=px_um), user)
    t_up = time.perf_counter() - t0
    while True:
        row = ImagingUpload.objects.values("status", "error", "timings").get(pk=upload.pk)
        if row["status"] in (UploadStatus.DONE, UploadStatus.FAILED) and (row["timings"] or row["status"] ==
                                                                          UploadStatus.FAILED):
            break
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"upload {upload.pk} not done after {timeout}s (status {row['status']})")
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if row["status"] == UploadStatus.FAILED:
        raise RuntimeError(f"upload {upload.pk} failed: {row['error']}")
    n = upload.events.count()
    return {"seconds": total, "upload_s": t_up, "events": n, "timings": row["timings"], "mb": len(data) / 2**20}


# --- a whole cartridge (issue 15.4) -------------------------------------------------------------

CARTRIDGE_SHAPE = (4, 1036, 1384)  # channels x height x width: a CellSearch frame, 1384 x 1036 px
CARTRIDGE_CELLS = 25  # cells per field: ~4,400 in 175 fields, a dense CellSearch cartridge after enrichment
CARTRIDGE_DISTINCT = 8  # distinct synthetic fields, repeated in turn (generating 175 costs minutes)


def cartridge_zip(fields: int, shape: tuple[int, int, int] = CARTRIDGE_SHAPE) -> Path:
    """A zip of ``fields`` per-field 4-channel uint16 TIFFs (deflate-compressed TIFFs, stored
    members), the way instruments export a cartridge (cached)."""
    import numpy as np
    import tifffile

    path = DATA_DIR / f"cartridge-{fields}-{shape[1]}x{shape[2]}.zip"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    from classifier.synth.field import make_field

    t0 = time.perf_counter()
    blobs = []
    for k in range(min(fields, CARTRIDGE_DISTINCT)):
        cells = max(3, round(CARTRIDGE_CELLS * shape[1] * shape[2] / (CARTRIDGE_SHAPE[1] * CARTRIDGE_SHAPE[2])))
        img, _ = make_field(np.random.default_rng(100 + k), shape[1], shape[2], cells, pixel_size_um=0.65)
        arr = np.clip(img, 0, None)
        arr = arr * 65535.0 if arr.max() <= 1.0 else arr
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.clip(arr, 0, 65535).astype(np.uint16), photometric="minisblack",
                         metadata={"axes": "CYX"}, compression="zlib")
        blobs.append(buf.getvalue())
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(fields):
            zf.writestr(f"field_{i + 1:03d}.tif", blobs[i % len(blobs)])
    tmp.rename(path)
    log(f"  wrote {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f}s")
    return path


def _pixels(shape: tuple[int, int, int] = CARTRIDGE_SHAPE) -> int:
    c, h, w = shape
    return c * h * w


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (the pool child forks segmentation helpers)."""
    kids: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
            rss[int(stat.parent.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += kids.get(p, [])
    return total


class PeakRss:
    """Samples the worker's resident memory (main process, pool child and their children) every
    50 ms while a run is in flight; ``peak`` is the highest total seen."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cartridge_case(new_draw, user, weights: str, worker: Worker, counts: list[int],  # noqa: ANN001
                   shape: tuple[int, int, int] = CARTRIDGE_SHAPE) -> dict:
    """One cartridge upload per field count: seconds upload-to-stored, stage split, cost per field
    and the worker's peak RSS (targets for 175 fields: <= 120 s, <= 2 GB)."""
    from django.conf import settings

    cells = max(3, round(CARTRIDGE_CELLS * shape[1] * shape[2] / (CARTRIDGE_SHAPE[1] * CARTRIDGE_SHAPE[2])))
    out: dict = {"field_shape": list(shape), "dtype": "uint16", "cells_per_field": cells,
                 "distinct_fields": CARTRIDGE_DISTINCT, "layout": "zip of per-field TIFFs (zlib), stored members",
                 "upload_max_bytes": settings.UPLOAD_MAX_BYTES, "runs": {}}
    for n in counts:
        path = cartridge_zip(n, shape)
        log(f"  cartridge {n} field(s): {path.stat().st_size / 2**20:.0f} MiB ...")
        with PeakRss(worker.proc.pid) as rss:
            r = run_upload(new_draw(), user, path, "field", 0.65, weights, timeout=3600)
        t = r["timings"]
        stages = {k: round(float(t.get(k, 0.0)), 2) for k in ("unpack", *STAGES, "domain_check", "analyse_total")}
        out["runs"][str(n)] = {
            "fields": n, "input_mb": round(r["mb"], 1), "raw_pixels_mb": round(n * 2 * _pixels(shape) / 2**20),
            "events": r["events"], "upload_s": round(r["upload_s"], 2), "seconds": round(r["seconds"], 2),
            "per_field_s": round(r["seconds"] / n, 3), "stages_s": stages,
            "peak_rss_mb": round(rss.peak / 2**20), "streamed": "fields" in t,
        }
        log(f"  cartridge {n}: {out['runs'][str(n)]}")
    big = out["runs"].get("175")
    if big:
        out["target_s"], out["target_rss_mb"] = 120.0, 2048
        out["meets_target"] = big["seconds"] <= 120.0 and big["peak_rss_mb"] <= 2048
    return out


# --- priority lanes (issue 15.2) -------------------------------------------------------------


def priority_case(new_draw, user, weights: str, bulk: int, events: int, target_delta_s: float = 5.0,  # noqa: ANN001
                  fifo: bool = False) -> dict:
    """An interactive ``events``-event upload on an idle worker, then the same upload submitted
    behind ``bulk`` queued bulk uploads of the same size (what seed_demo or an import queues).

    Reports both end-to-end times, their difference (target: <= 5 s), and how many bulk jobs
    finished before the interactive one (the one the worker was on, ideally). Bulk jobs still
    queued afterwards are dropped from the queue and failed, so no later run picks them up.
    ``fifo``: the "bulk" uploads go to the interactive queue too (one FIFO queue, as before
    issue 15), for comparison."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from patients.models import ImagingUpload, Lane, UploadStatus
    from patients.tasks import queue_for
    from patients.uploads import UploadRequest, create_upload

    path = gallery_zip(events, seed=7)
    data = path.read_bytes()
    idle = run_upload(new_draw(), user, path, "events", 0.65, weights)
    log(f"  priority: idle {idle['seconds']:.2f}s; queueing {bulk} bulk uploads ...")
    t_bulk = time.perf_counter()
    bulk_ids = []
    for i in range(bulk):
        f = SimpleUploadedFile(f"bulk-{i}.zip", data, content_type="application/zip")
        up = create_upload(new_draw(), UploadRequest(files=[f], channels=CHANNELS.split(","), kind="events",
                                                     pixel_size_um=0.65,
                                                     lane=Lane.INTERACTIVE if fifo else Lane.BULK), user)
        bulk_ids.append(up.pk)
    queue_s = time.perf_counter() - t_bulk
    behind = run_upload(new_draw(), user, path, "events", 0.65, weights)
    finished = ImagingUpload.objects.filter(pk__in=bulk_ids, status=UploadStatus.DONE).count()
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(queue_for(Lane.BULK))
        if fifo:
            redis.Redis.from_url(REDIS_URL).delete(queue_for(Lane.INTERACTIVE))
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    ImagingUpload.objects.filter(pk__in=bulk_ids, status=UploadStatus.QUEUED).update(
        status=UploadStatus.FAILED, error="bench: cancelled", finished_at=timezone.now())
    delta = behind["seconds"] - idle["seconds"]
    return {"events": idle["events"], "bulk_queued": bulk, "bulk_queue_s": round(queue_s, 2),
            "idle_s": round(idle["seconds"], 2), "behind_bulk_s": round(behind["seconds"], 2),
            "delta_s": round(delta, 2), "bulk_done_before": finished, "lanes": "one FIFO queue" if fifo else
            "interactive ahead of bulk", "target_delta_s": target_delta_s,
            "meets_target": delta <= target_delta_s}


def summarise(runs: list[dict], target: float, files: int) -> dict:
    runs_sorted = sorted(runs, key=lambda r: r["seconds"])
    mid = runs_sorted[(len(runs_sorted) - 1) // 2]
    secs = median([r["seconds"] for r in runs])
    t = mid["timings"]
    stages = {k: round(float(t.get(k, 0.0)), 3) for k in (*STAGES, "analyse_total")}
    share = {k: round(stages[k] / mid["seconds"], 3) for k in STAGES}
    share["other"] = round(max(0.0, 1.0 - sum(share.values())), 3)
    return {
        "files": files, "input_mb": round(mid["mb"], 1), "events": mid["events"],
        "upload_s": round(mid["upload_s"], 3), "seconds": round(secs, 2),
        "runs": [round(r["seconds"], 2) for r in runs], "events_per_s": round(mid["events"] / secs, 1),
        "stages_s": stages, "share": share, "target_s": target, "meets_target": secs <= target,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16-event gallery and a 384x384 field (tests)")
    ap.add_argument("--events", type=int, help="gallery size (default 1000; quick 16)")
    ap.add_argument("--field-size", type=int, help="field side in px (default 2048; quick 384)")
    ap.add_argument("--field-cells", type=int, help="cells in the field (default 1000; quick 30)")
    ap.add_argument("--repeats", type=int, default=1, help="uploads of each input; the median is reported")
    ap.add_argument("--database", help="PostgreSQL database (default ctc_bench; quick ctc_bench_quick)")
    ap.add_argument("--only", choices=["gallery", "field", "priority", "cartridge"], help="run one case")
    ap.add_argument("--cartridge-fields", default=None,
                    help="comma-separated field counts of the cartridge case (default 1,25,175; quick 1,3)")
    ap.add_argument("--priority-bulk", type=int, help="bulk uploads queued ahead (default 60; quick 6)")
    ap.add_argument("--priority-fifo", action="store_true",
                    help="queue the bulk uploads on the interactive queue too (the pre-issue-15 FIFO), to compare")
    ap.add_argument("--worker-threads", type=int,
                    help="CLASSIFIER_THREADS for the worker (torch threads; default: the settings', 1; 0 = cores)")
    args = ap.parse_args(argv)
    quick = args.quick
    n_events = args.events or (16 if quick else 1000)
    f_size = args.field_size or (384 if quick else 2048)
    f_cells = args.field_cells or (30 if quick else 1000)
    db = args.database or ("ctc_bench_quick" if quick else "ctc_bench")
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    media = Path(tempfile.mkdtemp(prefix="ctc-bench-media-"))

    setup_django(db, REDIS_URL=REDIS_URL, CELERY_QUEUE=queue, MEDIA_ROOT=str(media))
    from django.conf import settings

    from config.celery_app import app

    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    app.conf.task_default_queue = queue
    settings.MEDIA_ROOT = media

    from django.contrib.auth import get_user_model

    from patients.models import BloodDraw, CancerType, CareTeam, Membership, Patient, Role

    log("inputs ...")
    gallery = gallery_zip(n_events) if args.only in (None, "gallery") else None
    field = field_tiff(f_size, f_cells) if args.only in (None, "field") else None
    warm = gallery_zip(4 if quick else 16, seed=99)
    weights, weights_label = bench_weights()

    user, _ = get_user_model().objects.get_or_create(username="bench_pipeline")
    team, _ = CareTeam.objects.get_or_create(name="Bench pipeline")
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ONCOLOGIST})
    patient, _ = Patient.objects.get_or_create(
        study_id="BENCH-PIPE", defaults={"care_team": team, "cancer_type": CancerType.objects.first()})
    from django.utils import timezone

    worker = Worker(db, queue, media, weights, args.worker_threads)
    out: dict = {"benchmark": "pipeline", "quick": quick, "database": db, "weights": weights_label,
                 "worker_threads": args.worker_threads if args.worker_threads is not None
                 else settings.CLASSIFIER_THREADS}
    try:
        log("starting worker ...")
        out["worker_start_s"] = round(worker.start(), 2)

        def new_draw() -> BloodDraw:
            return BloodDraw.objects.create(patient=patient, drawn_at=timezone.now(), volume_ml=7.5, timepoint="bench")

        log("warm-up upload (loads the model in the worker) ...")
        w = run_upload(new_draw(), user, warm, "events", 0.65, weights)
        out["warmup_s"] = round(w["seconds"], 2)
        out["repeats"] = args.repeats
        for name, path, kind, target in (("gallery", gallery, "events", 5.0), ("field", field, "field", 15.0)):
            if path is None:
                continue
            runs = []
            for i in range(args.repeats):
                r = run_upload(new_draw(), user, path, kind, 0.65, weights)
                runs.append(r)
                log(f"  {name} run {i + 1}: {r['seconds']:.2f}s, {r['events']} events, timings {r['timings']}")
            out[name] = summarise(runs, target, 1)
        if args.only in (None, "cartridge"):
            log("cartridge: whole-cartridge uploads, analysed field by field ...")
            counts = [int(x) for x in (args.cartridge_fields or ("1,3" if quick else "1,25,175")).split(",")]
            # A cartridge is one upload of 0.1-2 GB: the lab raises UPLOAD_MAX_BYTES (docs/operations.md).
            settings.UPLOAD_MAX_BYTES = max(settings.UPLOAD_MAX_BYTES, 2500 * 2**20)
            # --quick (the suite's smoke run): quarter-size fields, so it costs seconds, not a minute.
            out["cartridge"] = cartridge_case(new_draw, user, weights, worker, counts,
                                              (4, 260, 346) if quick else CARTRIDGE_SHAPE)
        if args.only in (None, "priority"):
            log("priority: interactive upload on an idle worker, then behind queued bulk uploads ...")
            out["priority"] = priority_case(new_draw, user, weights, args.priority_bulk or (6 if quick else 60),
                                            4 if quick else 30, fifo=args.priority_fifo)
            log(f"  priority: {out['priority']}")
    finally:
        worker.stop()
        import shutil

        shutil.rmtree(media, ignore_errors=True)
        try:
            import redis

            redis.Redis.from_url(REDIS_URL).delete(queue, f"{queue}-bulk")
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    out["machine"] = machine()
    emit(out)
    return out


if __name__ == "__main__":
    main()
