"""The lab-model loop on `make run` (issue 13, point 4, as a new user met it): a demo admin, seeded
reviews to train from, the Models page saying who may train and what each team has, the recipe's
choice in words, progress during the fine-tune, and a readable unknown-team error."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import Client

from patients.models import CareTeam, CellEvent, LabTraining, Role
from patients.roles import Action, can
from tests import factories
from tests.dashboard.builders import add_cells, draw_on

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab_admin(team):
    return factories.MembershipFactory(team=team, role=Role.ADMIN, user__username="labadmin").user


def _reviewed_draws(team, n_draws: int = 3, seed: int = 20) -> None:
    patient = factories.PatientFactory(care_team=team)
    for i in range(n_draws):
        draw = draw_on(patient, dt.date(2026, 1, 1) + dt.timedelta(days=21 * i), f"C{i + 1}D1")
        add_cells(draw, 4, 8, seed=seed + i)
    CellEvent.objects.filter(draw__patient=patient, call="ctc").update(reviewed_call="ctc")
    CellEvent.objects.filter(draw__patient=patient, call="non_ctc").update(reviewed_call="non_ctc")


def test_the_demo_seeds_an_admin_and_reviews_part_of_one_team_with_the_generators_true_labels(monkeypatch):
    """`make run`'s seed: demo-admin (the demo password) may manage models; once the worker has
    classified DEMO-B01, the seeded reviewer has reviewed every one of its cells with the generator's
    labels (so each draw's reviewed CTC count is the trajectory's, whatever the model called), and a
    training of that team can start. ``demo`` stays an oncologist and coordinator without that right."""
    from patients import demo
    from patients.labmodel import readiness
    from patients.pipeline import run_upload

    monkeypatch.setattr(demo, "REVIEWED_PATIENTS", ("DEMO-B01",))  # one patient keeps the test quick
    monkeypatch.setattr(demo, "PATIENTS", demo.PATIENTS[:2])
    demo.seed(events_per_draw=1, outcomes=False, log=lambda *_: None)
    admin = authenticate(username=demo.DEMO_ADMIN, password=demo.DEMO_PASSWORD)
    user = authenticate(username=demo.DEMO_USER, password=demo.DEMO_PASSWORD)
    assert admin is not None and can(admin, Action.MANAGE_MODELS)
    assert user is not None and not can(user, Action.MANAGE_MODELS)
    assert not get_user_model().objects.get(username=demo.DEMO_REVIEWER).has_usable_password()
    team = CareTeam.objects.get(name=demo.REVIEWED_TEAM)
    assert readiness(admin, [team])[0].cells == 0  # nothing classified yet: nothing reviewed
    assert demo.review_seeded(wait_s=0) == 0
    for upload_pk in team.patients.get(study_id="DEMO-B01").draws.values_list("uploads", flat=True):
        assert run_upload(upload_pk) == "done"  # the real pipeline, as the worker runs it
    reviewed = demo.review_seeded(wait_s=0)
    b01 = CellEvent.objects.filter(draw__patient__study_id="DEMO-B01")
    assert reviewed == b01.count() > 0
    assert not b01.filter(reviewed_call="").exists()
    assert set(b01.values_list("reviewed_by__username", flat=True)) == {demo.DEMO_REVIEWER}
    # The generator's labels, not the model's calls: each draw's reviewed CTCs are the trajectory's.
    counts = demo.TRAJECTORIES["responder"]
    schedule = demo._schedule(0, demo.PATIENTS[0])
    for d, timepoint, _ in schedule:
        got = b01.filter(draw__timepoint=timepoint, reviewed_call="ctc").count()
        assert got == counts[min(d, len(counts) - 1)], timepoint
    overridden = b01.exclude(reviewed_call=F("call"))
    assert all(c.review_reason for c in overridden)  # every override carries a reason
    assert not CellEvent.objects.filter(draw__patient__study_id="DEMO-B02").exclude(reviewed_call="").exists()
    ready = readiness(admin, [team])[0]
    assert ready.ready and ready.can_adapt and ready.cells == reviewed and ready.draws == len(schedule)
    assert demo.review_seeded(wait_s=0) == 0  # idempotent


def test_seed_demo_names_both_logins_and_what_each_may_do():
    from patients.management.commands.seed_demo import LOGINS

    assert "demo / demo-password" in LOGINS and "demo-admin / demo-password" in LOGINS
    assert "lab-model training" in LOGINS


def test_the_models_page_tells_a_non_admin_who_may_train_and_an_admin_what_each_team_has(
        team, other_team, alice, lab_admin):
    _reviewed_draws(team)
    page = Client()
    page.force_login(alice)
    html = page.get("/models/").content.decode()
    assert 'data-testid="training-who"' in html and "only an administrator can start a training (labadmin)" in html
    assert 'data-testid="start-training"' not in html
    factories.MembershipFactory(team=other_team, user=lab_admin, role=Role.ADMIN)
    page.force_login(lab_admin)
    html = page.get("/models/").content.decode()
    assert 'data-testid="training-who"' not in html and 'data-testid="start-training"' in html
    assert 'data-testid="training-readiness"' in html and "at least 4 reviewed cells from at least 2 draws" in html
    ready = html.split(f'data-team="{team.name}"')[1].split("</tr>")[0]
    assert '<td class="num">36</td><td class="num">12</td><td class="num">3</td>' in ready and "<td>Yes</td>" in ready
    empty = html.split(f'data-team="{other_team.name}"')[1].split("</tr>")[0]
    assert "Not yet: needs 4 more reviewed cells and reviewed cells from 2 more draws" in empty


def _done_job(team, admin, adaptation: dict) -> LabTraining:
    from patients.labmodel import adaptation_summary

    result = {"active": {"n": 12, "n_ctc": 4, "balanced_accuracy": 0.9},
              "candidate": {"n": 12, "balanced_accuracy": 0.9},
              "mcnemar_p": 1.0, "provenance": {"test_draws": ["1"], "train_draws": ["2", "3"], "train_cells": 24},
              "adaptation": adaptation_summary(adaptation)}
    return LabTraining.objects.create(team=team, requested_by=admin, status=LabTraining.Status.DONE, progress=100,
                                      stage="done", result=result)


def test_a_training_that_kept_the_active_model_says_so_and_that_promoting_it_changes_nothing(team, lab_admin):
    from patients.models import ClassifierVersion

    report = {"chosen": "base", "margin": 0.083, "candidates": {
        "base": {"cv_balanced_accuracy": 0.9, "cv_log_loss": 0.3},
        "head C=0.1": {"cv_balanced_accuracy": 0.93, "cv_log_loss": 0.25},
        "finetune": {"cv_balanced_accuracy": 0.88, "cv_log_loss": 0.4}}}
    job = _done_job(team, lab_admin, report)
    ClassifierVersion.objects.create(version="1.0.0-lab1+kept", metadata={"candidate": True,
                                                                         "comparison": job.result})
    page = Client()
    page.force_login(lab_admin)
    html = page.get("/models/").content.decode()
    kept = html.split('data-testid="training-kept-active"')[1].split("</p>")[0]
    assert ("The recipe kept the active model: no lab-specific change beat it by the required margin" in kept)
    assert "active 0.900, best change “head C=0.1” 0.930, required gain 0.083" in kept
    assert "promoting it would change no call, so it is not worth promoting" in kept
    assert 'data-testid="promote-kept-active"' in html  # and at the promote button
    job.result["adaptation"] = _done_job(team, lab_admin, {**report, "chosen": "head C=0.1"}).result["adaptation"]
    LabTraining.objects.filter(pk=job.pk).update(result=job.result)
    ClassifierVersion.objects.all().delete()
    html = page.get("/models/").content.decode()
    assert "training-kept-active" not in html and "promote-kept-active" not in html
    assert "The recipe chose “head C=0.1” over the active model" in html


@pytest.mark.django_db(transaction=True)
def test_the_progress_moves_through_the_fine_tune_and_its_cross_validation(team, lab_admin, monkeypatch):
    """Was: 35 % for the whole fine-tune (most of the run), then 80 %. Now every fold and the
    final fit move the bar between 35 and 80 %, and the stage says which."""
    from patients import labmodel

    for k, v in {"LAB_TRAINING_STEPS": "3", "LAB_TRAINING_REPLAY": "16"}.items():
        monkeypatch.setenv(k, v)
    _reviewed_draws(team, n_draws=4)
    seen: list[tuple[int, str]] = []
    real_step = labmodel._step
    monkeypatch.setattr(labmodel, "_step", lambda job, p, s: (seen.append((p, s)), real_step(job, p, s)))
    job = labmodel.run_training(LabTraining.objects.create(team=team, requested_by=lab_admin))
    assert job.status == "done", job.error
    inside = [(p, s) for p, s in seen if labmodel.ADAPT_PROGRESS[0] < p < labmodel.ADAPT_PROGRESS[1]]
    assert len({p for p, _ in inside}) >= 4, seen
    assert any("fold 1 of" in s for _, s in inside) and any("final fit" in s for _, s in seen)
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)  # never backwards
    assert all(len(s) <= 60 for _, s in seen)  # LabTraining.stage's length
    assert job.result["adaptation"]["chosen"] == job.candidate.metadata["adaptation"]["chosen"]


def test_train_lab_model_with_an_unknown_team_lists_the_teams(team, other_team):
    with pytest.raises(CommandError) as err:
        call_command("train_lab_model", "--team", "Breast", "--now")
    assert "No care team 'Breast'" in str(err.value)
    assert "'Breast unit'" in str(err.value) and "'Colorectal unit'" in str(err.value)


def test_train_lab_model_runs_as_an_administrator_of_the_team_when_there_is_no_superuser(team, lab_admin, alice):
    """make run has no superuser: ``--team "Breast oncology"`` alone must find demo-admin."""
    call_command("train_lab_model", "--team", team.name)
    assert LabTraining.objects.get().requested_by == lab_admin
