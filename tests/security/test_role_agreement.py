"""One role matrix (issue 12, point 4): what the dashboard offers is what the API allows.

``patients.roles`` states the matrix once; the dashboard's buttons (``dashboard.access.actions_for``,
the ``can`` of every page) and the API's permission checks ask it. For every role (and the
roles that do not come from a membership: a trial's coordinator, a superuser, two teams'
rights together) and every action, the page's ``can`` is compared with real API requests
that need that action.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate

from api.permissions import RoleActionPermission
from patients.models import Role
from patients.roles import Action
from tests import factories

pytestmark = pytest.mark.django_db

MISSING = 2_000_000_000  # no such row: the permission answers first (403), else the lookup (404)

#: Per action, the API requests that need it, and the statuses that mean "allowed".
API_CHECKS: dict[Action, list[tuple[str, str, set[int]]]] = {
    Action.EDIT_RECORDS: [("patch", f"/api/patients/{MISSING}/", {404}),
                          ("post", "/api/draws/", {400})],
    Action.UPLOAD: [("post", f"/api/draws/{MISSING}/uploads/", {404}),
                    ("post", f"/api/uploads/{MISSING}/withdraw/", {404})],
    Action.REVIEW: [("post", f"/api/events/{MISSING}/review/", {404}),
                    ("post", f"/api/draws/{MISSING}/confirm-remaining/", {404})],
    Action.MANAGE_MODELS: [("post", f"/api/models/{MISSING}/promote/", {404}),
                           ("post", f"/api/models/{MISSING}/retire/", {404}),
                           ("post", f"/api/draws/{MISSING}/rerun/", {404}),
                           ("post", "/api/trainings/", {400})],
    Action.EXPORT: [("get", "/api/export/deidentified/", {200})],
    Action.COHORT: [("get", "/api/cohort/", {200})],
}
#: Actions the API has no route for: compared through its permission class (api.permissions).
DASHBOARD_ONLY = {Action.AUDIT}


def _membership(role: str) -> Callable:
    def make(team, other_team):  # noqa: ANN001, ANN202
        user = factories.UserFactory()
        factories.MembershipFactory(team=team, user=user, role=role)
        return user
    return make


def _trial_coordinator(team, other_team):  # noqa: ANN001, ANN202
    user = factories.UserFactory()
    factories.TrialFactory().coordinators.add(user)
    return user


def _superuser(team, other_team):  # noqa: ANN001, ANN202
    return factories.UserFactory(is_superuser=True, is_staff=True)


def _member_here_reviewer_there(team, other_team):  # noqa: ANN001, ANN202
    user = _membership(Role.MEMBER)(team, other_team)
    factories.MembershipFactory(team=other_team, user=user, role=Role.REVIEWER)
    return user


USERS = {**{f"role:{r.value}": _membership(r) for r in Role}, "trial coordinator": _trial_coordinator,
         "superuser": _superuser, "member + reviewer": _member_here_reviewer_there}


def test_every_action_is_checked_through_the_api_or_named_as_dashboard_only():
    assert set(API_CHECKS) | DASHBOARD_ONLY == set(Action) and not set(API_CHECKS) & DASHBOARD_ONLY


def _api_allows(api: APIClient, user, action: Action) -> bool:  # noqa: ANN001
    if action in DASHBOARD_ONLY:  # a write naming the action, through the API's permission class
        request = APIRequestFactory().post("/api/")
        force_authenticate(request, user=user)
        view = SimpleNamespace(action="create", action_permissions={}, write_action=action)
        return RoleActionPermission().has_permission(Request(request), view)
    answers = set()
    for method, url, allowed in API_CHECKS[action]:
        status = getattr(api, method)(url, {}).status_code
        assert status in allowed | {403}, f"{method.upper()} {url}: {status}"
        answers.add(status != 403)
    assert len(answers) == 1, f"the API routes needing {action} disagree with each other"
    return answers.pop()


def _api_client(user) -> APIClient:  # noqa: ANN001
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return api


@pytest.mark.parametrize("who", list(USERS))
def test_the_dashboard_offers_exactly_what_the_api_allows(client, team, other_team, who):
    user = USERS[who](team, other_team)
    client.force_login(user)
    page = client.get("/")
    assert page.status_code == 200
    offered = page.context["can"]
    api = _api_client(user)
    allowed = {a.value: _api_allows(api, user, a) for a in Action}
    assert offered == allowed, f"{who}: dashboard offers {offered}, the API allows {allowed}"
    assert any(allowed.values()), "every kind of user here may do something: a check that cannot fail otherwise"


def test_a_role_in_one_team_does_not_let_the_api_add_patients_to_another(team, other_team):
    """The API asks ``patients.roles`` about the user's role *in the team named* (``role_allows``):
    an oncologist elsewhere who only reviews here may not add a patient here."""
    user = factories.UserFactory()
    factories.MembershipFactory(team=other_team, user=user, role=Role.ONCOLOGIST)
    factories.MembershipFactory(team=team, user=user, role=Role.REVIEWER)
    body = {"study_id": "AGREE-001", "cancer_type": factories.cancer_type().code, "care_team": team.pk}
    api = _api_client(user)
    refused = api.post("/api/patients/", body, format="json")
    assert refused.status_code == 400
    assert "may not add or move patients" in str(refused.json()["care_team"])
    body["care_team"] = other_team.pk
    assert api.post("/api/patients/", body, format="json").status_code == 201
