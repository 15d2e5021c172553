"""``manage.py create_user NAME --team TEAM --role ROLE``: provisioning users from a script."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from patients.models import CareTeam, Membership, Role

pytestmark = pytest.mark.django_db
GOOD = "correct-horse-battery-42"


def _run(*args, **env_password):
    out = io.StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_user_and_the_team_with_the_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("CTC_USER_PASSWORD", GOOD)
    out = _run("dora", "--team", "Prostate unit", "--role", "oncologist")
    assert "Created user 'dora'" in out and "new team" in out
    user = get_user_model().objects.get(username="dora")
    assert Membership.objects.get(user=user, team__name="Prostate unit").role == Role.ONCOLOGIST
    assert authenticate(username="dora", password=GOOD) == user


def test_it_prompts_for_the_password_twice_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CTC_USER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter([GOOD, GOOD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    _run("erin", "--team", "Breast unit", "--role", "reviewer")
    assert authenticate(username="erin", password=GOOD) is not None


def test_it_refuses_differing_prompted_passwords(monkeypatch):
    monkeypatch.delenv("CTC_USER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter([GOOD, GOOD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(CommandError, match="differ"):
        _run("erin", "--team", "Breast unit", "--role", "reviewer")
    assert not get_user_model().objects.filter(username="erin").exists()


def test_it_fails_clearly_without_a_password_source(monkeypatch):
    monkeypatch.delenv("CTC_USER_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(CommandError, match="CTC_USER_PASSWORD"):
        _run("fred", "--team", "Breast unit", "--role", "member")
    assert not CareTeam.objects.filter(name="Breast unit").exists()


def test_it_rejects_an_unknown_role_and_a_weak_password(monkeypatch):
    monkeypatch.setenv("CTC_USER_PASSWORD", GOOD)
    with pytest.raises(CommandError, match="invalid choice"):
        _run("gina", "--team", "T", "--role", "surgeon")
    monkeypatch.setenv("CTC_USER_PASSWORD", "123")
    with pytest.raises(CommandError, match="Password rejected"):
        _run("gina", "--team", "T", "--role", "member")
    assert not get_user_model().objects.filter(username="gina").exists()


def test_running_it_again_updates_the_role_and_adds_teams(monkeypatch):
    monkeypatch.setenv("CTC_USER_PASSWORD", GOOD)
    _run("hank", "--team", "A", "--role", "member")
    out = _run("hank", "--team", "A", "--role", "coordinator")
    assert "Updated user 'hank'" in out
    _run("hank", "--team", "B", "--role", "reviewer")
    roles = dict(Membership.objects.filter(user__username="hank").values_list("team__name", "role"))
    assert roles == {"A": "coordinator", "B": "reviewer"}


def test_the_command_line_never_takes_the_password_as_an_argument():
    with pytest.raises(CommandError):
        call_command("create_user", "ivan", "--team", "A", "--role", "member", "--password", "x")
