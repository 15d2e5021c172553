"""Running one upload through the classifier and storing what it found.

The worker calls :func:`run_upload`. It is safe to call twice for the same upload
(a re-delivered message, the stale sweep): the claim is one atomic UPDATE, and the
attempt number it sets is a fencing token checked again before results are written,
so a slow first attempt can never overwrite a newer one.

Per-run state (which upload, which worker owns it, the attempt number) travels in a :class:`Run`
the caller creates and passes, never in thread-locals or module globals.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, connections, router, transaction
from django.db.models import AutoField, F, Q
from django.utils import timezone

from classifier.errors import ChannelCountError, ContractError, InputError
from classifier.results import AnalysisResult, EventResult
from patients.cartridge import analyse_fields, field_sources
from patients.imaging import encode_grey, encode_strip
from patients.models import CellEvent, ClassifierVersion, ImagingUpload, Lane, UploadStatus
from patients.review import review_rank
from patients.storage import local_paths
from patients.summary import recompute_summary

logger = logging.getLogger(__name__)

#: After this many claims an upload is failed instead of retried (a poison input).
MAX_ATTEMPTS = 3

@dataclass
class Run:
    """One delivery of an upload to a worker, passed explicitly from the task to :func:`run_upload`.

    ``worker`` is the Celery worker name recorded as the owner; ``attempt`` is the fencing token,
    filled in by :func:`run_upload` once its claim succeeds (None before, or when the upload was
    not claimable). The task keeps the object, so its crash handler fails exactly the attempt that
    crashed: a superseded attempt that crashes must not fail the newer one still running."""

    upload_id: int
    worker: str = ""
    attempt: int | None = None


@lru_cache(maxsize=4)
def get_classifier(weights: str = ""):  # noqa: ANN201 - classifier.engine.Classifier
    """Load the model once per worker process (per weights file)."""
    from classifier.engine import Classifier  # torch: loaded in the worker, not by every importer

    device = settings.CLASSIFIER_DEVICE or None
    return Classifier.load(weights=weights or None, device=device)


def active_weights() -> str:
    active = ClassifierVersion.objects.filter(is_active=True, retired=False).first()
    if active is not None:
        return active.weights_path
    return settings.CLASSIFIER_WEIGHTS


# --- who runs a job: the owner, its heartbeat, and reclaiming a job whose owner is gone --------

def _process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (/proc), or None where unknown.

    A pid alone is reused; pid + start time names one process for the life of the host."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_identity(worker: str = "") -> dict:
    """This process as the owner of a job: worker name (``celery@host``), host, pid and the pid's start time."""
    pid = os.getpid()
    return {"worker": worker or "", "host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def owner_is_gone(owner: dict | None) -> bool:
    """True only when we can *see* that the owner died: it ran on this host and that process
    (pid and start time) no longer exists. An owner on another host is judged by its heartbeat."""
    if not owner or owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    start = _process_start(int(owner["pid"]))
    if start is None:
        return not os.path.exists(f"/proc/{int(owner['pid'])}") and os.path.isdir("/proc/self")
    return owner.get("start") is not None and start != owner["start"]


class Heartbeat:
    """Writes the running attempt's heartbeat every ``UPLOAD_HEARTBEAT_S`` from a thread.

    Progress writes alone leave gaps (loading the model, the database stage); with a heartbeat
    that never pauses, a silent owner can be declared gone after ``UPLOAD_OWNER_STALE_AFTER``
    (45 s) instead of the 5 minutes the beat sweep waited."""

    def __init__(self, upload_id: int, attempt: int) -> None:
        self.upload_id, self.attempt = upload_id, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{upload_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = float(settings.UPLOAD_HEARTBEAT_S)
        try:
            while not self._stop.wait(interval):
                try:
                    ImagingUpload.objects.filter(pk=self.upload_id, attempts=self.attempt,
                                                 status=UploadStatus.RUNNING).update(heartbeat_at=timezone.now())
                except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself goes on
                    logger.warning("upload %s: heartbeat not written", self.upload_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()


def reclaim(enqueue: Callable[[int, str], bool]) -> int:
    """Put back every job whose owner is gone, and send it to its queue again; returns how many.

    Runs in every worker at start and every ``UPLOAD_RECLAIM_INTERVAL_S`` (config/celery_app.py),
    so no scheduler is needed. A job is reclaimed when its owner's process is gone from this
    host, or its heartbeat is older than ``UPLOAD_OWNER_STALE_AFTER`` (an owner elsewhere).
    Exactly once: the switch back to queued is one conditional UPDATE on (status, attempts),
    so of several workers reclaiming together one wins; the others' duplicate messages, if
    any, find the job claimed (:func:`claim`), and the attempt number fences late results.
    Queued jobs whose message was lost (the file-system broker drops what a killed worker had
    taken) are re-sent by :func:`requeue_stale` after ``UPLOAD_STALE_AFTER``."""
    now = timezone.now()
    stale = now - settings.UPLOAD_OWNER_STALE_AFTER
    n = 0
    running = ImagingUpload.objects.filter(status=UploadStatus.RUNNING).values_list(
        "pk", "attempts", "owner", "heartbeat_at")
    for pk, attempts, owner, heartbeat_at in running[:500]:
        if not (owner_is_gone(owner) or heartbeat_at is None or heartbeat_at < stale):
            continue
        put_back = ImagingUpload.objects.filter(pk=pk, status=UploadStatus.RUNNING, attempts=attempts).update(
            status=UploadStatus.QUEUED, stage="reclaimed", heartbeat_at=now)
        if put_back:
            logger.warning("upload %s: owner %s gone (attempt %s); re-queued", pk, owner, attempts)
            # To the interactive lane whatever its own: it already waited its turn once.
            enqueue(pk, Lane.INTERACTIVE)
            n += 1
    return n


def claim(upload_id: int, worker: str = "") -> int | None:
    """Atomically take the upload for ``worker``; returns the attempt number, or None if not ours."""
    now = timezone.now()
    stale = now - settings.UPLOAD_STALE_AFTER
    claimable = Q(status=UploadStatus.QUEUED) | Q(status=UploadStatus.RUNNING, heartbeat_at__lt=stale)
    updated = ImagingUpload.objects.filter(claimable, pk=upload_id).update(
        status=UploadStatus.RUNNING,
        attempts=F("attempts") + 1,
        progress=0,
        stage="starting",
        error="",
        started_at=now,
        heartbeat_at=now,
        owner=owner_identity(worker),
    )
    if not updated:
        return None
    return ImagingUpload.objects.values_list("attempts", flat=True).get(pk=upload_id)


class ProgressWriter:
    """Writes progress and a heartbeat, at most every ``interval`` seconds."""

    def __init__(self, upload_id: int, attempt: int, interval: float = 0.5) -> None:
        self.upload_id, self.attempt, self.interval = upload_id, attempt, interval
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        # Progress 5..95 belongs to the classifier; storing takes the rest.
        pct = 5 + int(max(0.0, min(1.0, fraction)) * 90)
        ImagingUpload.objects.filter(pk=self.upload_id, attempts=self.attempt, status=UploadStatus.RUNNING).update(
            progress=pct, stage=stage[:40], heartbeat_at=timezone.now()
        )


def fail(upload_id: int, attempt: int | None, message: str) -> None:
    qs = ImagingUpload.objects.filter(pk=upload_id).exclude(status=UploadStatus.WITHDRAWN)  # withdrawn stays so
    if attempt is not None:
        qs = qs.filter(attempts=attempt)
    qs.update(status=UploadStatus.FAILED, error=message[:2000], finished_at=timezone.now(), stage="failed")


def run_upload(run: Run | int, progress_factory: Callable[[int, int], ProgressWriter] = ProgressWriter) -> str:
    """Process one upload (a :class:`Run`, or an upload id for a run without a named worker);
    returns what happened ("done", "failed", "skipped"). The claim's attempt is set on ``run``."""
    if not isinstance(run, Run):
        run = Run(run)
    upload_id = run.upload_id
    attempt = run.attempt = claim(upload_id, run.worker)
    if attempt is None:
        logger.info("upload %s: not claimable (done, failed or running elsewhere)", upload_id)
        return "skipped"
    upload = ImagingUpload.objects.select_related("draw").get(pk=upload_id)
    if attempt > MAX_ATTEMPTS:
        fail(upload_id, attempt, f"Analysis stopped after {MAX_ATTEMPTS} attempts; the worker kept failing.")
        return "failed"
    files = list(upload.files.order_by("position"))
    with Heartbeat(upload_id, attempt):
        try:
            # Local media where it is; objects in a bucket streamed to a temporary folder.
            with local_paths([f.file for f in files]) as paths:
                return _analyse_and_store(upload, attempt, files, paths, progress_factory)
        except FileNotFoundError as err:
            if getattr(err, "filename", None) is not None:
                raise
            # An object missing from the bucket (the storage names no local file).
            fail(upload_id, attempt, "A stored file is missing from the media storage.")
            return "failed"


def _analyse_and_store(upload: ImagingUpload, attempt: int, files: list, paths: list[Path],
                       progress_factory: Callable[[int, int], ProgressWriter]) -> str:
    upload_id = upload.pk
    weights = active_weights()
    try:
        clf = get_classifier(weights)
        t0 = time.perf_counter()
        names = [f.original_name for f in files]
        # A cartridge (many whole-field TIFFs, zipped or not) goes field by field: bounded memory.
        fields = field_sources(paths, names, len(upload.channels)) if upload.kind == "field" else None
        if fields:
            result = analyse_fields(clf, fields, upload.channels, upload.pixel_size_um,
                                    progress=progress_factory(upload_id, attempt))
        else:
            result = clf.analyse_files(
                paths,
                upload.channels,
                kind=upload.kind,
                pixel_size_um=upload.pixel_size_um,
                names=names,
                progress=progress_factory(upload_id, attempt),
            )
        analyse_s = time.perf_counter() - t0
    except InputError as err:
        logger.info("upload %s rejected: %s", upload_id, err)
        # one bad file stops the whole upload (a partly read draw would give a wrong count): say so
        fail(upload_id, attempt, f"{err} {_input_advice(err)}")
        return "failed"
    except ContractError as err:
        # the active version's weights cannot serve (not a bundle, made for other preprocessing): the
        # installation's fault, but one an administrator fixes from the Models page, so say which
        logger.error("upload %s: active weights %s cannot be loaded: %s", upload_id, weights, err)
        fail(upload_id, attempt, f"The active classifier version cannot be loaded ({err}). Nothing in this "
                                 "upload was analysed: an administrator must promote a working version on the "
                                 "Models page, then the upload can be run again.")
        return "failed"
    except FileNotFoundError as err:
        # Only a missing *upload* file is the upload's fault; a missing weights file (or any
        # other) is the installation's, and goes to the task's crash handler instead of
        # telling the lab "A stored file is missing: None".
        if err.filename is None or Path(str(err.filename)) not in paths:
            raise
        fail(upload_id, attempt, f"A stored file is missing: {Path(str(err.filename)).name}.")
        return "failed"
    timings = {**result.timings, "analyse_total": round(analyse_s, 3)}
    stored = store_results(upload, attempt, result, weights_path=weights, timings=timings)
    logger.info("upload %s: %s, %d events, timings %s", upload_id, stored, len(result.events), timings)
    return stored


def _input_advice(err: InputError) -> str:
    """What to do about a refused upload: one bad file is left out or corrected; but when no file
    fits the channel names (a gallery of RGB composites sent with four names), the names are wrong."""
    if isinstance(err, ChannelCountError) and err.every_file:
        if err.same_planes and err.planes:
            files = "Its one file has" if err.files == 1 else f"Every file of this upload ({err.files}) has"
            again = "it" if err.files == 1 else "them"
            return (f"Nothing in this upload was analysed. {files} {err.planes} planes, so the channel names are "
                    f"what to correct: upload {again} again with {err.planes} channel names, in the file's order.")
        return ("Nothing in this upload was analysed. No file of it has as many channels as names were given, "
                "so the channel names are what to correct: upload the files again with names that fit them.")
    return "Nothing in this upload was analysed: upload it again without that file, or with it corrected."


def store_results(upload: ImagingUpload, attempt: int, result: AnalysisResult, weights_path: str = "",
                  timings: dict[str, float] | None = None) -> str:
    """Replace the upload's events and summary and mark it done, in one transaction.

    ``timings`` (the analysis stages), when given, are stored with the rest, plus "database" (this
    call up to the commit): written after the commit, a reader could see the upload done without
    them (a worker test did, under load)."""
    t0 = time.perf_counter()
    thumbnails, heatmaps = _encode_images(result)
    # The uncertainty that orders the review queue and "Most uncertain first": the distance of
    # P(CTC) from the operating point the call was made at (0.163 for the shipped weights), not
    # from 0.5: a cell at p = 0.17 is called CTC by a hair.
    threshold = float(getattr(result, "threshold", 0.5))
    events = [
        CellEvent(
            upload=upload,
            draw_id=upload.draw_id,
            index=e.index,
            source=e.source[:300],
            x=float(e.x),
            y=float(e.y),
            call=e.call,
            ctc_probability=float(e.ctc_probability),
            margin=abs(float(e.ctc_probability) - threshold),
            review_rank=review_rank(float(e.ctc_probability), threshold),  # issue 13: the review order
            category=e.category,
            category_probabilities={k: round(float(v), 4) for k, v in e.category_probabilities.items()},
            explanation={
                "branch_contributions": {k: round(float(v), 4) for k, v in e.branch_contributions.items()},
                "top_attributes": [a.as_dict() for a in e.top_attributes],
                "embedding": [round(float(v), 4) for v in e.embedding],
            },
            thumbnail=thumb,
            heatmap=heat,
        )
        for e, thumb, heat in zip(result.events, thumbnails, heatmaps, strict=True)
    ]
    with transaction.atomic():
        locked = ImagingUpload.objects.select_for_update().get(pk=upload.pk)
        if locked.attempts != attempt or locked.status != UploadStatus.RUNNING:
            logger.warning("upload %s: attempt %s superseded; results discarded", upload.pk, attempt)
            return "skipped"
        CellEvent.objects.filter(upload=upload).delete()
        _insert_events(events)
        metadata = _metadata_for_registry(weights_path)
        version, created = ClassifierVersion.objects.get_or_create(
            version=result.model_version,
            # Record the weights that produced the result: registering custom weights
            # (CLASSIFIER_WEIGHTS) as "" (= shipped) made the next upload switch weights.
            defaults={"metadata": metadata, "sha256": metadata.get("sha256", ""), "weights_path": weights_path},
        )
        if (not created and metadata and version.metadata != metadata
                and version.sha256 in ("", metadata.get("sha256", ""))):
            # Same weights, richer metadata (e.g. ROC points added to the JSON): refresh the stored copy.
            version.metadata = metadata
            version.save(update_fields=["metadata"])
        if not ClassifierVersion.objects.filter(is_active=True).exists():
            ClassifierVersion.objects.filter(pk=version.pk).update(is_active=True)
        locked.status = UploadStatus.DONE
        locked.progress = 100
        locked.stage = "done"
        locked.model_version = result.model_version
        locked.device = result.device
        locked.result_channels = list(result.channels)
        # whether the images look like the validated domain (classifier.domain); shown on the draw page and API
        locked.domain_check = getattr(result, "domain_check", None)
        locked.finished_at = timezone.now()
        if timings is not None:
            timings["database"] = round(time.perf_counter() - t0, 3)  # the caller logs the same dict
            locked.timings = timings
        locked.save()
        recompute_summary(upload.draw)
    return "done"


def _encode_images(result: AnalysisResult) -> tuple[list[bytes], list[bytes]]:
    """PNG thumbnail strips and heat maps of every event (b"" where there is none).

    Two threads for large uploads: zlib releases the GIL while it compresses, which is
    most of an encode, so the worker's two cores share the work (~0.3 s per 1,000 events
    on one)."""
    def thumb(e: EventResult) -> bytes:
        return encode_strip(e.thumbnail) if e.thumbnail is not None else b""

    def heat(e: EventResult) -> bytes:
        return encode_grey(e.heatmap) if e.heatmap is not None else b""

    events = result.events
    if len(events) < 64:
        return [thumb(e) for e in events], [heat(e) for e in events]
    half = len(events) // 2
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(lambda: ([thumb(e) for e in events[half:]], [heat(e) for e in events[half:]]))
        thumbs, heats = [thumb(e) for e in events[:half]], [heat(e) for e in events[:half]]
        more_thumbs, more_heats = second.result()
    return thumbs + more_thumbs, heats + more_heats


def _insert_events(events: list[CellEvent]) -> None:
    """Insert ``events`` as ``CellEvent.objects.bulk_create(events)`` does, faster on PostgreSQL.

    bulk_create spent most of the database stage (~0.75 s per 1,000 events) building
    500-row INSERTs of 18 parameters per row and quoting them client-side, thumbnails
    hex-escaped into the SQL text. COPY streams the same values: every field's value
    is prepared exactly as Django's insert compiler prepares it (``pre_save`` then
    ``get_db_prep_save``), all concrete columns but the auto primary key, on the
    transaction's own connection. Unlike bulk_create it does not set ``pk`` on the
    objects (nothing here reads them again). Other databases use bulk_create.
    """
    if not events:
        return
    conn = connections[router.db_for_write(CellEvent)]
    if conn.vendor != "postgresql":
        CellEvent.objects.bulk_create(events, batch_size=500)
        return
    from psycopg import sql  # PostgreSQL's driver: not needed (nor imported) on SQLite

    opts = CellEvent._meta
    fields = [f for f in opts.concrete_fields if not f.generated and not isinstance(f, AutoField)]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(opts.db_table), sql.SQL(", ").join(sql.Identifier(f.column) for f in fields))
    # wrap_database_errors: a rejected row raises django.db.IntegrityError, as bulk_create's would
    with conn.wrap_database_errors, conn.cursor() as cursor, cursor.cursor.copy(stmt) as copy:
        for obj in events:
            copy.write_row([f.get_db_prep_save(f.pre_save(obj, True), connection=conn) for f in fields])


def _metadata_for_registry(weights_path: str) -> dict:
    """The metadata of the weights that produced the result (not of whichever version is active
    by the time it is stored: a promotion during a run must not relabel its results)."""
    try:
        return dict(get_classifier(weights_path).metadata)
    except Exception:  # noqa: BLE001 - registry metadata is informative only
        return {}


def stale_uploads():  # noqa: ANN201 - queryset
    """Uploads a worker should have finished or picked up by now."""
    cutoff = timezone.now() - settings.UPLOAD_STALE_AFTER
    return ImagingUpload.objects.filter(
        Q(status=UploadStatus.QUEUED, created_at__lt=cutoff, heartbeat_at__isnull=True)
        | Q(status=UploadStatus.QUEUED, heartbeat_at__lt=cutoff)
        | Q(status=UploadStatus.RUNNING, heartbeat_at__lt=cutoff)
    )


def requeue_stale(enqueue: Callable[[int, str], bool]) -> int:
    """Send stale uploads to the broker again; the claim makes duplicates harmless."""
    n = 0
    for pk, lane in stale_uploads().values_list("pk", "lane")[:500]:
        # Touch the heartbeat so the sweep does not resend every minute while it waits.
        ImagingUpload.objects.filter(pk=pk, status=UploadStatus.QUEUED).update(heartbeat_at=timezone.now())
        if enqueue(pk, lane or Lane.INTERACTIVE):
            n += 1
    return n



