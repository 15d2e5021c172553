"""Rights are per care team (patients.roles.can_on): a role in one team gives nothing in another.

olga is an oncologist of the colorectal unit (team A) and only a reviewer of the breast unit
(team B, alice's). She sees both teams' patients; on A's she may do everything an oncologist
may, on B's only review. Every route that acts on one patient asks her role in *that*
patient's team (404 first when the patient is out of sight, then 403); multi-patient exports
and cohort figures keep the patients she may export / see in a cohort (A's), not a blanket 403.
"""

from __future__ import annotations

import csv
import io
from itertools import product

import pytest
from django.core.exceptions import PermissionDenied

from patients.models import BloodDraw, CellEvent, Patient, Role
from patients.roles import Action, action_filter, can, can_on, patients_for_action
from tests import factories
from tests.dashboard.builders import two_teams

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(team, other_team, patient):
    """An analysed draw (with cells) for a patient of each team: A (olga's oncology) and B (alice's)."""
    return two_teams(team, other_team, patient, seed=3)


# --- the rule itself --------------------------------------------------------------------------


def test_olga_may_act_on_her_oncology_teams_patient_and_only_review_the_other(olga, world):
    a, b = world["a"], world["b"]
    for action in (Action.EDIT_RECORDS, Action.UPLOAD, Action.REVIEW, Action.EXPORT, Action.COHORT):
        assert can(olga, action)  # somewhere: the buttons
        assert can_on(olga, action, a["patient"]) and can_on(olga, action, a["cell"])
        assert can_on(olga, action, b["draw"]) is (action == Action.REVIEW), action
    assert not can_on(olga, Action.MANAGE_MODELS, a["patient"])


def test_a_trial_coordinator_has_the_coordinator_rights_on_the_trials_patients_only(olga, world, other_team):
    """Coordinating B's patient's trial gives olga the coordinator's rights there (export, edit), not review
    rights elsewhere; a trial patient she does not coordinate stays as her team role says."""
    trial = factories.TrialFactory()
    Patient.objects.filter(pk=world["b"]["patient"].pk).update(trial=trial)
    trial.coordinators.add(olga)
    b = Patient.objects.get(pk=world["b"]["patient"].pk)
    assert can_on(olga, Action.EXPORT, b) and can_on(olga, Action.EDIT_RECORDS, b) and can_on(olga, Action.REVIEW, b)
    coord = factories.UserFactory()
    trial.coordinators.add(coord)
    assert can_on(coord, Action.EXPORT, b) and not can_on(coord, Action.REVIEW, b)
    assert not can_on(coord, Action.EXPORT, world["a"]["patient"])  # not in the trial: not even visible


def test_admins_may_do_everything_everywhere_and_inactive_users_nothing(team, world):
    admin = factories.UserFactory()
    factories.MembershipFactory(team=team, user=admin, role=Role.ADMIN)
    root = factories.UserFactory(is_superuser=True)
    for user, action in product((admin, root), Action):
        assert can_on(user, action, world["a"]["patient"]) and can_on(user, action, world["b"]["upload"])
    root.is_active = False
    root.save()
    assert not can_on(root, Action.EXPORT, world["a"]["patient"])
    assert not patients_for_action(root, Action.EXPORT).exists()


def test_the_queryset_rule_and_the_one_patient_rule_agree_and_never_exceed_scoping(olga, alice, bob, charlie, world,
                                                                                   other_team):
    trial = factories.TrialFactory()
    in_trial = factories.PatientFactory(care_team=other_team, trial=trial)
    coord = factories.UserFactory()
    trial.coordinators.add(coord)
    member_here_reviewer_there = factories.UserFactory()
    factories.MembershipFactory(team=world["b"]["patient"].care_team, user=member_here_reviewer_there,
                                role=Role.MEMBER)
    factories.MembershipFactory(team=other_team, user=member_here_reviewer_there, role=Role.REVIEWER)
    trial.coordinators.add(member_here_reviewer_there)
    everyone = list(Patient.objects.all())
    assert in_trial in everyone
    for user, action in product((olga, alice, bob, charlie, coord, member_here_reviewer_there), Action):
        visible = set(Patient.objects.for_user(user))
        allowed = set(patients_for_action(user, action))
        assert allowed <= visible
        assert allowed == {p for p in everyone if can_on(user, action, p)}, (user.username, action)
        q = action_filter(user, action, "draw__patient__")  # the same rule through a path
        cells = CellEvent.objects.for_user(user).filter(q) if q is not None else CellEvent.objects.for_user(user)
        assert set(cells.values_list("draw__patient", flat=True)) <= {p.pk for p in allowed}


# --- dashboard: one patient --------------------------------------------------------------------


