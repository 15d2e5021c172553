"""What each role may do (the matrix is documented in docs/security.md).

Seeing a patient is decided by ``patients.scoping``; this module decides which
*actions* a user may take on what they can see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from patients.models import Role
from patients.scoping import is_admin


class Action(StrEnum):
    EDIT_RECORDS = "edit_records"  # patients, treatment lines, clinical events, draws
    UPLOAD = "upload"
    REVIEW = "review"
    EXPORT = "export"
    COHORT = "cohort"
    MANAGE_MODELS = "manage_models"
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


def can(user: Any, action: Action) -> bool:
    if is_admin(user):
        return True
    return any(action in PERMISSIONS.get(role, ()) for role in roles_of(user))
