"""`make run`'s last step: web server, worker (with the periodic sweep) and demo seeding.

The server and worker start first, so the dashboard is up at once and the worker
classifies each demo patient's imaging as soon as it is seeded. Ctrl-C (or SIGTERM)
stops everything.
"""

from __future__ import annotations

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


def main() -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    var = ROOT / "var"
    var.mkdir(exist_ok=True)
    services = [
        subprocess.Popen(
            [str(BIN / "celery"), "-A", "config", "worker", "--beat", "--schedule", str(var / "celerybeat-schedule"),
             "--loglevel=INFO", "--concurrency=1", "-Q", env.get("CELERY_QUEUE", "ctc")],
            cwd=ROOT, env=env,
        ),
        subprocess.Popen(
            [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{PORT}", "--workers", "3",
             "--threads", "2", "--timeout", "120", "--access-logfile", "-"],
            cwd=ROOT, env=env,
        ),
    ]
    seeder = subprocess.Popen([sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=env)
    print(f"\n  CTC Monitor: http://{HOST}:{PORT}/  (sign in as demo / demo-password: local demo only)."
          "\n  The demo cohort appears patient by patient while its imaging is classified. Ctrl-C stops.\n",
          flush=True)
    everything = [*services, seeder]

    def stop(*_: object) -> None:
        for p in everything:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in services):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        deadline = time.monotonic() + 20
        for p in everything:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
    failed = [p.returncode for p in services if p.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
