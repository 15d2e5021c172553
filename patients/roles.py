"""What each role may do: the one statement of the matrix (documented in docs/security.md).

Seeing a patient is decided by ``patients.scoping``; this module decides which
*actions* a user may take on what they can see. The dashboard (``dashboard.access``)
and the API (``api.permissions``, the per-team check in ``api.serializers``) ask it;
none keeps its own list of roles.

Rights are **per care team**: a user may take an action on a patient when their role in
*that patient's* care team carries it, or when they coordinate the patient's trial and the
coordinator role carries it; administrators (a superuser, or the admin role in any team, as
in ``patients.scoping``) may take every action on every patient. An oncologist of one team
who only reviews in another may review there, and nothing else.

- :func:`can_on` (one patient, or a record hanging off one) and :func:`patients_for_action` /
  :func:`action_filter` (the patients of a multi-patient export or cohort figure) state that rule;
- :func:`can` / :func:`actions_of` are the union over all the user's teams: whether the user may
  take the action *anywhere*. Multi-patient pages (cohort, review queue) draw their buttons from
  it, and the API refuses a user who may take it nowhere before any record is looked up (the same
  403 for every id); a patient's, draw's or cell's page draws its buttons from :func:`can_on`
  (``dashboard.access.rights_on``);
- :func:`role_allows` is one role's rights (a new patient's team, checked by the serializer).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from django.db.models import Q, QuerySet

from patients.models import Membership, Patient, Role
from patients.scoping import is_admin


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


def _roles_allowing(action: Action) -> list[str]:
    return [role for role, rights in PERMISSIONS.items() if action in rights]


def patient_of(record: Any) -> Patient | None:
    """The patient ``record`` belongs to: itself, its ``patient``, or its draw's patient (None: no patient)."""
    if isinstance(record, Patient):
        return record
    if getattr(record, "patient_id", None) is not None:
        return record.patient
    if getattr(record, "draw_id", None) is not None:
        return record.draw.patient
    if getattr(record, "event_id", None) is not None:  # a cell's review
        return record.event.draw.patient
    return None


def roles_on(user: Any, record: Any) -> set[str]:
    """The roles ``user`` holds on the patient of ``record``: their membership in its care team,
    coordinator of its trial, admin (superuser, or the admin role in any team: they see everything)."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return {Role.ADMIN}
    patient = patient_of(record)
    if patient is None:
        return set()
    roles = set(Membership.objects.filter(Q(team_id=patient.care_team_id) | Q(role=Role.ADMIN), user=user)
                .values_list("role", flat=True))
    if patient.trial_id and user.coordinated_trials.filter(pk=patient.trial_id).exists():
        roles.add(Role.COORDINATOR)
    return roles


def can_on(user: Any, action: Action, record: Any) -> bool:
    """Whether ``user`` may take ``action`` on the patient of ``record`` (a patient, or a treatment
    line, clinical event, draw, upload, cell or summary of one): the rule of this module's docstring.

    False for a patient the user cannot see (no membership, no coordinated trial), so it never
    allows more than ``patients.scoping`` shows; views still answer 404 for those first.
    """
    return any(role_allows(role, action) for role in roles_on(user, record))


def action_filter(user: Any, action: Action, path: str = "") -> Q | None:
    """A Q object selecting the patients (through ``path``, e.g. ``"draw__patient__"``) on which
    ``user`` may take ``action``; None means every patient (administrators). The same rule as
    :func:`can_on`, for querysets; like ``patients.scoping.patient_filter`` it implies visibility."""
    if not user.is_authenticated or not user.is_active:
        return Q(pk__in=[])
    if is_admin(user):
        return None
    teams = Membership.objects.filter(user=user, role__in=_roles_allowing(action)).values("team_id")
    q = Q(**{f"{path}care_team__in": teams})
    if role_allows(Role.COORDINATOR, action):
        q |= Q(**{f"{path}trial__in": user.coordinated_trials.values("pk")})
    return q


def patients_for_action(user: Any, action: Action, qs: QuerySet | None = None) -> QuerySet:
    """The patients of ``qs`` (default: those ``user`` sees) on which ``user`` may take ``action``:
    what a multi-patient export or cohort figure may include (none, when the user may take the
    action nowhere; callers refuse that case with a 403 first)."""
    if qs is None:
        qs = Patient.objects.for_user(user)
    q = action_filter(user, action)
    return qs if q is None else qs.filter(q)
