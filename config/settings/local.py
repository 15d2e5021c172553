"""Local settings: ``make run``, ``manage.py``, ``make worker`` and developers (the default of every
entry point: ``manage.py``, ``config/wsgi.py``, ``config/celery_app.py``, ``scripts/run_local.py``).

Everything of ``base`` (the embedded default without ``DATABASE_URL`` / ``REDIS_URL``), and a secret
key that needs no configuration: ``SECRET_KEY`` from the environment, else the per-checkout key in
``VAR_DIR/secret_key`` (git ignores ``var/``; a fixed key here would be a secret in the repository).
``config.local_state.prepare`` writes that file the first time a command needs it; importing this
module writes nothing.
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import VAR_DIR, env

if env.bool("PRODUCTION", default=False):
    # PRODUCTION=1 used to harden config.settings with a partial copy of the production block (no
    # CSP, short passwords, no idle timeout, any host): refuse rather than run unhardened.
    raise ImproperlyConfigured(
        "PRODUCTION=1 is no longer read: set DJANGO_SETTINGS_MODULE=config.settings.production"
    )

SECRET_KEY = env("SECRET_KEY", default="")
#: The per-checkout key's file, when the environment gives no key (config.local_state.prepare).
SECRET_KEY_FILE = None if SECRET_KEY else VAR_DIR / "secret_key"
if SECRET_KEY_FILE is not None:
    try:
        SECRET_KEY = SECRET_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        # Nothing has prepared this checkout yet (a script or shell that set Django up itself):
        # a key for this process only. The commands that serve or share state (manage.py,
        # make run, gunicorn, a worker) call prepare, which writes the file and uses it.
        SECRET_KEY = secrets.token_urlsafe(50)
