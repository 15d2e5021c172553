"""The local state the loaded settings need, created by the commands that need it.

Importing settings creates nothing. ``prepare(settings)`` makes the folders the settings point
at (``LOCAL_STATE_DIRS``: the SQLite database's folder, the file-system broker's folders) and,
for ``config.settings.local`` without ``SECRET_KEY`` in the environment, the per-checkout key
(``SECRET_KEY_FILE``). Called by ``manage.py``, ``scripts/run_local.py`` (``make run``),
``config/wsgi.py`` (gunicorn) and a starting worker or beat (``config/celery_app.py``). With
PostgreSQL, Redis and ``SECRET_KEY`` from the environment (production, compose) it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any


def prepare(settings: Any) -> None:
    """Create what ``settings`` (``django.conf.settings``, configured, before or after
    ``django.setup()``) needs on disk; idempotent, and safe when several processes race."""
    for folder in getattr(settings, "LOCAL_STATE_DIRS", ()):
        Path(folder).mkdir(parents=True, exist_ok=True)
    key_file = getattr(settings, "SECRET_KEY_FILE", None)
    if key_file is not None:
        settings.SECRET_KEY = ensure_secret_key(Path(key_file))


def ensure_secret_key(path: Path) -> str:
    """The key stored at ``path``, written first if absent (owner-only, never half-written: the
    first of several racing processes wins and the others read its key)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".secret_key-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(50))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: a rename (the last racer wins)
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path.read_text().strip()
