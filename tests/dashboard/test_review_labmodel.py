"""Train a lab model from the reviews (issue 13, point 4): split by draw, fine-tune, compare with the
active version on the same held-out cells, register a candidate that never becomes active by itself."""

from __future__ import annotations

import pytest
from django.test import Client

from patients.models import AuditEvent, CellEvent, ClassifierVersion, LabTraining, Role
from tests import factories
from tests.conftest import TEST_QUEUE, wait_for
from tests.dashboard.builders import add_cells, draw_on

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"LAB_TRAINING_STEPS": "3", "LAB_TRAINING_REPLAY": "16"}


@pytest.fixture
def lab(team, alice, bob):
    """Three reviewed draws of alice's team (12 cells each), and an admin of the team."""
    import datetime as dt

    admin = factories.UserFactory(username="root")
    factories.MembershipFactory(team=team, user=admin, role=Role.ADMIN)
    patient = factories.PatientFactory(care_team=team)
    for i in range(3):
        draw = draw_on(patient, dt.date(2026, 1, 1) + dt.timedelta(days=21 * i), f"C{i + 1}D1")
        add_cells(draw, 4, 8, seed=20 + i)
    CellEvent.objects.update(reviewed_call="ctc")
    CellEvent.objects.filter(call="non_ctc").update(reviewed_call="non_ctc")
    return admin


@pytest.fixture
def small_training(monkeypatch):
    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)


def test_a_training_splits_by_draw_compares_on_held_out_cells_and_registers_an_inactive_candidate(
        lab, team, small_training, worker_factory, monkeypatch):
    from patients import training_tasks

    monkeypatch.setattr(training_tasks, "TRAINING_QUEUE", TEST_QUEUE)  # the test worker serves this queue
    worker_factory(extra_env=SMALL)
    active_before = list(ClassifierVersion.objects.filter(is_active=True).values_list("pk", flat=True))
    admin = Client()
    admin.force_login(lab)
    r = admin.post("/models/train/", {"team": team.pk})
    assert r.status_code == 302
    job = LabTraining.objects.get()
    wait_for(lambda: LabTraining.objects.get(pk=job.pk).status in ("done", "failed"), timeout=300,
             what="the lab training")
    job.refresh_from_db()
    assert job.status == "done", job.error
    status = admin.get(f"/models/training/{job.pk}/status/").json()
    assert status["progress"] == 100 and status["status"] == "done"
    prov = job.result["provenance"]
    assert not set(prov["train_draws"]) & set(prov["test_draws"]) and prov["train_draws"] and prov["test_draws"]
    assert prov["train_cells"] + prov["test_cells"] == 36 and prov["reviewers"] == []
    for side in ("active", "candidate"):
        m = job.result[side]
        assert m["n"] == prov["test_cells"] and m["balanced_accuracy"] is not None
    assert 0.0 <= job.result["mcnemar_p"] <= 1.0
    print(f"\nheld-out {prov['test_cells']} cells (draws {prov['test_draws']}), trained on {prov['train_cells']}:")
    for key in ("balanced_accuracy", "roc_auc", "sensitivity", "specificity", "ece", "brier"):
        print(f"  {key:18s} active {job.result['active'][key]}  candidate {job.result['candidate'][key]}")
    print(f"  McNemar p {job.result['mcnemar_p']}")
    cand = job.candidate
    assert cand is not None and not cand.is_active and cand.metadata["candidate"] is True
    assert cand.metadata["comparison"]["provenance"]["base_version"]
    assert list(ClassifierVersion.objects.filter(is_active=True).values_list("pk", flat=True)) == active_before
    page = admin.get("/models/").content.decode()
    assert 'data-testid="training-comparison"' in page and "McNemar" in page
    assert AuditEvent.objects.filter(object_type="LabTraining", object_id=str(job.pk)).exists()


