"""`make run`'s last step serves the dashboard with a worker, restarts a worker that dies without
the web server noticing (the job it had is finished by the next one, exactly once, no beat), and
Ctrl-C stops all of it. The embedded default throughout: SQLite and the file-system broker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.worker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid`` (children re-parented to init
    once their parent died are caught by their process group instead, see below)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,pgid="], capture_output=True, text=True, check=True)
    rows = [tuple(int(x) for x in line.split()) for line in out.stdout.splitlines() if line.strip()]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp, _ in rows if pp in frontier} - found
        found |= frontier
    return found


def _still_alive(pids: set[int], groups: set[int]) -> dict[int, str]:
    """Live (not zombie) processes among ``pids`` or in ``groups``, with their command lines."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True)
    alive = {}
    for line in out.stdout.splitlines():
        pid, pgid, stat, args = line.split(None, 3)
        if (int(pid) in pids or int(pgid) in groups) and not stat.startswith("Z"):
            alive[int(pid)] = args
    return alive


def _db(var: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{var / 'ctc.sqlite3'}?mode=ro", uri=True, timeout=30)


def _running_upload(var: Path) -> tuple[int, int, dict] | None:
    """A demo upload the worker is in the middle of: (id, attempts, owner)."""
    with _db(var) as db:
        row = db.execute("SELECT id, attempts, owner FROM patients_imagingupload "
                         "WHERE status = 'running' AND progress > 5 AND owner IS NOT NULL LIMIT 1").fetchone()
    return (row[0], row[1], json.loads(row[2])) if row else None


def _upload_row(var: Path, pk: int) -> tuple[str, int]:
    with _db(var) as db:
        return db.execute("SELECT status, attempts FROM patients_imagingupload WHERE id = ?", [pk]).fetchone()


class _WebProbe(threading.Thread):
    """Asks for the login page every 0.3 s and counts the answers that were not 200."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.ok, self.failed, self.done = port, 0, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/accounts/login/", timeout=10).status
            except OSError as err:
                status = repr(err)
            if status == 200:
                self.ok += 1
            else:
                self.failed.append(status)
            time.sleep(0.3)


def _kill_the_worker_mid_job(var: Path, log: Path) -> tuple[int, int]:
    """SIGKILL the worker's whole process group (main + pool child, as an OOM kill of the
    machine's worker does) while it is in the middle of a demo upload; returns (upload, attempts)."""
    for _ in range(5):
        found = wait_for(lambda: _running_upload(var), timeout=180, interval=0.05,
                         what=f"a demo upload to be running:\n{log.read_text()[-2000:]}")
        pk, attempts, owner = found
        try:
            os.killpg(os.getpgid(owner["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            continue
        if _upload_row(var, pk) == ("running", attempts):
            return pk, attempts
    raise AssertionError("never caught the worker in the middle of a job")


def test_make_run_restarts_a_killed_worker_keeps_serving_and_ctrl_c_stops_all(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "TEST_DATABASE_NAME", "PRODUCTION"}}
    port = _free_port()
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(tmp_path / "var"), PORT=str(port),
               HOST="127.0.0.1")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    log = (tmp_path / "run.log").open("w")
    browser = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    # The script leads its own process group, as a terminal's foreground job does.
    script = subprocess.Popen([sys.executable, "scripts/run_local.py"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).status
            except OSError:
                time.sleep(1)
        assert status == 200, (tmp_path / "run.log").read_text()[-3000:]
        # A browser keeps its connection open between pages: a gunicorn worker holding one
        # is what outlived Ctrl-C before (orphaned once its arbiter was killed).
        browser = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        browser.request("GET", "/accounts/login/")
        assert browser.getresponse().read()

        # The worker dies mid-job: the supervisor restarts it, the web server never stops
        # answering, and the restarted worker finishes the job exactly once within 60 s.
        var = tmp_path / "var"
        probe = _WebProbe(port)
        probe.start()
        pk, attempts = _kill_the_worker_mid_job(var, tmp_path / "run.log")
        wait_for(lambda: "celery worker restarted" in (tmp_path / "run.log").read_text(), timeout=30,
                 what="the supervisor to restart the worker")
        restarted = time.monotonic()
        wait_for(lambda: _upload_row(var, pk)[0] == "done", timeout=90, interval=0.2,
                 what=f"upload {pk} to be finished by the new worker")
        assert time.monotonic() - restarted <= 60
        assert _upload_row(var, pk) == ("done", attempts + 1)
        with _db(var) as db:
            n, distinct, top = db.execute("SELECT COUNT(*), COUNT(DISTINCT \"index\"), MAX(\"index\") "
                                          "FROM patients_cellevent WHERE upload_id = ?", [pk]).fetchone()
        assert n == distinct == top + 1 > 0, "results duplicated or lost"
        probe.done.set()
        probe.join(timeout=15)
        assert probe.failed == [] and probe.ok > 5, probe.failed
        assert "exited (exit -9); restarting in" in (tmp_path / "run.log").read_text()

        children = _descendants(script.pid)
        groups = {int(subprocess.run(["ps", "-o", "pgid=", "-p", str(c)], capture_output=True, text=True).stdout
                      or 0) for c in children} - {0, os.getpgrp()}
        assert len(children) >= 4  # celery (+ pool child), gunicorn (+ workers), the seeder

        os.killpg(script.pid, signal.SIGINT)  # what Ctrl-C does: SIGINT to the foreground group
        assert script.wait(timeout=60) == 0
    finally:
        if script.poll() is None:
            script.kill()
        log.close()
        browser.close()
    time.sleep(1)
    assert _still_alive(children, groups) == {}, "processes of make run outlived Ctrl-C"
    # The port is free again for the next `make run`: bound the way gunicorn binds it
    # (SO_REUSEADDR, so the closed connections' TIME_WAIT does not count; a process still
    # listening on it does).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
