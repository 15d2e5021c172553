"""Shared fixtures: the alice/bob/charlie cast and a real Celery worker process.

alice (oncologist) and bob (reviewer) share a care team; charlie is in another
team and must never see their patients.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from patients.models import Role
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
CTC_DEV = ROOT.parent / "shared" / "data" / "ctc-dev"

# One queue per test session, so parallel test runs on one Redis never steal jobs.
TEST_QUEUE = f"test-{uuid.uuid4().hex[:10]}"
TEST_MEDIA = Path(tempfile.mkdtemp(prefix="ctc-test-media-"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_queue_and_media() -> Iterator[None]:
    from config.celery_app import app

    settings.CELERY_TASK_DEFAULT_QUEUE = TEST_QUEUE
    app.conf.task_default_queue = TEST_QUEUE
    settings.MEDIA_ROOT = TEST_MEDIA
    yield
    shutil.rmtree(TEST_MEDIA, ignore_errors=True)
    if settings.REDIS_URL:  # drop what no worker consumed, so Redis does not fill up across runs
        import redis

        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(settings.REDIS_URL).delete(TEST_QUEUE)


@pytest.fixture
def team(db):
    return factories.CareTeamFactory(name="Breast unit")


@pytest.fixture
def other_team(db):
    return factories.CareTeamFactory(name="Colorectal unit")


@pytest.fixture
def alice(team):
    user = factories.UserFactory(username="alice")
    factories.MembershipFactory(team=team, user=user, role=Role.ONCOLOGIST)
    return user


@pytest.fixture
def bob(team):
    user = factories.UserFactory(username="bob")
    factories.MembershipFactory(team=team, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def charlie(other_team):
    user = factories.UserFactory(username="charlie")
    factories.MembershipFactory(team=other_team, user=user, role=Role.ONCOLOGIST)
    return user


@pytest.fixture
def olga(team, other_team):
    """An oncologist of other_team (team A) who is only a reviewer of team (B, alice's): rights are
    per care team (patients.roles.can_on)."""
    user = factories.UserFactory(username="olga")
    factories.MembershipFactory(team=other_team, user=user, role=Role.ONCOLOGIST)
    factories.MembershipFactory(team=team, user=user, role=Role.REVIEWER)
    return user


@pytest.fixture
def patient(team):
    return factories.PatientFactory(care_team=team)


@pytest.fixture
def draw(patient):
    return factories.BloodDrawFactory(patient=patient)


def _database_url() -> str:
    s = connection.settings_dict
    port = s.get("PORT") or 5432
    return f"postgres://{s.get('USER') or 'postgres'}@{s.get('HOST') or '127.0.0.1'}:{port}/{s['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` subprocess bound to the test database and queue."""

    def __init__(self, extra_env: dict[str, str] | None = None, beat: bool = False) -> None:
        self.extra_env = extra_env or {}
        self.beat = beat
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="ctc-worker-", suffix=".log")[1])

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=_database_url(),
            REDIS_URL=settings.REDIS_URL,
            CELERY_QUEUE=TEST_QUEUE,
            MEDIA_ROOT=str(TEST_MEDIA),
            CLASSIFIER_DEVICE="cpu",
            DJANGO_SETTINGS_MODULE="config.settings.local",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=INFO", "--concurrency=1",
               "--pool=prefork", "-Q", TEST_QUEUE, "-n", f"test-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
               "--without-mingle", "--without-heartbeat"]
        if self.beat:
            cmd += ["--beat", "--schedule", str(self.log.with_suffix(".beat"))]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker did not become ready:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def worker_factory(transactional_db) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes; each is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        w = WorkerProcess(**kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def worker(worker_factory) -> WorkerProcess:
    return worker_factory()


def wait_for(predicate: Callable[[], object], timeout: float = 120, interval: float = 0.25, what: str = "") -> object:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
