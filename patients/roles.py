"""What each role may do: the one statement of the matrix (documented in docs/security.md).

Seeing a patient is decided by ``patients.scoping``; this module decides which
*actions* a user may take on what they can see. The dashboard (``dashboard.access``)
and the API (``api.permissions``, the per-team check in ``api.serializers``) ask it
(``can``, ``actions_of``, ``role_allows``); none keeps its own list of roles.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from patients.models import Role


class Action(StrEnum):
    EDIT_RECORDS = "edit_records"  # patients, treatment lines, clinical events, draws
    UPLOAD = "upload"
    REVIEW = "review"
    EXPORT = "export"
    COHORT = "cohort"
    MANAGE_MODELS = "manage_models"  # promote/retire, shadow, lab-model training, re-running a draw (patients/rerun.py)
    AUDIT = "audit"


PERMISSIONS: dict[str, frozenset[Action]] = {
    Role.ONCOLOGIST: frozenset({Action.EDIT_RECORDS, Action.UPLOAD, Action.REVIEW, Action.EXPORT, Action.COHORT}),
    Role.COORDINATOR: frozenset({Action.EDIT_RECORDS, Action.UPLOAD, Action.EXPORT, Action.COHORT}),
    Role.MEMBER: frozenset({Action.UPLOAD}),
    Role.REVIEWER: frozenset({Action.REVIEW}),
    Role.ADMIN: frozenset(Action),
}


def roles_of(user: Any) -> set[str]:
    if not user.is_authenticated or not user.is_active:
        return set()
    roles = set(user.memberships.values_list("role", flat=True))
    if user.is_superuser:
        roles.add(Role.ADMIN)
    if user.coordinated_trials.exists():
        roles.add(Role.COORDINATOR)
    return roles


def role_allows(role: str | None, action: Action) -> bool:
    """Whether one role (a membership's, e.g. the user's role in one care team) carries ``action``."""
    return action in PERMISSIONS.get(role, ())


def actions_of(user: Any) -> frozenset[Action]:
    """Everything ``user`` may do: the union of their roles' rights (an administrator: all).

    Two queries; a page asks once and looks up every button it shows
    (``dashboard.access.actions_for`` keeps the answer for the request).
    """
    return frozenset(a for role in roles_of(user) for a in PERMISSIONS.get(role, ()))


def can(user: Any, action: Action) -> bool:
    return action in actions_of(user)
