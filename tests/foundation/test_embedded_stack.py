"""`make run`'s configuration end to end: no DATABASE_URL or REDIS_URL, so SQLite and kombu's
filesystem broker, with a real Celery worker process classifying the seeded demo imaging.

Everything runs in subprocesses with a private VAR_DIR, so the suite's PostgreSQL test
database and Redis are not involved (and cannot mask a break in the embedded default).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.worker, pytest.mark.slow]

PROBE = """
import json, django
from django.db.models import Count, Sum
django.setup()
from django.conf import settings
from django.contrib.auth import get_user_model
from patients.models import BloodDraw, CellEvent, DrawSummary, ImagingUpload, Patient
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "broker": settings.CELERY_BROKER_URL,
    "uploads": ImagingUpload.objects.count(),
    "statuses": sorted(set(ImagingUpload.objects.values_list("status", flat=True))),
    "errors": [e for e in ImagingUpload.objects.values_list("error", flat=True) if e],
    "draws": BloodDraw.objects.count(),
    "summaries": DrawSummary.objects.count(),
    "events": CellEvent.objects.count(),
    "summarised": DrawSummary.objects.aggregate(n=Sum("events_analysed"))["n"],
    "duplicates": CellEvent.objects.values("upload", "index").annotate(n=Count("pk")).filter(n__gt=1).count(),
    "uploads_without_events": ImagingUpload.objects.filter(events__isnull=True).count(),
    "versions": sorted(set(CellEvent.objects.values_list("upload__model_version", flat=True))),
    "demo_login": get_user_model().objects.get(username="demo").check_password("demo-password"),
    "outcome_patients": Patient.objects.filter(study_id__startswith="DEMO-S").count(),
}))
"""


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "TEST_DATABASE_NAME", "PRODUCTION"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1",
               CELERY_QUEUE="ctc")
    return env


def test_embedded_default_seeds_and_classifies_the_demo_with_a_real_worker(embedded_env, tmp_path):
    run = dict(cwd=ROOT, env=embedded_env, capture_output=True, text=True, timeout=300)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], check=True, **run)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1", "-Q", "ctc"],
        cwd=ROOT, env=embedded_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        # without the outcome cohort (120 more small uploads, seeded and classified the same way, and
        # tested on PostgreSQL in test_demo_seed): this test is about the embedded stack, not the cohort
        seeded = subprocess.run([sys.executable, "manage.py", "seed_demo", "--events-per-draw", "2", "--no-outcomes",
                                 "--wait", "240"], check=True, **{**run, "timeout": 400})
        assert "upload(s) queued" in seeded.stdout
        assert worker.poll() is None, "the worker died"
        probe = subprocess.run([sys.executable, "-c", PROBE], **run)
        assert probe.returncode == 0, probe.stderr[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
    state = json.loads(probe.stdout.strip().splitlines()[-1])
    worker_log = (tmp_path / "worker.log").read_text()
    assert state["engine"] == "django.db.backends.sqlite3"
    assert state["broker"].startswith("filesystem://")
    assert state["errors"] == [], state["errors"]
    assert state["statuses"] == ["done"], worker_log[-3000:]
    assert state["uploads"] == state["draws"] >= 20
    assert state["summaries"] == state["draws"]
    # One result set per upload, none duplicated, and the summaries count exactly those events.
    assert state["uploads_without_events"] == 0 and state["duplicates"] == 0
    assert state["events"] == state["summarised"] >= 2 * state["uploads"]
    assert len(state["versions"]) == 1 and state["versions"][0].startswith("1.")
    assert state["demo_login"] is True
    assert state["outcome_patients"] == 0  # --no-outcomes
    # The run's state lives in its VAR_DIR, not in the checkout (kombu's default control folder
    # would be ./control).
    assert (tmp_path / "var" / "ctc.sqlite3").exists()
    assert (tmp_path / "var" / "broker" / "control").is_dir()
    assert not (ROOT / "control").exists()
