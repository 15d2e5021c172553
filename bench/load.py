"""Bounded load: concurrent people browsing and labs uploading, against the real stack.

    python -m bench.load                        # 50 browsing + 5 uploading users for 60 s
    python -m bench.load --users 10 --uploaders 2 --duration 15     # a quick look

Starts its own stack and tears it down: a fresh PostgreSQL database (``ctc_load``,
dropped and re-created, migrated, seeded), gunicorn (``--workers``, ``--threads``) with
production-like settings (DEBUG off) on a free local port, and one Celery worker on a queue
of its own on the shared Redis. Then, for ``--duration`` seconds:

- ``--users`` people each log in through the login form (one session each) and browse in a
  loop: the patient list, a patient page, a draw page, the review queue, the cohort page,
  the model page and three API reads (a token each); between two pages a person reads for
  ``--think`` seconds (uniform random range, default 0.5-2);
- ``--uploaders`` labs each post an event gallery (a zip of ``--upload-events`` TIFF
  thumbnails) to ``POST /api/draws/{id}/uploads/``, poll ``/api/uploads/{id}/`` every second
  until the worker has finished it, and post the next.

The worker uses the shipped classifier weights, or an untrained bundle of the same
architecture when they do not load (mid-retraining): the load test measures the service,
not the model's calls. gunicorn keeps idle connections 30 s (a proxy's upstream keep-alive)
so that a person's next page reuses their connection.

Every response must be a success (2xx, or the login redirect); anything else, or a
transport error, counts as an error. The load generator (asyncio + httpx) runs in this
process on the same machine, so its CPU competes with the server's: the figures are what
one small box does for everything, not the server alone.

The last line of stdout is one JSON object:

- ``benchmark``: ``"load"``; ``config``: users, uploaders, duration_s, think_s, gunicorn
  workers/threads, upload_events, weights (shipped or the fallback); ``machine``: where it ran (cores, load average...);
- ``pages``: ``{page: {"n", "p50_ms", "p95_ms", "max_ms", "errors"}}`` for ``patient_list``,
  ``patient``, ``draw``, ``review``, ``cohort``, ``models``, ``api_patients``, ``api_draw``,
  ``api_draw_events``, ``login`` and ``upload_post`` (the POST of an upload) and
  ``upload_status`` (the polls);
- ``uploads``: ``{"posted", "done", "failed", "p50_s", "p95_s"}`` (post to done, seconds);
- ``requests``, ``errors`` (total), ``rps`` (requests per second over the run),
  ``error_samples`` (up to 10 ``"page status detail"`` strings).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import PG_BASE, REDIS_URL, ROOT, emit, log, machine, percentile

DB_NAME = "ctc_load"
PASSWORD = "load-test-password-9"  # a throwaway account in a throwaway database


# --- the stack ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_database(name: str) -> str:
    import psycopg
    from psycopg import sql

    with psycopg.connect(f"{PG_BASE.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{PG_BASE.rstrip('/')}/{name}"


def _stack_env(database_url: str, media: Path, queue: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, CELERY_QUEUE=queue, MEDIA_ROOT=str(media),
               DJANGO_SETTINGS_MODULE="config.settings.local", DEBUG="0", LOG_LEVEL="WARNING", CLASSIFIER_DEVICE="cpu",
               PYTHONUNBUFFERED="1", ALLOWED_HOSTS="127.0.0.1,localhost",
               # The load generator logs 55 sessions in from one address; keep the throttle on but wide.
               TOKEN_THROTTLE_RATE="1000/min")
    return env


def _seed(env: dict[str, str], patients: int, draws: int, events: int) -> dict[str, Any]:
    """Migrate and seed the load database in a child process (this process stays Django-free)."""
    code = f"""
import json, datetime as dt, random
from decimal import Decimal
import numpy as np
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from django.contrib.auth import get_user_model
from django.utils import timezone
from patients.imaging import encode_grey, encode_strip
from patients.models import *
from patients.summary import recompute_summary
rng = random.Random(7)
team = CareTeam.objects.create(name="Load unit", site="Site L")
users = []
for i in range(3):
    u = get_user_model().objects.create_user(f"load{{i}}", password={PASSWORD!r})
    Membership.objects.create(team=team, user=u, role=Role.ONCOLOGIST)
    users.append(u.username)
