"""Settings modules (the cookiecutter-django layout); every command names the one it uses.

- ``config.settings.base``: what every deployment shares, from the environment; never used alone.
- ``config.settings.local``: ``make run``, ``make worker``, ``manage.py``, developers, compose by
  default. The embedded default (SQLite + a file-system broker in ``VAR_DIR``) and a per-checkout
  secret key. The default of ``manage.py``, ``config/wsgi.py``, ``config/celery_app.py`` and
  ``scripts/run_local.py``.
- ``config.settings.production``: the Docker image and any TLS-fronted deployment; refuses to
  load without ``SECRET_KEY`` and ``ALLOWED_HOSTS``.
- ``config.settings.test``: pytest (``pyproject.toml``).

Importing any of them creates no file or folder; ``config.local_state.prepare`` creates what the
loaded settings need, in the commands that need it.
"""

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") == __name__:
    # Before the split this package was one module; this one holds no settings of its own.
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "DJANGO_SETTINGS_MODULE=config.settings names no settings: use config.settings.local, "
        "config.settings.production or config.settings.test"
    )