def test_only_model_managers_start_a_training_and_too_few_draws_is_a_readable_failure(lab, team, alice, bob):
    from patients.labmodel import run_training

    as_bob = Client()
    as_bob.force_login(bob)
    assert as_bob.post("/models/train/", {"team": team.pk}).status_code == 403
    CellEvent.objects.exclude(draw=CellEvent.objects.first().draw).update(reviewed_call="")
    job = run_training(LabTraining.objects.create(team=team, requested_by=lab))
    assert job.status == "failed" and "at least 2 draws" in job.error


def test_promoting_a_candidate_shows_and_audits_its_comparison_and_an_earlier_version_comes_back(lab):
    base = ClassifierVersion.objects.create(version="1.0.0+base", is_active=True, metadata={"threshold": 0.2})
    comparison = {"active": {"n": 12, "balanced_accuracy": 0.81, "roc_auc": 0.9},
                  "candidate": {"n": 12, "balanced_accuracy": 0.93, "roc_auc": 0.97}, "mcnemar_p": 0.25,
                  "provenance": {"base_version": "1.0.0+base"}}
    cand = ClassifierVersion.objects.create(version="1.0.0-lab1+x", metadata={"candidate": True,
                                                                              "comparison": comparison})
    admin = Client()
    admin.force_login(lab)
    page = admin.get("/models/").content.decode()
    assert "balanced accuracy 0.810 active → 0.930 this candidate" in page and "Promote this lab model" in page
    admin.post(f"/models/{cand.pk}/promote/")
    cand.refresh_from_db()
    base.refresh_from_db()
    assert cand.is_active and not base.is_active
    audit = AuditEvent.objects.filter(object_type="ClassifierVersion", object_id=str(cand.pk)).latest("at")
    assert audit.detail["action"] == "promote" and audit.detail["comparison"]["candidate"]["balanced_accuracy"] == 0.93
    # Roll back: the earlier version is made active again (audited), the candidate kept.
    admin.post(f"/models/{base.pk}/promote/")
    base.refresh_from_db()
    cand.refresh_from_db()
    assert base.is_active and not cand.is_active and not cand.retired
    assert AuditEvent.objects.filter(object_type="ClassifierVersion", object_id=str(base.pk),
                                     detail__action="promote").exists()


@pytest.mark.worker
def test_a_candidate_in_shadow_analyses_new_uploads_beside_the_active_version(lab, draw, worker_factory,
                                                                              monkeypatch, tmp_path):
    """Real worker: the upload is analysed by the active version, then (training queue) by the
    shadow candidate; its calls are stored per cell and the agreement shown. Same weights here,
    so every call must agree: the shadow path re-analyses the same files the same way."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from classifier.weights import DEFAULT_WEIGHTS
    from patients.models import ShadowCall
    from patients.uploads import UploadRequest, create_upload
    from tests.api.synthetic import CHANNELS, event_tiff

    weights = str(DEFAULT_WEIGHTS)
    worker_factory(extra_env={"CELERY_TRAINING_QUEUE": TEST_QUEUE})
    ClassifierVersion.objects.all().delete()
    cand = ClassifierVersion.objects.create(version="lab-shadow-test", weights_path=weights,
                                            metadata={"candidate": True})
    admin = Client()
    admin.force_login(lab)
    admin.post(f"/models/{cand.pk}/shadow/", {"on": "1"})
    cand.refresh_from_db()
    assert cand.metadata["shadow"] is True
    files = [SimpleUploadedFile(f"e{i}.tif", event_tiff(cat, i), content_type="image/tiff")
             for i, cat in enumerate(["ctc", "leukocyte", "ctc", "artifact"])]
    upload = create_upload(draw, UploadRequest(files, CHANNELS), lab)
    wait_for(lambda: ShadowCall.objects.filter(event__upload=upload).count() == 4, timeout=300,
             what="the shadow calls")
    pairs = list(ShadowCall.objects.filter(event__upload=upload).values_list("call", "event__call", "version"))
    assert all(s == a and v == "lab-shadow-test" for s, a, v in pairs)
    page = admin.get("/models/").content.decode()
    assert 'data-shadow-agree="lab-shadow-test">1.000' in page
    assert AuditEvent.objects.filter(object_type="ClassifierVersion", object_id=str(cand.pk),
                                     detail__action="shadow").exists()
