"""Faults with real processes: a worker SIGKILLed mid-job, the broker down when an upload
arrives, PostgreSQL dropping every connection. Each time the upload must end done, with
exactly one set of results, and nobody has to do anything by hand.

The broker test runs its own throwaway Redis on a free port (never the shared one); the
database test terminates the test database's backends with ``pg_terminate_backend``, which
is what clients see when PostgreSQL restarts.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest
from django.db import close_old_connections, connection
from django.test import Client

from patients.models import CellEvent, DrawSummary, ImagingUpload, UploadStatus
from patients.uploads import UploadRequest, create_upload
from tests.conftest import ROOT, _database_url, wait_for
from tests.security.conftest import CHANNELS, event_array, tiff_bytes, upload_file, zip_bytes

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FAST_SWEEP = {"UPLOAD_STALE_AFTER_S": "3", "UPLOAD_SWEEP_INTERVAL_S": "2"}


def _gallery(n: int) -> bytes:
    return zip_bytes({f"event{i:04d}.tif": tiff_bytes(event_array(seed=i)) for i in range(n)})


def _upload(draw, user, n: int) -> ImagingUpload:
    return create_upload(draw, UploadRequest([upload_file("gallery.zip", _gallery(n))], CHANNELS), user)


def _final(upload_id: int, timeout: float = 240) -> ImagingUpload:
    wait_for(lambda: ImagingUpload.objects.get(pk=upload_id).status in (UploadStatus.DONE, UploadStatus.FAILED),
             timeout=timeout, what=f"upload {upload_id} to finish")
    return ImagingUpload.objects.get(pk=upload_id)


def _assert_one_set_of_results(up: ImagingUpload, n: int) -> None:
    assert up.status == UploadStatus.DONE, up.error
    events = CellEvent.objects.filter(upload=up)
    assert events.count() == n, f"{events.count()} events for {n} images: results duplicated or lost"
    assert sorted(events.values_list("index", flat=True)) == list(range(n))
    done_events = CellEvent.objects.filter(draw=up.draw, upload__status=UploadStatus.DONE).count()
    assert DrawSummary.objects.get(draw=up.draw).events_analysed == done_events


# --- 1. worker killed mid-job -----------------------------------------------------------------


def test_every_worker_killed_mid_job_then_a_new_worker_finishes_it_exactly_once_without_beat(
        worker_factory, classifier_env, alice, draw):
    """SIGKILL of the only worker mid-job, then `make worker`: the new worker sees at start that
    the job's owner (host, pid, start time) is gone and takes it back; no beat, no sweep call.
    Redis + PostgreSQL (the embedded default is covered by tests/foundation/test_run_local.py)."""
    first = worker_factory(extra_env=classifier_env)
    n = 120  # a few seconds of work even on a quiet machine: room to kill it in the middle
    up = _upload(draw, alice, n)
    # Kill it once the job is truly under way (claimed, model loaded, progress written).
    wait_for(lambda: ImagingUpload.objects.filter(pk=up.pk, status=UploadStatus.RUNNING, progress__gt=5).exists(),
             timeout=180, interval=0.05, what="the job to start")
    first.kill()  # SIGKILL to the whole process group: the pool child dies with it
    up.refresh_from_db()
    assert up.status == UploadStatus.RUNNING and not CellEvent.objects.filter(upload=up).exists()
    assert up.owner and up.owner["pid"] and up.owner["worker"].startswith("test-"), up.owner

    worker_factory(extra_env=classifier_env)  # no --beat; nothing else is sent
    started = time.monotonic()
    up = _final(up.pk, timeout=60)
    assert time.monotonic() - started <= 60
    _assert_one_set_of_results(up, n)
    assert up.attempts == 2
    time.sleep(2)  # nothing arrives late and duplicates
    _assert_one_set_of_results(ImagingUpload.objects.get(pk=up.pk), n)


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, from /proc (no procps needed)."""
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after "(comm)": state, ppid, ...
            out.append(int(stat.parent.name))
    return out


def test_a_pool_child_killed_mid_job_like_the_oom_killer_does_is_finished_exactly_once(worker_factory,
                                                                                        classifier_env, alice, draw):
    """Only the pool child dies (the main process lives on): Celery re-delivers the message at
    once (reject on worker lost). That delivery finds the job still running (a no-op); the main
    process's reclaim loop sees the owner's process gone and re-queues it; exactly once."""
    import os
    import signal

    worker = worker_factory(extra_env={**classifier_env, "UPLOAD_RECLAIM_INTERVAL_S": "2"})
    n = 120
    up = _upload(draw, alice, n)
    wait_for(lambda: ImagingUpload.objects.filter(pk=up.pk, status=UploadStatus.RUNNING, progress__gt=5).exists(),
             timeout=180, interval=0.05, what="the job to start")
    children = _children(worker.proc.pid)
    assert children, "no pool child found"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    assert worker.proc.poll() is None, "the main worker process must survive its child"
    # No sweep is sent: the main process's reclaim loop (every 2 s here) sees the owner gone.
    up = _final(up.pk, timeout=60)
    _assert_one_set_of_results(up, n)
    assert up.attempts == 2