ct = CancerType.objects.get(code="breast_metastatic")
thumb = encode_strip(np.random.default_rng(0).integers(0, 255, (3, 32, 32)).astype("uint8"))
heat = encode_grey(np.random.default_rng(1).integers(0, 255, (32, 32)).astype("uint8"))
draw_ids, patient_ids = [], []
for p in range({patients}):
    pt = Patient.objects.create(study_id=f"LOAD-{{p:04d}}", cancer_type=ct, care_team=team,
                                diagnosis_date=dt.date(2024, 1, 1) + dt.timedelta(days=p))
    patient_ids.append(pt.pk)
    TreatmentLine.objects.create(patient=pt, line_number=1, regimen="Paclitaxel", start_date=dt.date(2024, 2, 1))
    for d in range({draws}):
        draw = BloodDraw.objects.create(patient=pt, drawn_at=timezone.now() - dt.timedelta(days=21 * ({draws} - d)),
                                        volume_ml=Decimal("7.5"), timepoint=f"C{{d + 1}}D1")
        draw_ids.append(draw.pk)
        up = ImagingUpload.objects.create(draw=draw, channels=["DAPI", "CK", "CD45"], status="done", progress=100,
                                          model_version="load", result_channels=["DAPI", "CK", "CD45"])
        evs = []
        for i in range({events}):
            prob = rng.random()
            evs.append(CellEvent(upload=up, draw=draw, index=i, source=f"event{{i:04d}}.tif", x=16, y=16,
                                 call="ctc" if prob > 0.5 else "non_ctc", ctc_probability=prob,
                                 margin=abs(prob - 0.5), category="ctc" if prob > 0.5 else "leukocyte",
                                 explanation={{"branch_contributions": {{"spatial": 0.6, "texture": 0.4}},
                                              "top_attributes": [], "embedding": [0.0] * 16}},
                                 thumbnail=thumb, heatmap=heat))
        CellEvent.objects.bulk_create(evs)
        recompute_summary(draw)
