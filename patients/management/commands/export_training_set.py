"""``manage.py export_training_set --user NAME [--team TEAM] --out DIR``: a lab's reviewed cells as
the labelled folder ``python -m classifier evaluate|finetune`` read (patients/trainingset.py).

Scoped as the named user sees the data (a lab only trains on what it may see); audited as an export.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from patients.audit import record
from patients.models import AuditEvent, CareTeam
from patients.trainingset import write_training_set


class Command(BaseCommand):
    help = "Export the reviewed cells a user may see as labels.csv + multi-channel TIFFs."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--user", required=True, help="whose view of the data (scope)")
        parser.add_argument("--team", default="", help="only this care team's patients (name)")
        parser.add_argument("--out", required=True, help="an empty or new folder")

    def handle(self, *args, **opts) -> None:  # noqa: ANN002, ANN003
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"No user {opts['user']!r}.")
        team = None
        if opts["team"]:
            team = CareTeam.objects.filter(name=opts["team"], memberships__user=user).first()
            if team is None:
                raise CommandError(f"{opts['user']} is not a member of a care team named {opts['team']!r}.")
        out = Path(opts["out"])
        if out.exists() and any(out.iterdir()):
            raise CommandError(f"{out} is not empty.")
        s = write_training_set(user, out, team)
        record(None, AuditEvent.Action.EXPORT, user=user, object_type="TrainingSet",
               object_id=team.pk if team else "", path="manage.py export_training_set",
               detail={"cells": s.cells, "ctc": s.ctc, "draws": s.draws, "team": opts["team"]})
        self.stdout.write(
            f"{s.cells} reviewed cells ({s.ctc} CTC) from {s.draws} draws, reviewers {', '.join(s.reviewers) or '-'}: "
            f"{s.originals} original files, {s.thumbnails} from thumbnails; channels {','.join(s.channels)}; "
            f"left out {s.skipped_other_channels} (other channel order), {s.skipped_no_image} (no image). -> {out}")
