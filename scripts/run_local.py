"""`make run`'s last step: the web server and a worker (with the periodic sweep), together.

Ctrl-C (or SIGTERM) stops both. Uses gunicorn when the platform has it, else runserver.
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
    procs = [
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
    print(f"\n  CTC Monitor: http://{HOST}:{PORT}/  (demo / demo-password, local demo only). Ctrl-C stops.\n",
          flush=True)

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
    return max((p.returncode or 0) for p in procs if p.returncode and p.returncode > 0) if any(
        p.returncode and p.returncode > 0 for p in procs) else 0


if __name__ == "__main__":
    sys.exit(main())