def test_dashboard_refuses_oncology_actions_on_the_reviewing_teams_patient(client, olga, world):
    client.force_login(olga)
    a, b = world["a"], world["b"]
    assert client.get(f"/patients/{a['patient'].pk}/export.csv").status_code == 200
    assert client.get(f"/patients/{b['patient'].pk}/export.csv").status_code == 403
    assert client.get(f"/patients/{b['patient'].pk}/").status_code == 200  # reading stays open to her

    drawn = {"drawn_at": "2025-03-01T09:00", "volume_ml": "7.5", "timepoint": "C2D1"}
    before = BloodDraw.objects.count()
    assert client.post(f"/patients/{b['patient'].pk}/draws/new/", drawn).status_code == 403
    assert client.post(f"/patients/{b['patient'].pk}/outcomes/", {"last_follow_up": "2025-05-01"}).status_code == 403
    assert BloodDraw.objects.count() == before
    assert client.post(f"/patients/{a['patient'].pk}/draws/new/", drawn).status_code in (200, 302)

    r = client.post(f"/draws/{b['draw'].pk}/uploads/", {"channels": "DAPI,CK,AF,CD45"})
    assert r.status_code == 403 and "upload" in r.json()["error"]
    assert client.post(f"/uploads/{b['upload'].pk}/withdraw/", {"reason": "wrong"}).status_code == 403
    b["upload"].refresh_from_db()
    assert b["upload"].status == "done"
    assert client.post(f"/uploads/{a['upload'].pk}/withdraw/", {"reason": "wrong channels"}).status_code == 302
    a["upload"].refresh_from_db()
    assert a["upload"].status == "withdrawn"


def test_dashboard_lets_her_review_the_reviewing_teams_cells(client, olga, world):
    client.force_login(olga)
    cell = world["b"]["cell"]
    r = client.post(f"/events/{cell.pk}/review/", {"call": cell.call})
    assert r.status_code == 302
    cell.refresh_from_db()
    assert cell.reviewed_call == cell.call and cell.reviewed_by == olga
    r = client.post(f"/draws/{world['b']['draw'].pk}/review/confirm/", {"cells": ""})
    assert r.status_code == 302


def test_dashboard_refuses_a_review_where_her_role_has_none(client, team, world):
    """The other way round: a member of B who reviews in A may review A's cells, not B's."""
    user = factories.UserFactory()
    factories.MembershipFactory(team=team, user=user, role=Role.MEMBER)
    factories.MembershipFactory(team=world["a"]["patient"].care_team, user=user, role=Role.REVIEWER)
    client.force_login(user)
    cell_b, cell_a = world["b"]["cell"], world["a"]["cell"]
    assert client.post(f"/events/{cell_b.pk}/review/", {"call": cell_b.call}).status_code == 403
    assert client.post(f"/draws/{world['b']['draw'].pk}/review/confirm/", {"cells": ""}).status_code == 403
    cell_b.refresh_from_db()
    assert cell_b.reviewed_call == ""
    assert client.post(f"/events/{cell_a.pk}/review/", {"call": cell_a.call}).status_code == 302


def test_an_invisible_patient_is_still_a_404_before_any_403(client, olga, world):
    elsewhere = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=factories.CareTeamFactory()))
    client.force_login(olga)
    assert client.get(f"/patients/{elsewhere.patient_id}/export.csv").status_code == 404
    assert client.post(f"/draws/{elsewhere.pk}/uploads/", {}).status_code == 404


def test_the_domain_functions_ask_the_patients_team_too(olga, world):
    from patients.review import confirm_remaining, review_event
    from patients.uploads import withdraw_upload

    with pytest.raises(PermissionDenied):
        withdraw_upload(world["b"]["upload"], olga, "wrong")
    member = factories.UserFactory()
    factories.MembershipFactory(team=world["b"]["patient"].care_team, user=member, role=Role.MEMBER)
    factories.MembershipFactory(team=world["a"]["patient"].care_team, user=member, role=Role.REVIEWER)
    with pytest.raises(PermissionDenied):
        review_event(world["b"]["cell"], member, world["b"]["cell"].call)
    with pytest.raises(PermissionDenied):
        confirm_remaining(world["b"]["draw"], member)
    assert review_event(world["a"]["cell"], member, world["a"]["cell"].call).reviewed_by == member


# --- dashboard: many patients -------------------------------------------------------------------


def _csv(resp) -> list[dict]:
    body = b"".join(resp.streaming_content) if resp.streaming else resp.content
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def test_cohort_and_survival_exports_hold_only_the_patients_she_may_export(client, olga, world):
    client.force_login(olga)
    r = client.get("/cohort/export.csv")
    assert r.status_code == 200
    assert {row["study_id"] for row in _csv(r)} == {"TEAM-A-001"}
    r = client.get("/cohort/survival/export.csv")
    assert r.status_code == 200
    assert {row["study_id"] for row in _csv(r)} <= {"TEAM-A-001"}
    # The cohort page counts the cohort she has the cohort right on.
    page = client.get("/cohort/")
    assert page.status_code == 200 and page.context["n_patients"] == 1