# --- 2. broker down ---------------------------------------------------------------------------


def _free_port(start: int = 6390) -> int:
    for port in range(start, start + 50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for a throwaway redis")


class ThrowawayRedis:
    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                        "--daemonize", "yes", "--bind", "127.0.0.1"], check=True, capture_output=True)
        wait_for(lambda: self.ping(), timeout=20, what="throwaway redis")

    def _client(self):  # noqa: ANN202
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def ping(self) -> bool:
        try:
            return bool(self._client().ping())
        except Exception:  # noqa: BLE001 - down is down
            return False

    def stop(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):  # the server closes the connection as it goes
            self._client().shutdown(nosave=True)
        wait_for(lambda: not self.ping(), timeout=20, what="throwaway redis to stop")


@pytest.fixture
def throwaway_redis():
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    r = ThrowawayRedis()
    r.start()
    yield r
    if r.ping():
        r.stop()


_WEB_UPLOAD = textwrap.dedent("""
    import sys, time
    import django
    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile
    from patients.models import BloodDraw
    from patients.uploads import UploadRequest, create_upload
    from django.contrib.auth import get_user_model
    data = open(sys.argv[1], "rb").read()
    t = time.monotonic()
    up = create_upload(BloodDraw.objects.get(pk=int(sys.argv[2])),
                       UploadRequest([SimpleUploadedFile("gallery.zip", data)], "DAPI,CK,CD45"),
                       get_user_model().objects.get(username="alice"))
    print(f"ACCEPTED {up.pk} {up.status} {time.monotonic() - t:.2f}s")
""")


def test_an_upload_arriving_while_the_broker_is_down_is_accepted_and_processed_when_it_is_back(
        worker_factory, classifier_env, throwaway_redis, alice, draw, tmp_path):
    env = {**classifier_env, **FAST_SWEEP, "REDIS_URL": throwaway_redis.url}
    worker = worker_factory(extra_env=env, beat=True)  # beat runs the stale sweep every 2 s
    throwaway_redis.stop()

    # The web side, with the broker down: the same settings as the worker, in its own process.
    archive = tmp_path / "gallery.zip"
    archive.write_bytes(_gallery(3))
    web = subprocess.run([sys.executable, "-c", _WEB_UPLOAD, str(archive), str(draw.pk)], cwd=ROOT, timeout=120,
                         capture_output=True, text=True, env=worker.env())
    assert web.returncode == 0, web.stderr[-3000:]
    line = next(x for x in web.stdout.splitlines() if x.startswith("ACCEPTED"))
    upload_id = int(line.split()[1])
    assert line.split()[2] == "queued"
    assert "broker unavailable" in web.stderr  # logged for the operator
    time.sleep(4)
    assert ImagingUpload.objects.get(pk=upload_id).status == UploadStatus.QUEUED  # nothing lost, nothing run

    throwaway_redis.start()  # the broker is back; the worker reconnects, beat's sweep re-queues
    up = _final(upload_id, timeout=180)
    _assert_one_set_of_results(up, 3)
    assert worker.proc.poll() is None


# --- 3. PostgreSQL drops every connection (a restart, as clients see it) ------------------------


def _terminate_test_db_backends() -> int:
    with psycopg.connect(_database_url().rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()",
                            [connection.settings_dict["NAME"]]).fetchall()
    return len(rows)


def test_the_web_and_the_worker_recover_when_postgresql_drops_all_connections(worker_factory, classifier_env,
                                                                              alice, draw):
    worker_factory(extra_env={**classifier_env, **FAST_SWEEP})
    warm = _final(_upload(draw, alice, 2).pk)  # the worker now holds a persistent connection
    assert warm.status == UploadStatus.DONE
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    assert client.get(f"/api/draws/{draw.pk}/").status_code == 200

    # Idle connections die (the web's and the worker's): the next request and task must just work.
    assert _terminate_test_db_backends() >= 1
    # Django's WSGI handler runs close_old_connections on request_started (the test client skips
    # that signal); with CONN_HEALTH_CHECKS the dead connection is then noticed and replaced.
    close_old_connections()
    assert client.get(f"/api/draws/{draw.pk}/").status_code == 200
    up = _final(_upload(draw, alice, 3).pk, timeout=120)
    _assert_one_set_of_results(up, 3)

    # Connections die again in the middle of a job: the task puts the upload back and retries.
    n = 40
    mid = _upload(draw, alice, n)
    wait_for(lambda: ImagingUpload.objects.filter(pk=mid.pk, status=UploadStatus.RUNNING).exists(),
             timeout=120, interval=0.05, what="the job to start")
    _terminate_test_db_backends()
    connection.close()
    mid = _final(mid.pk, timeout=180)
    _assert_one_set_of_results(mid, n)
    assert client.get("/api/patients/").status_code == 200
