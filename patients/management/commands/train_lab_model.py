"""``manage.py train_lab_model --team TEAM [--user ADMIN] [--now]``: train a lab model from the team's
reviews (patients/labmodel.py). Queued on the ``training`` Celery queue, or run here with ``--now``."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from patients.models import CareTeam, LabTraining, Role
from patients.roles import Action, can


class Command(BaseCommand):
    help = "Fine-tune the active model on a care team's reviewed cells and register a candidate version."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--team", required=True, help="care team name")
        parser.add_argument("--user", default="", help="the admin it runs as (scope, audit); default: a superuser, "
                                                        "else an administrator of the team")
        parser.add_argument("--now", action="store_true", help="run in this process instead of queueing")

    def handle(self, *args, **opts) -> None:  # noqa: ANN002, ANN003
        from patients.labmodel import run_training
        from patients.training_tasks import start_training

        team = CareTeam.objects.filter(name=opts["team"]).first()
        if team is None:
            names = ", ".join(repr(n) for n in CareTeam.objects.order_by("name").values_list("name", flat=True))
            raise CommandError(f"No care team {opts['team']!r}. Care teams: {names or 'none yet'}.")
        users = get_user_model().objects
        # Default: a superuser, else an administrator of the team (make run's demo-admin: no superuser there).
        user = users.filter(username=opts["user"]).first() if opts["user"] else (
            users.filter(is_superuser=True, is_active=True).order_by("pk").first()
            or users.filter(memberships__team=team, memberships__role=Role.ADMIN, is_active=True)
            .order_by("pk").first())
        if user is None or not can(user, Action.MANAGE_MODELS):
            raise CommandError("Give --user, an administrator who may manage models.")
        job = start_training(team, user, queue=not opts["now"])
        if opts["now"]:
            job = run_training(job)
            if job.status != LabTraining.Status.DONE:
                raise CommandError(f"Training {job.pk} failed: {job.error}")
            r = job.result
            self.stdout.write(f"Training {job.pk}: candidate {job.candidate.version} (not active).")
            for key in ("balanced_accuracy", "roc_auc", "sensitivity", "specificity", "ece"):
                self.stdout.write(f"  {key:18s} active {r['active'][key]}  candidate {r['candidate'][key]}")
            self.stdout.write(f"  McNemar p {r['mcnemar_p']}")
            if (r.get("adaptation") or {}).get("kept_active"):
                self.stdout.write("  The recipe kept the active model: no lab-specific change beat it by the required "
                                  "margin (the candidate makes the same calls; promoting it changes nothing).")
        else:
            self.stdout.write(f"Training {job.pk} queued on the training queue.")
