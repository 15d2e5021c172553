"""`make run`'s last step serves the dashboard with a worker, and Ctrl-C stops all of it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


def test_ctrl_c_stops_server_worker_and_seeding_and_frees_the_port(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "TEST_DATABASE_NAME", "PRODUCTION"}}
    port = _free_port()
    env.update(DJANGO_SETTINGS_MODULE="config.settings", VAR_DIR=str(tmp_path / "var"), PORT=str(port),
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
        time.sleep(3)  # the worker and the seeding are under way
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
