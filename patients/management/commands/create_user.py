"""Provision a user from a script: ``manage.py create_user NAME --team TEAM --role ROLE``.

The password is never a command-line argument (it would end up in the shell history
and in ``ps``): it is read from the environment variable ``CTC_USER_PASSWORD`` when set,
otherwise prompted for twice on a terminal. The care team is created when it does not
exist yet. Running the command again for an existing user adds (or changes) that user's
membership in the team and, when a password is given, sets it.
"""

from __future__ import annotations

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from patients.models import CareTeam, Membership, Role

PASSWORD_ENV = "CTC_USER_PASSWORD"


class Command(BaseCommand):
    help = "Create (or update) a user and their membership in a care team."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("username")
        parser.add_argument("--team", required=True, help="Care team name; created if it does not exist.")
        parser.add_argument("--role", required=True, choices=Role.values,
                            help="Role in the team: " + ", ".join(Role.values))
        parser.add_argument("--email", default="")
        parser.add_argument("--site", default="", help="Hospital or trial site of a new team.")
        parser.add_argument("--superuser", action="store_true",
                            help="Also give Django-admin access (is_staff + is_superuser).")
        parser.add_argument("--no-password", action="store_true",
                            help="Keep an existing user's password (or create an unusable one).")

    def handle(self, *args, **opts) -> None:  # noqa: ANN002, ANN003
        User = get_user_model()  # noqa: N806
        username = opts["username"].strip()
        team_name = opts["team"].strip()
        if not username:
            raise CommandError("The user name must not be empty.")
        if not team_name:
            raise CommandError("The team name must not be empty.")
        username_field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            username_field.run_validators(username)
        except ValidationError as err:
            raise CommandError(f"Invalid user name {username!r}: {' '.join(err.messages)}") from err

        existing = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        password = None if opts["no_password"] else self._password(existing is None)
        if password is not None:
            candidate = existing or User(**{User.USERNAME_FIELD: username, "email": opts["email"]})
            try:
                validate_password(password, candidate)
            except ValidationError as err:
                raise CommandError("Password rejected: " + " ".join(err.messages)) from err

        with transaction.atomic():
            team, team_created = CareTeam.objects.get_or_create(name=team_name, defaults={"site": opts["site"]})
            user = existing or User(**{User.USERNAME_FIELD: username})
            if opts["email"]:
                user.email = opts["email"]
            if opts["superuser"]:
                user.is_staff = user.is_superuser = True
            if password is not None:
                user.set_password(password)
            elif existing is None:
                user.set_unusable_password()
            user.save()
            membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": opts["role"]})

        verb = "Created" if existing is None else "Updated"
        team_note = " (new team)" if team_created else ""
        self.stdout.write(self.style.SUCCESS(
            f"{verb} user {username!r}: {membership.get_role_display()} in {team.name!r}{team_note}."
        ))

    def _password(self, required: bool) -> str | None:
        from_env = os.environ.get(PASSWORD_ENV)
        if from_env is not None:
            if not from_env:
                raise CommandError(f"{PASSWORD_ENV} is set but empty.")
            return from_env
        if not sys.stdin.isatty():
            if required:
                raise CommandError(
                    f"No password: set {PASSWORD_ENV}, run the command on a terminal to be prompted, "
                    "or pass --no-password for an account that cannot log in yet."
                )
            return None
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        if not first:
            raise CommandError("The password must not be empty.")
        return first