def test_the_training_set_export_holds_only_her_oncology_teams_cells(client, olga, world):
    import zipfile

    for key in ("a", "b"):
        CellEvent.objects.filter(draw=world[key]["draw"]).update(reviewed_call="ctc", reviewed_by=olga)
    client.force_login(olga)
    r = client.get("/review/training-set.zip")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("labels.csv").decode())))
    assert rows and {r["draw"] for r in rows} == {str(world["a"]["draw"].pk)}


# --- the review queue: what the user may review, next to read-only agreement figures -------------


def test_the_review_queue_lists_only_cells_the_user_may_review(client, olga, team, other_team, world):
    """olga reviews in both teams (oncologist of A, reviewer of B): the queue holds both draws. A member
    of B who reviews in A sees A's cells only: the cells, the pending count, the draws to review and
    the adjudication link leave B's out, while the agreement figures (a read-only statistic of every
    review the user sees, as on the Models page) still count a review of B's cell."""
    from patients.review import review_event

    a, b = world["a"], world["b"]
    member = factories.UserFactory(username="member-b-reviewer-a")
    factories.MembershipFactory(team=team, user=member, role=Role.MEMBER)
    factories.MembershipFactory(team=other_team, user=member, role=Role.REVIEWER)
    review_event(b["cell"], olga, b["cell"].call)  # one reviewed cell of B's
    CellEvent.objects.filter(draw=b["draw"], reviewed_call="").filter(
        pk=CellEvent.objects.filter(draw=b["draw"], reviewed_call="").order_by("pk").values("pk")[:1]
    ).update(adjudication_pending=True)  # one disputed cell of B's
    pending = {key: CellEvent.objects.filter(draw=world[key]["draw"], reviewed_call="").count() for key in "ab"}

    def queue(user, **params):
        client.force_login(user)
        r = client.get("/review/", params)
        assert r.status_code == 200
        return r

    r = queue(olga)
    assert {c.draw_id for c in r.context["cells"]} == {a["draw"].pk, b["draw"].pk}
    assert r.context["pending_total"] == pending["a"] + pending["b"]
    assert 'data-testid="adjudication-link"' in r.content.decode()
    assert r.context["recent"][0].may_review and "Change review" in r.content.decode()
    assert 'data-testid="adjudication-link"' in client.get("/models/").content.decode()

    r = queue(member)
    body = r.content.decode()
    cells = r.context["cells"]
    assert cells and {c.draw_id for c in cells} == {a["draw"].pk}
    assert r.context["pending_total"] == pending["a"] == len(cells)
    assert [s.draw_id for s in r.context["draw_queue"]] == [a["draw"].pk]
    assert 'data-testid="adjudication-link"' not in body  # B's disputed cell: not hers to adjudicate
    # Read-only figures: B's review counts; no "Change review" on it (reviewing it answers 403).
    assert r.context["agreement"]["reviewed"] == 1
    assert 'data-kappa-model="olga"' in body
    assert [c.pk for c in r.context["recent"]] == [b["cell"].pk] and not r.context["recent"][0].may_review
    assert "Change review" not in body
    # Every cell the queue offers, she may review (the 403 of the other team's cells is never reached).
    for c in cells:
        assert can_on(member, Action.REVIEW, c)
    assert client.post(f"/events/{cells[0].pk}/review/", {"call": cells[0].call}).status_code == 302
    # Filtering on B's draw (visible to her) shows its statistics but no cell to review; not a 404.
    r = queue(member, draw=b["draw"].pk)
    assert r.context["draw"] == b["draw"] and r.context["cells"] == [] and r.context["pending_total"] == 0
    assert r.context["agreement"]["reviewed"] == 1
    models = client.get("/models/").content.decode()  # the same card: the statistic, not the link
    assert 'data-kappa-model="olga"' in models and 'data-testid="adjudication-link"' not in models
    # The draw review page of B's draw is read-only for her; A's offers the review controls.
    body = client.get(f"/draws/{b['draw'].pk}/review/").content.decode()
    assert 'data-testid="confirm-remaining"' not in body and "not review calls" in body
    assert 'data-testid="confirm-remaining"' in client.get(f"/draws/{a['draw'].pk}/review/").content.decode()

    # A member who reviews nowhere: an empty queue (no cell, no count, no draw), the statistics stay.
    only_member = factories.UserFactory()
    factories.MembershipFactory(team=team, user=only_member, role=Role.MEMBER)
    r = queue(only_member)
    assert r.context["cells"] == [] and r.context["pending_total"] == 0 and r.context["draw_queue"] == []
    assert r.context["agreement"]["reviewed"] == 1
