"""Request-level helpers shared by the dashboard views: roles once per request, scoping, audit.

Rights are per care team (``patients.roles.can_on``). The server checks the right on the patient
acted on (:func:`require_on`, :func:`patient_for`, :func:`record_for`), and a page about one record
(a patient, draw, upload, cell) draws its buttons, links and forms from the same answer
(:func:`rights_on`: ``rights.upload`` ... in templates), so it never offers what would answer 403.
What the user may do anywhere (:func:`actions_for`) is for the navigation and for multi-patient
pages, whose actions apply to the patients the user may act on (``patients_for_action``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from patients.models import Patient
from patients.roles import Action, actions_of, can_on, patient_of, role_allows, roles_on


def actions_for(request: HttpRequest) -> frozenset[Action]:
    """What the signed-in user may do in at least one of their teams (:func:`patients.roles.actions_of`),
    asked once per request: templates ask it for every button they show, and :func:`require` enforces
    the same answer. Whether the action is allowed on one patient is :func:`require_on`."""
    cached = getattr(request, "_dashboard_actions", None)
    if cached is None:
        cached = request._dashboard_actions = actions_of(request.user)
    return cached


class Rights(Mapping):
    """What the signed-in user may do on one record's patient, keyed by action name
    (``rights["upload"]``, ``{% if rights.upload %}`` in templates): the answer :func:`require_on` gives,
    so a control is drawn exactly where the view it posts to allows it.

    The rule is ``patients.roles``': an action the user may take in none of their teams is refused
    (:func:`actions_for`, kept for the request), else ``can_on``, i.e. whether a role the user holds on
    this patient (``roles_on``: its care team, its trial's coordinator, admin) carries it (``role_allows``).
    Those roles are asked once, when the page first reads a right the user has somewhere, not once per
    button (one or two queries per page; tests/dashboard/test_buttons_per_team.py checks that every
    answer equals ``can_on``)."""

    def __init__(self, request: HttpRequest, record: Any) -> None:
        self._request, self._record, self._roles = request, record, None

    def __getitem__(self, key: str) -> bool:
        try:
            action = Action(key)
        except ValueError:
            raise KeyError(key) from None
        if action not in actions_for(self._request):
            return False
        if self._roles is None:
            self._roles = roles_on(self._request.user, self._record)
        return any(role_allows(role, action) for role in self._roles)

    def __iter__(self) -> Iterator[str]:
        return (a.value for a in Action)

    def __len__(self) -> int:
        return len(Action)

    def __repr__(self) -> str:
        return f"Rights({dict(self)!r})"


def rights_on(request: HttpRequest, record: Any) -> Rights:
    """The rights of the signed-in user on the patient of ``record`` (a patient, or a draw, upload, cell
    ... of one), for the page's buttons, links and forms. One :class:`Rights` per patient and request."""
    patient = patient_of(record)
    cache = getattr(request, "_dashboard_rights", None)
    if cache is None:
        cache = request._dashboard_rights = {}
    key = patient.pk if patient is not None else None
    if key not in cache:
        cache[key] = Rights(request, patient if patient is not None else record)
    return cache[key]


def require(request: HttpRequest, action: Action) -> None:
    """403 unless the user may take ``action`` somewhere (the answer the navigation and the multi-patient
    pages draw their buttons from, :func:`actions_for`).

    Enough for pages that act on no single patient; a multi-patient export also keeps only the
    patients the action is allowed on (``patients.roles.patients_for_action``)."""
    if action not in actions_for(request):
        raise PermissionDenied(f"Your role does not allow this action ({action.value}).")


def require_on(request: HttpRequest, action: Action, record: Any) -> None:
    """403 unless ``action`` is allowed on the patient of ``record`` (a patient, or a draw, upload,
    cell ... of one): the user's role in that patient's care team, or as its trial's coordinator."""
    require(request, action)
    if not can_on(request.user, action, record):
        raise PermissionDenied(f"Your role in this patient's care team does not allow this action ({action.value}).")


def patient_for(request: HttpRequest, pk: int, action: Action) -> Patient:
    """The patient a page acts on: 404 unless the user may see it (scoping first, so another
    team's patient stays unknown rather than forbidden), then 403 unless ``action`` is allowed
    on *this* patient."""
    patient = get_object_or_404(Patient.objects.for_user(request.user), pk=pk)
    require_on(request, action, patient)
    return patient


def record_for(request: HttpRequest, queryset: QuerySet, pk: int, action: Action) -> Any:
    """The draw, upload or cell a page acts on (``queryset`` of a scoped model): 404 unless the user
    may see it, then 403 unless ``action`` is allowed on its patient (as :func:`patient_for`)."""
    record = get_object_or_404(queryset.for_user(request.user), pk=pk)
    require_on(request, action, record)
    return record