print("SEED" + json.dumps({{"users": users, "patients": patient_ids, "draws": draw_ids}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{proc.stderr[-4000:]}")
    import json

    line = next(x for x in proc.stdout.splitlines() if x.startswith("SEED"))
    return json.loads(line[4:])


def _weights_env(tmp: Path) -> tuple[dict[str, str], str]:
    """The shipped weights, or (when they do not load, e.g. mid-retraining) an untrained bundle of
    the same architecture: the load test measures the service, not the model's calls."""
    code = """
import sys
from pathlib import Path
from classifier.weights import DEFAULT_WEIGHTS, default_contract, load_bundle, save_bundle
try:
    load_bundle(DEFAULT_WEIGHTS)
    print("WEIGHTS shipped")
except Exception as err:
    from classifier import features
    from classifier.model import ctc_dual
    from classifier.weights import SHIPPED_ROTATIONS
    m = ctc_dual(len(features.feature_names()), rotations=SHIPPED_ROTATIONS); m.eval()
    path = Path(sys.argv[1]) / "untrained.pt"
    save_bundle(m, default_contract(), path, {"name": "untrained-load", "base_version": "0.0.0-load"})
    print("WEIGHTS " + str(path) + " " + type(err).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("WEIGHTS"))
    parts = line.split()
    if parts[1] == "shipped":
        return {}, "shipped"
    return {"CLASSIFIER_WEIGHTS": parts[1]}, f"untrained fallback (shipped weights: {parts[2]})"


class Stack:
    def __init__(self, env: dict[str, str], port: int, workers: int, threads: int) -> None:
        self.env, self.port, self.workers, self.threads = env, port, workers, threads
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="ctc-load-logs-"))

    def start(self) -> None:
        bin_dir = Path(sys.executable).parent
        web_log = (self.logdir / "gunicorn.log").open("ab")
        self.procs.append(subprocess.Popen(
            [str(bin_dir / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--threads", str(self.threads), "--timeout", "120",
             "--backlog", "256",
             # Longer than the think time, as a proxy's upstream keep-alive would be: gunicorn's
             # 2 s default closes idle connections the client is about to reuse.
             "--keep-alive", "30"],
            cwd=ROOT, env=self.env, stdout=web_log, stderr=subprocess.STDOUT, start_new_session=True))
        worker_log = (self.logdir / "worker.log").open("ab")
        self.procs.append(subprocess.Popen(
            [str(bin_dir / "celery"), "-A", "config", "worker", "--loglevel=WARNING", "--concurrency=1",
             "-Q", self.env["CELERY_QUEUE"], "-n", f"load-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the stack did not start; logs in {self.logdir}")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


# --- the load ------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []
        self.upload_s: list[float] = []
        self.uploads = {"posted": 0, "done": 0, "failed": 0}

    def add(self, page: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.times[page].append(seconds)
        if not ok:
            self.errors[page] += 1
            if len(self.samples) < 10:
                self.samples.append(f"{page} {detail}"[:300])


async def _timed(stats: Stats, page: str, coro, ok_status=(200,)):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    try:
        resp = await coro
    except Exception as err:  # noqa: BLE001 - a transport error is a load error, recorded
        stats.add(page, time.perf_counter() - t0, False, f"{type(err).__name__}: {err}")
        return None
    ok = resp.status_code in ok_status
    stats.add(page, time.perf_counter() - t0, ok, f"{resp.status_code} {resp.text[:120]!r}")
    return resp


async def _login(client, stats: Stats, username: str) -> bool:  # noqa: ANN001
    page = await _timed(stats, "login", client.get("/accounts/login/"))
    if page is None:
        return False
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    resp = await _timed(stats, "login", client.post(
        "/accounts/login/", data={"username": username, "password": PASSWORD,
                                  "csrfmiddlewaretoken": m.group(1) if m else ""},
        headers={"Referer": str(client.base_url) + "/accounts/login/"}), ok_status=(302,))
    return resp is not None and resp.status_code == 302


async def _token(client, username: str) -> str:  # noqa: ANN001
    import httpx

    # A client without the session cookie: with one, DRF's session auth would demand a CSRF token.
    async with httpx.AsyncClient(base_url=client.base_url, timeout=60) as bare:
        resp = await bare.post("/api/auth/token/", data={"username": username, "password": PASSWORD})
    resp.raise_for_status()
    return resp.json()["token"]


async def browser(client, api: dict[str, str], seed: dict[str, Any], stats: Stats,  # noqa: ANN001
                  until: list[float], think: tuple[float, float], rng: random.Random) -> None:
    while time.monotonic() < until[0]:
        patient = rng.choice(seed["patients"])
        draw = rng.choice(seed["draws"])
        page, url, headers = rng.choice([
            ("patient_list", "/", None), ("patient", f"/patients/{patient}/", None),
            ("draw", f"/draws/{draw}/", None), ("review", "/review/", None), ("cohort", "/cohort/", None),
            ("models", "/models/", None), ("api_patients", "/api/patients/", api),
            ("api_draw", f"/api/draws/{draw}/", api), ("api_draw_events", f"/api/draws/{draw}/events/", api),
        ])
        await _timed(stats, page, client.get(url, headers=headers))
        await asyncio.sleep(rng.uniform(*think))


def _gallery(n: int, seed: int) -> bytes:
    import numpy as np
    import tifffile

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            yy, xx = np.mgrid[:64, :64]
            r2 = (yy - 32) ** 2 + (xx - 32) ** 2
            img = rng.normal(200, 20, (3, 64, 64))
            img[0] += 3000 * (r2 < 16)
            img[1] += 2000 * (r2 < 49) * (i % 2)
            tif = io.BytesIO()
            tifffile.imwrite(tif, np.clip(img, 0, 65535).astype("uint16"), photometric="minisblack")
            zf.writestr(f"event{i:04d}.tif", tif.getvalue())
    return buf.getvalue()


async def uploader(client, headers: dict[str, str], seed: dict[str, Any], stats: Stats,  # noqa: ANN001
                   until: list[float], n_events: int, rng: random.Random) -> None:
    k = 0
    while time.monotonic() < until[0]:
        data = _gallery(n_events, rng.randrange(1 << 30))
        draw = rng.choice(seed["draws"])
        t0 = time.monotonic()
        resp = await _timed(stats, "upload_post", client.post(
            f"/api/draws/{draw}/uploads/", headers=headers, data={"channels": "DAPI,CK,CD45", "kind": "events"},
            files={"file": (f"gallery{k}.zip", data, "application/zip")}), ok_status=(201, 202))
        k += 1
        if resp is None or resp.status_code not in (201, 202):
            await asyncio.sleep(1)
            continue
        stats.uploads["posted"] += 1
        upload_id = resp.json()["id"]
        while True:
            await asyncio.sleep(1)
            poll = await _timed(stats, "upload_status", client.get(f"/api/uploads/{upload_id}/", headers=headers))
            status = poll.json().get("status") if poll is not None and poll.status_code == 200 else None
            if status in ("done", "failed"):
                stats.uploads[status] += 1
                if status == "done":
                    stats.upload_s.append(time.monotonic() - t0)
                else:
                    stats.add("upload_result", 0.0, False, poll.json().get("error", ""))
                break
            if time.monotonic() > until[0] + 120:  # the queue is not drained after the run: stop waiting
                break


async def run_load(base: str, seed: dict[str, Any], args: argparse.Namespace) -> tuple[Stats, float]:
    """Log everyone in first (timed as ``login``), then run the timed window."""
    import httpx

    stats = Stats()
    think = tuple(float(x) for x in args.think.split("-"))
    users = seed["users"]
    n = args.users + args.uploaders
    clients = [httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=2))
               for _ in range(n)]
    try:
        names = [users[i % len(users)] for i in range(n)]
        logged = await asyncio.gather(*(_login(c, stats, u) for c, u in zip(clients[:args.users], names, strict=False)))
        if not all(logged):
            raise RuntimeError(f"{logged.count(False)} logins failed: {stats.samples[:3]}")
        tokens = await asyncio.gather(*(_token(c, u) for c, u in zip(clients, names, strict=True)))
        auth = [{"Authorization": f"Token {t}"} for t in tokens]
        start = time.monotonic()
        until = [start + args.duration]
        tasks = [browser(clients[i], auth[i], seed, stats, until, think, random.Random(i))
                 for i in range(args.users)]
        tasks += [uploader(clients[i], auth[i], seed, stats, until, args.upload_events, random.Random(1000 + i))
                  for i in range(args.users, n)]
        await asyncio.gather(*tasks)
        return stats, time.monotonic() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--uploaders", type=int, default=5)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--think", default="0.5-2.0", help="seconds between two pages, uniform range lo-hi")
    ap.add_argument("--upload-events", type=int, default=20)
    ap.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--events", type=int, default=60, help="cell events per seeded draw")
    ap.add_argument("--keep-database", action="store_true")
    args = ap.parse_args(argv)

    media = Path(tempfile.mkdtemp(prefix="ctc-load-media-"))
    queue = f"load-{uuid.uuid4().hex[:8]}"
    log(f"load: fresh database {DB_NAME}, seeding {args.patients} patients x {args.draws} draws x {args.events} events")
    env = _stack_env(_fresh_database(DB_NAME), media, queue)
    weights_env, weights_note = _weights_env(media)
    env.update(weights_env)
    t0 = time.monotonic()
    seed = _seed(env, args.patients, args.draws, args.events)
    log(f"load: seeded in {time.monotonic() - t0:.1f}s; starting gunicorn ({args.workers}x{args.threads}) + worker")
    port = _free_port()
    stack = Stack(env, port, args.workers, args.threads)
    stack.start()
    try:
        log(f"load: {args.users} browsing + {args.uploaders} uploading for {args.duration:.0f}s")
        stats, elapsed = asyncio.run(run_load(f"http://127.0.0.1:{port}", seed, args))
        alive = stack.alive()
    finally:
        stack.stop()
        if not args.keep_database:
            import psycopg
            from psycopg import sql

            with psycopg.connect(f"{PG_BASE.rstrip('/')}/postgres", autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
        import shutil

        shutil.rmtree(media, ignore_errors=True)

    pages = {
        page: {"n": len(ts), "p50_ms": round(percentile(ts, 50) * 1000, 1),
               "p95_ms": round(percentile(ts, 95) * 1000, 1), "max_ms": round(max(ts) * 1000, 1),
               "errors": stats.errors.get(page, 0)}
        for page, ts in sorted(stats.times.items()) if ts
    }
    total = sum(len(ts) for ts in stats.times.values())
    errors = sum(stats.errors.values())
    result = {
        "benchmark": "load",
        "config": {"users": args.users, "uploaders": args.uploaders, "duration_s": args.duration,
                   "think_s": args.think, "gunicorn_workers": args.workers, "gunicorn_threads": args.threads,
                   "upload_events": args.upload_events, "weights": weights_note,
                   "seeded": {"patients": args.patients, "draws": args.patients * args.draws,
                              "events": args.patients * args.draws * args.events}},
        "machine": machine(),
        "pages": pages,
        "uploads": {**stats.uploads,
                    "p50_s": round(percentile(stats.upload_s, 50), 2) if stats.upload_s else None,
                    "p95_s": round(percentile(stats.upload_s, 95), 2) if stats.upload_s else None},
        "requests": total,
        "errors": errors,
        "rps": round(total / elapsed, 1),
        "server_alive_after": alive,
        "error_samples": stats.samples,
        "logs": str(stack.logdir),
    }
    emit(result)
    return 0 if errors == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
