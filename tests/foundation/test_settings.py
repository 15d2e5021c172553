"""Settings come from the environment; with none set, the embedded default serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import json, django; from django.conf import settings as s; django.setup();"
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']),"
    "'broker': s.CELERY_BROKER_URL, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, 'media': str(s.MEDIA_ROOT),"
    "'vt': s.CELERY_BROKER_TRANSPORT_OPTIONS.get('visibility_timeout'), 'limit': s.CELERY_TASK_TIME_LIMIT,"
    "'acks_late': s.CELERY_TASK_ACKS_LATE, 'prefetch': s.CELERY_WORKER_PREFETCH_MULTIPLIER,"
    "'accept': s.CELERY_ACCEPT_CONTENT}))"
)
KEYS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "MEDIA_ROOT", "PRODUCTION")


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS}
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_embedded_default_needs_no_server():
    s = probe()
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["broker"].startswith("filesystem://")
    assert s["debug"] is False


def test_environment_selects_postgres_and_redis():
    s = probe(DATABASE_URL="postgres://u@db.example:5432/ctc", REDIS_URL="redis://cache.example:6379/1",
              DEBUG="1", ALLOWED_HOSTS="ctc.example,localhost", MEDIA_ROOT="/srv/media", SECRET_KEY="x" * 50)
    assert s["engine"] == "django.db.backends.postgresql" and s["name"] == "ctc"
    assert s["broker"] == "redis://cache.example:6379/1"
    assert s["debug"] is True and s["hosts"] == ["ctc.example", "localhost"] and s["media"] == "/srv/media"


def test_celery_is_json_only_acks_late_prefetch_one_and_visibility_above_longest_job():
    s = probe(REDIS_URL="redis://127.0.0.1:6379/0")
    assert s["accept"] == ["json"]
    assert s["acks_late"] is True and s["prefetch"] == 1
    assert s["vt"] > s["limit"]


def test_production_refuses_to_start_without_a_secret_key():
    clean = {k: v for k, v in os.environ.items() if k not in KEYS}
    clean.update(PRODUCTION="1", DJANGO_SETTINGS_MODULE="config.settings")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True)
    assert out.returncode != 0 and "SECRET_KEY" in out.stderr
