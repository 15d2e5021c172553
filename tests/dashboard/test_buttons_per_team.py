"""Pages draw their action controls from the rights on *that* record (``patients.roles.can_on``).

The server refuses an action on a patient whose care team does not give the user's role that
right (tests/security/test_team_rights.py); the pages must not offer it either. olga (tests/conftest.py)
is an oncologist of team A (``other_team``) and only a reviewer of team B (``team``, alice's):
on A's patient and draw pages she gets the oncologist's controls (export, record a draw, outcomes,
upload, withdraw, review), on B's only the review ones. rita is the other way round for review:
a reviewer of A and a care-team member (upload only) of B. An administrator gets every control on
both teams' pages (re-run included), whichever team their admin role is in.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from patients.models import CellEvent, ClassifierVersion, Patient, Role
from patients.roles import Action
from tests import factories
from tests.dashboard.builders import add_cells, two_teams

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(team, other_team, patient):
    """For each team (A: other_team, B: team) a patient with an analysed draw whose first cell is reviewed."""
    out = two_teams(team, other_team, patient, seed=5, with_images=False)
    reviewer = factories.UserFactory(username="someone")
    for entry in out.values():
        cell = entry["cell"]
        CellEvent.objects.filter(pk=cell.pk).update(reviewed_call=cell.call, reviewed_by=reviewer)
    # Another version than the counted one ("test-model"), so the re-run form has something to offer.
    ClassifierVersion.objects.create(version="lab-buttons", metadata={"candidate": True})
    return out


@pytest.fixture
def rita(team, other_team):
    """A reviewer of team A who is only a care-team member (upload, no review) of team B."""
    user = factories.UserFactory(username="rita")
    factories.MembershipFactory(team=other_team, user=user, role=Role.REVIEWER)
    factories.MembershipFactory(team=team, user=user, role=Role.MEMBER)
    return user


def _page(user, url: str) -> str:  # noqa: ANN001
    c = Client()
    c.force_login(user)
    r = c.get(url)
    assert r.status_code == 200, (url, r.status_code)
    return r.content.decode()


def _patient_controls(user, patient) -> dict[str, bool]:  # noqa: ANN001
    page = _page(user, reverse("dashboard:patient", args=[patient.pk]))
    return {
        "export": reverse("dashboard:patient_export", args=[patient.pk]) in page,
        "new_draw": reverse("dashboard:draw_create", args=[patient.pk]) in page,
        "outcomes": reverse("dashboard:patient_outcomes", args=[patient.pk]) in page,
    }


def _draw_controls(user, rec: dict) -> dict[str, bool]:  # noqa: ANN001
    draw = rec["draw"]
    page = _page(user, reverse("dashboard:draw", args=[draw.pk]))
    return {
        "upload": reverse("dashboard:upload_create", args=[draw.pk]) in page and "data-upload-form" in page,
        "withdraw": reverse("dashboard:upload_withdraw", args=[rec["upload"].pk]) in page,
        "review_link": 'data-testid="review-draw"' in page,
        "change_review": reverse("dashboard:review_cell", args=[rec["cell"].pk]) in page,
        "rerun": 'data-testid="rerun-form"' in page,
    }


def _review_page_controls(user, draw) -> dict[str, bool]:  # noqa: ANN001
    page = _page(user, reverse("dashboard:draw_review", args=[draw.pk]))
    return {
        "toolbar": "data-review-toolbar" in page,
        "confirm_remaining": reverse("dashboard:review_confirm_remaining", args=[draw.pk]) in page,
        "cell_forms": 'class="tile-form"' in page,
    }


ALL_PATIENT = {"export": True, "new_draw": True, "outcomes": True}
NO_PATIENT = {"export": False, "new_draw": False, "outcomes": False}
ALL_REVIEW = {"toolbar": True, "confirm_remaining": True, "cell_forms": True}
NO_REVIEW = {"toolbar": False, "confirm_remaining": False, "cell_forms": False}


def test_patient_page_export_and_edit_controls_only_on_her_oncology_teams_patient(olga, world):
    assert _patient_controls(olga, world["a"]["patient"]) == ALL_PATIENT
    # B: she only reviews there; export, a new draw and outcomes would all answer 403.
    assert _patient_controls(olga, world["b"]["patient"]) == NO_PATIENT


def test_draw_page_upload_and_withdraw_only_on_her_oncology_teams_draw(olga, world):
    assert _draw_controls(olga, world["a"]) == {
        "upload": True, "withdraw": True, "review_link": True, "change_review": True, "rerun": False}
    # B: review only; no upload form, no withdraw, no re-run (administrators only).
    assert _draw_controls(olga, world["b"]) == {
        "upload": False, "withdraw": False, "review_link": True, "change_review": True, "rerun": False}
    assert _review_page_controls(olga, world["b"]["draw"]) == ALL_REVIEW


def test_the_review_link_and_controls_follow_the_review_right_in_the_draws_team(rita, world):
    # A: she reviews there (and does nothing else).
    assert _draw_controls(rita, world["a"]) == {
        "upload": False, "withdraw": False, "review_link": True, "change_review": True, "rerun": False}
    assert _review_page_controls(rita, world["a"]["draw"]) == ALL_REVIEW
    # B: a care-team member uploads (and withdraws) but does not review: no "Review this draw", no
    # "Change review" on the gallery, and the review page (reachable by URL) is read-only.
    assert _draw_controls(rita, world["b"]) == {
        "upload": True, "withdraw": True, "review_link": False, "change_review": False, "rerun": False}
    assert _review_page_controls(rita, world["b"]["draw"]) == NO_REVIEW
    assert _patient_controls(rita, world["b"]["patient"]) == NO_PATIENT


def test_an_administrator_gets_every_control_on_both_teams_pages(world):
    admin = factories.UserFactory(username="root")
    # The admin role in a third team: administrators may take every action on every patient.
    factories.MembershipFactory(team=factories.CareTeamFactory(name="Lab"), user=admin, role=Role.ADMIN)
    everything = {a.value: True for a in Action}
    for key in ("a", "b"):
        rec = world[key]
        assert _patient_controls(admin, rec["patient"]) == ALL_PATIENT
        assert _draw_controls(admin, rec) == {
            "upload": True, "withdraw": True, "review_link": True, "change_review": True, "rerun": True}
        assert _review_page_controls(admin, rec["draw"]) == ALL_REVIEW
        c = Client()
        c.force_login(admin)
        # The pages read the rights on their record (dashboard.access.rights_on), not the union.
        for url in (reverse("dashboard:patient", args=[rec["patient"].pk]),
                    reverse("dashboard:draw", args=[rec["draw"].pk]),
                    reverse("dashboard:draw_review", args=[rec["draw"].pk])):
            rights = c.get(url).context["rights"]
            assert {a.value: bool(rights[a.value]) for a in Action} == everything, url


def test_the_pages_rights_are_can_on_for_every_user_action_and_record(olga, rita, alice, bob, world, other_team):
    """``dashboard.access.rights_on`` asks the user's roles on the patient once per page; every answer
    is still ``patients.roles.can_on`` (and so what ``require_on`` lets through)."""
    from django.test import RequestFactory

    from dashboard.access import rights_on
    from patients.roles import can_on

    trial = factories.TrialFactory()
    Patient.objects.filter(pk=world["b"]["patient"].pk).update(trial=trial)
    coordinator = factories.UserFactory(username="coord")
    trial.coordinators.add(coordinator)
    admin = factories.UserFactory(username="root")
    factories.MembershipFactory(team=other_team, user=admin, role=Role.ADMIN)
    superuser = factories.UserFactory(username="su", is_superuser=True)
    records = [rec[k] for rec in world.values() for k in ("patient", "draw", "upload", "cell")]
    for user in (olga, rita, alice, bob, coordinator, admin, superuser):
        for record in records:
            record = type(record).objects.get(pk=record.pk)  # the trial set above
            request = RequestFactory().get("/")
            request.user = user
            rights = rights_on(request, record)
            assert dict(rights) == {a.value: can_on(user, a, record) for a in Action}, (user.username, record)


def test_the_draw_pages_gallery_pages_as_django_paginator_does_without_a_count_of_its_own(alice, world):
    """The per-patient rights cost the draw page one or two queries; it saves two: the gallery is counted
    by its cells' query (``COUNT(*) OVER ()``) and the category choices come from the embedding's rows.
    The pages are still Django's (numbers, counts, out-of-range and junk page numbers)."""
    from django.core.paginator import Paginator
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.views.draws import CELLS_PER_PAGE
    from patients.models import UploadStatus

    draw = world["b"]["draw"]
    add_cells(draw, 30, 40, seed=8, with_images=False)  # 75 cells: two pages
    c = Client()
    c.force_login(alice)
    shown = CellEvent.objects.filter(draw=draw, upload__status=UploadStatus.DONE)
    for query, expected in (("", shown), ("call=ctc", shown.filter(call="ctc")),
                            ("reviewed=yes", shown.exclude(reviewed_call=""))):
        # a huge number was an OFFSET past bigint (a 500, a reviewer's point): now the last page
        for number in ("", "1", "2", "3", "0", "-1", "x", "2.5", "100000000000000000000"):
            r = c.get(f"/draws/{draw.pk}/?{query}&page={number}")
            want = Paginator(expected.order_by("pk"), CELLS_PER_PAGE).get_page(number or None)
            got = r.context["page"]
            assert (got.number, got.paginator.count, got.paginator.num_pages, len(got.object_list)) == (
                want.number, want.paginator.count, want.paginator.num_pages, len(want.object_list)), (query, number)
    assert r.context["categories"] == sorted(set(shown.values_list("category", flat=True)))
    with CaptureQueriesContext(connection) as ctx:
        assert c.get(f"/draws/{draw.pk}/?call=ctc&page=1").status_code == 200
    sqls = [q["sql"] for q in ctx.captured_queries]
    assert not [q for q in sqls if q.startswith("SELECT COUNT(*)") and "reviewed_call" in q], sqls  # the gallery's
    assert not [q for q in sqls if q.startswith('SELECT DISTINCT "patients_cellevent"."category"')], sqls
