"""The review loop's background work through the API, with a real worker process (issue 13, points 4, 5):
a draw re-run with another version goes to the bulk lane and comes back stamped with that version
(the count untouched, the request audited); a lab-model training started from the API runs on the
training queue and reports its progress and candidate."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import AuditEvent, CellEvent, ClassifierVersion, DrawSummary, LabTraining, Role, ShadowCall
from tests import factories
from tests.api.synthetic import CHANNELS, event_tiff
from tests.conftest import TEST_QUEUE, wait_for
from tests.dashboard.builders import add_cells, draw_on

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin(team):
    user = factories.UserFactory(username="root")
    factories.MembershipFactory(team=team, user=user, role=Role.ADMIN)
    return user


def _queue_keys(queue: str) -> tuple[object, list[bytes]]:
    """Redis and the keys of a queue (every priority key of it, not those of ``queue-bulk``)."""
    import redis

    r = redis.Redis.from_url(settings.REDIS_URL)
    return r, [k for k in r.keys(queue + "*") if k.decode() == queue or not k.decode()[len(queue):].startswith("-")]


def _queued(queue: str) -> list[dict]:
    """The messages waiting in a Redis queue."""
    r, keys = _queue_keys(queue)
    return [json.loads(raw)["headers"] for k in keys for raw in r.lrange(k, 0, -1)]


def _purge(queue: str) -> None:
    """Empty a queue of this test session."""
    r, keys = _queue_keys(queue)
    if keys:
        r.delete(*keys)


def test_a_rerun_goes_to_the_bulk_lane_and_stores_the_versions_calls_beside_the_unchanged_count(
        worker_factory, alice, admin, draw, client_for):
    from patients.pipeline import run_upload
    from patients.uploads import UploadRequest, create_upload

    files = [SimpleUploadedFile(f"e{i}.tif", event_tiff(cat, 40 + i), content_type="image/tiff")
             for i, cat in enumerate(["ctc", "leukocyte", "ctc", "ck_debris", "artifact"])]
    upload = create_upload(draw, UploadRequest(files, CHANNELS), alice)
    assert run_upload(upload.pk) == "done"  # the counted result, by the real pipeline (in this process)
    upload.refresh_from_db()
    counted = list(CellEvent.objects.filter(upload=upload).order_by("index").values_list("pk", "call", "category"))
    summary = DrawSummary.objects.values("ctc_count", "events_analysed", "status", "model_version").get(draw=draw)
    assert counted and summary["model_version"] == upload.model_version
    # Another version: the weights shipped in the package (weights_path "", as the first upload registers
    # them), under another name; the same weights, so every call must agree with the counted ones.
    other = ClassifierVersion.objects.create(version="rerun-shipped", weights_path="")

    bulk = f"{TEST_QUEUE}-bulk"  # queue_for(Lane.BULK) with this session's default queue
    _purge(bulk)  # bulk jobs earlier tests queued with no worker running are not this test's
    r = client_for(admin).post(f"/api/draws/{draw.pk}/rerun/", {"version": "rerun-shipped"}, format="json")
    assert r.status_code == 202, r.content
    jobs = _queued(bulk)
    assert [(j["task"], j["argsrepr"]) for j in jobs] == [("patients.shadow_upload", f"[{upload.pk}, {other.pk}]")]
    assert all(j["task"] != "patients.shadow_upload" for j in _queued(TEST_QUEUE))  # not the clinic's lane
    audit = AuditEvent.objects.get(detail__action="rerun")
    assert audit.user == admin and audit.detail["version"] == "rerun-shipped"
    assert audit.detail["uploads"] == [upload.pk] and audit.detail["counted_version"] == [upload.model_version]

    worker_factory()  # -Q <session queue>, and its bulk lane
    n = len(counted)
    wait_for(lambda: ShadowCall.objects.filter(event__upload=upload, version="rerun-shipped").count() == n,
             timeout=240, what="the re-run's calls")
    rows = {e: (call, v) for e, call, v in ShadowCall.objects.filter(event__upload=upload)
            .values_list("event_id", "call", "version")}
    assert rows == {pk: (call, "rerun-shipped") for pk, call, _ in counted}
    # The counted result is the same rows, calls and count, still of the version that produced it.
    assert list(CellEvent.objects.filter(upload=upload).order_by("index")
                .values_list("pk", "call", "category")) == counted
    assert DrawSummary.objects.values("ctc_count", "events_analysed", "status", "model_version").get(
        draw=draw) == summary
    results = client_for(alice).get(f"/api/draws/{draw.pk}/rerun/").json()
    ctc = sum(c == "ctc" for _, c, _ in counted)
    assert results == [{"version": "rerun-shipped", "cells": n, "of": n, "complete": True, "ctc": ctc,
                        "ctc_counted": ctc, "agree": 1.0, "kappa": 1.0}]


def test_a_training_started_from_the_api_runs_on_the_training_queue_and_reports_progress(
        worker_factory, team, admin, client_for, monkeypatch):
    import datetime as dt

    from patients import training_tasks

    small = {"LAB_TRAINING_STEPS": "3", "LAB_TRAINING_REPLAY": "16"}
    for k, v in small.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(training_tasks, "TRAINING_QUEUE", TEST_QUEUE)  # the test worker serves this queue
    patient = factories.PatientFactory(care_team=team)
    for i in range(3):  # three reviewed draws: one held out at least
        add_cells(draw_on(patient, dt.date(2026, 1, 1) + dt.timedelta(days=21 * i), f"C{i + 1}D1"), 4, 8, seed=30 + i)
    CellEvent.objects.update(reviewed_call="ctc")
    CellEvent.objects.filter(call="non_ctc").update(reviewed_call="non_ctc")
    worker_factory(extra_env=small)
    api = client_for(admin)
    r = api.post("/api/trainings/", {"team": team.pk}, format="json")
    assert r.status_code == 202, r.content
    url = r.headers["Location"]
    wait_for(lambda: api.get(url).json()["status"] in ("done", "failed"), timeout=300, what="the lab training")
    job = api.get(url).json()
    assert job["status"] == "done", job["error"]
    assert job["progress"] == 100 and job["team"] == team.pk and job["requested_by"] == "root"
    candidate = ClassifierVersion.objects.get(version=job["candidate"])
    assert not candidate.is_active and candidate.metadata["candidate"] is True
    assert job["result"]["candidate"]["n"] == job["result"]["provenance"]["test_cells"]
    assert LabTraining.objects.get(pk=job["id"]).candidate == candidate
