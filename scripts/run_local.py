"""`make run`'s last step: web server, worker and demo seeding, under a small supervisor.

The server and worker start first, so the dashboard is up at once and the worker
classifies each demo patient's imaging as soon as it is seeded. A worker that dies (an
out-of-memory kill, a crash in native code) is started again after a back-off (1 s,
doubling to 30 s; reset once it has run a minute), logged, and the web server keeps serving;
the new worker reclaims the dead one's job at start (patients.pipeline.reclaim), so no beat
runs here. Only the web server dying stops everything. Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


# gunicorn lets requests in flight finish for this long on SIGTERM; the script waits longer,
# then kills whatever is left of each process group (so no orphaned gunicorn worker keeps
# the port bound after Ctrl-C).
GRACE_S = 10
WAIT_S = GRACE_S + 15


#: Back-off before restarting a dead worker: doubles from BACKOFF_MIN_S up to BACKOFF_MAX_S, and
#: returns to BACKOFF_MIN_S once a worker has stayed up for STABLE_S.
BACKOFF_MIN_S = float(os.environ.get("RUN_LOCAL_BACKOFF_MIN_S", "1"))
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0


def log(message: str) -> None:
    print(f"  [run_local {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Supervised:
    """One child that is started again, after a growing back-off, whenever it dies."""

    def __init__(self, name: str, argv: list[str], spawn: dict) -> None:
        self.name, self.argv, self.spawn = name, argv, spawn
        self.backoff = BACKOFF_MIN_S
        self.restarts = 0
        self.restart_at: float | None = None
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        self.started = time.monotonic()
        return subprocess.Popen(self.argv, **self.spawn)

    def tend(self) -> None:
        """Call often: notices a death, schedules the restart, and performs it when due."""
        now = time.monotonic()
        if self.restart_at is None and self.proc.poll() is not None:
            # Whatever the dead worker's pool left behind in its group goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if now - self.started >= STABLE_S:
                self.backoff = BACKOFF_MIN_S
            log(f"{self.name} exited (exit {self.proc.returncode}); restarting in {self.backoff:g} s. "
                "The web server keeps serving.")
            self.restart_at = now + self.backoff
            self.backoff = min(BACKOFF_MAX_S, self.backoff * 2)
        elif self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.restarts += 1
            self.proc = self._start()
            log(f"{self.name} restarted (pid {self.proc.pid}, restart {self.restarts}).")


def prepare_local_state(settings_module: str) -> None:
    """The embedded default's folders and the per-checkout key (config/local_state.py)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from django.conf import settings

    from config.local_state import prepare

    prepare(settings)


def main() -> int:
    # Every child (gunicorn, both workers, the seeding) runs with the local settings unless told
    # otherwise; the folders and key they share are made once, here, before any of them starts.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    prepare_local_state(env["DJANGO_SETTINGS_MODULE"])
    # Each child leads its own process group: the terminal's Ctrl-C reaches only this script,
    # which stops the children in order and can then clean up their groups as a whole.
    spawn = {"cwd": ROOT, "env": env, "start_new_session": True}
    # `-Q ctc` serves the bulk lane (ctc-bulk) too, after the interactive one (config/celery_app.py);
    # the worker reclaims orphaned jobs itself, so there is no --beat.
    worker = Supervised(
        "celery worker",
        [str(BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1",
         "-Q", env.get("CELERY_QUEUE", "ctc")],
        spawn,
    )
    # Lab-model training and shadow runs have their own queue (patients/training_tasks.py) and
    # their own worker, so a training of several minutes never holds up a clinic's upload.
    trainer = Supervised(
        "training worker",
        [str(BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1",
         "-Q", env.get("CELERY_TRAINING_QUEUE", "training"), "-n", "training@%h"],
        spawn,
    )
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{PORT}", "--workers", "3",
         "--threads", "2", "--timeout", "120", "--graceful-timeout", str(GRACE_S), "--keep-alive", "30",
         "--access-logfile", "-"],
        **spawn,
    )
    # The seeder stays until the reviewed demo patients are classified, then reviews their cells
    # (patients/demo.py review_seeded), so a lab-model training can start from the Models page.
    seeder = subprocess.Popen([sys.executable, "manage.py", "seed_demo", "--review-wait", "3600"], **spawn)
    print(f"\n  CTC Monitor: http://{HOST}:{PORT}/  (local demo only)"
          "\n    sign in as demo / demo-password        (oncologist and trial coordinator: patients, review)"
          "\n    or as      demo-admin / demo-password  (administrator: also models and lab-model training)"
          "\n  The demo cohort appears patient by patient while its imaging is classified. Ctrl-C stops.\n",
          flush=True)
    stopping = False

    def everything() -> list[subprocess.Popen]:
        return [worker.proc, trainer.proc, web, seeder]

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for p in everything():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    # A shell that starts this in the background (no job control) hands it SIGINT ignored,
    # and Python then keeps ignoring it: make Ctrl-C / `kill -INT` stop it in every case.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while not stopping and web.poll() is None:
            worker.tend()
            trainer.tend()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\n  Stopping the web server, the workers and the seeding ...", flush=True)
    finally:
        died = [web] if web.poll() is not None and not stopping else []
        stop()
        deadline = time.monotonic() + WAIT_S
        for p in everything():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            # Leftovers of the group (a gunicorn worker, a celery pool child) go too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    for p in died:
        print(f"  {Path(str(p.args[0])).name} stopped on its own (exit {p.returncode}).", file=sys.stderr)
    return 1 if died else 0


if __name__ == "__main__":
    sys.exit(main())
