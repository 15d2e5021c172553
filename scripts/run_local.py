"""`make run`'s last step: web server, worker (with the periodic sweep) and demo seeding.

The server and worker start first, so the dashboard is up at once and the worker
classifies each demo patient's imaging as soon as it is seeded. Ctrl-C (or SIGTERM)
stops everything.
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


def main() -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    var = Path(env.get("VAR_DIR", ROOT / "var"))
    var.mkdir(parents=True, exist_ok=True)
    # Each child leads its own process group: the terminal's Ctrl-C reaches only this script,
    # which stops the children in order and can then clean up their groups as a whole.
    spawn = {"cwd": ROOT, "env": env, "start_new_session": True}
    services = [
        subprocess.Popen(
            [str(BIN / "celery"), "-A", "config", "worker", "--beat", "--schedule", str(var / "celerybeat-schedule"),
             "--loglevel=INFO", "--concurrency=1", "-Q", env.get("CELERY_QUEUE", "ctc")],
            **spawn,
        ),
        subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{PORT}", "--workers", "3",
             "--threads", "2", "--timeout", "120", "--graceful-timeout", str(GRACE_S), "--keep-alive", "30",
             "--access-logfile", "-"],
            **spawn,
        ),
    ]
    seeder = subprocess.Popen([sys.executable, "manage.py", "seed_demo"], **spawn)
    print(f"\n  CTC Monitor: http://{HOST}:{PORT}/  (sign in as demo / demo-password: local demo only)."
          "\n  The demo cohort appears patient by patient while its imaging is classified. Ctrl-C stops.\n",
          flush=True)
    everything = [*services, seeder]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for p in everything:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    # A shell that starts this in the background (no job control) hands it SIGINT ignored,
    # and Python then keeps ignoring it: make Ctrl-C / `kill -INT` stop it in every case.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while all(p.poll() is None for p in services):
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\n  Stopping the web server, the worker and the seeding ...", flush=True)
    finally:
        died = [p for p in services if p.poll() is not None] if not stopping else []
        stop()
        deadline = time.monotonic() + WAIT_S
        for p in everything:
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
