"""Test settings (pytest: ``DJANGO_SETTINGS_MODULE = "config.settings.test"`` in pyproject.toml):
the real services (PostgreSQL, Redis) unless the environment names others."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ctc")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("DEBUG", "0")

from config.settings.base import *  # noqa: E402,F403
from config.settings.base import DATABASES, env  # noqa: E402

# Signs nothing that outlives the test process.
SECRET_KEY = env("SECRET_KEY", default="tests-only-not-a-secret")
# Parallel test runs on one server (CI, several developers) need distinct names.
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default="test_ctc")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
AXES_ENABLED = os.environ.get("AXES_ENABLED_IN_TESTS", "0") == "1"

# One process, one cache: nothing kept in the shared Redis between runs (throttle counts,
# page caches) can leak from one test, or one CI run, into the next.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ctc-tests"}}
