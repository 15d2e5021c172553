"""Who may take a running job back (patients.pipeline.reclaim): only when its owner is gone,
and only once however many workers look at the same moment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from patients import pipeline
from patients.models import ImagingUpload, Lane, UploadStatus
from tests import factories

pytestmark = pytest.mark.django_db


def _running(draw, owner: dict, heartbeat_age_s: float, lane: str = Lane.BULK) -> ImagingUpload:
    return factories.ImagingUploadFactory(
        draw=draw, status=UploadStatus.RUNNING, progress=40, attempts=1, owner=owner, lane=lane,
        heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age_s))


def _dead_pid() -> dict:
    """The identity of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import os; print(os.getpid())"], stdout=subprocess.PIPE)
    pid = int(proc.communicate()[0])
    return {"worker": "celery@gone", "host": socket.gethostname(), "pid": pid, "start": 1}


def test_only_jobs_whose_owner_is_gone_are_reclaimed_and_each_exactly_once(draw):
    me = pipeline.owner_identity()
    alive_here = _running(draw, me, heartbeat_age_s=1)
    alive_elsewhere = _running(draw, {"worker": "w@b", "host": "other-host", "pid": 7, "start": 1}, 5)
    dead_here = _running(draw, _dead_pid(), heartbeat_age_s=1)  # heartbeat fresh, but its process is gone
    silent_elsewhere = _running(draw, {"worker": "w@c", "host": "other-host", "pid": 8, "start": 1}, 600)
    sent: list[tuple[int, str]] = []

    assert pipeline.reclaim(lambda pk, lane: sent.append((pk, lane)) or True) == 2
    assert sorted(sent) == sorted([(dead_here.pk, Lane.INTERACTIVE), (silent_elsewhere.pk, Lane.INTERACTIVE)])
    for up in (dead_here, silent_elsewhere):
        up.refresh_from_db()
        assert up.status == UploadStatus.QUEUED and up.stage == "reclaimed" and up.attempts == 1
    for up in (alive_here, alive_elsewhere):
        up.refresh_from_db()
        assert up.status == UploadStatus.RUNNING

    # A second worker looking right after finds nothing left to take.
    assert pipeline.reclaim(lambda pk, lane: sent.append((pk, lane)) or True) == 0
    assert len(sent) == 2


def test_a_reused_pid_is_not_taken_for_the_owner(draw):
    me = pipeline.owner_identity()
    assert me["start"] is not None and me["pid"] == os.getpid()
    assert not pipeline.owner_is_gone(me)
    assert pipeline.owner_is_gone({**me, "start": me["start"] - 1})  # same pid, another process
