"""The role matrix and care-team scoping, checked against docs/security.md's table."""

from __future__ import annotations

import pytest

from patients.models import BloodDraw, CellEvent, Patient, Role
from patients.roles import PERMISSIONS, Action, can, roles_of
from tests import factories

pytestmark = pytest.mark.django_db

# The table in docs/security.md, spelled out: a change to the matrix must change both.
EXPECTED = {
    Role.ONCOLOGIST: {"edit_records", "upload", "review", "export", "cohort"},
    Role.COORDINATOR: {"edit_records", "upload", "export", "cohort"},
    Role.MEMBER: {"upload"},
    Role.REVIEWER: {"review"},
    Role.ADMIN: {a.value for a in Action},
}


@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_do_exactly_what_the_documented_matrix_says(role, team):
    user = factories.UserFactory()
    factories.MembershipFactory(team=team, user=user, role=role)
    allowed = {a.value for a in Action if can(user, a)}
    assert allowed == EXPECTED[role]
    assert {a.value for a in PERMISSIONS[role]} == EXPECTED[role]


def test_the_matrix_is_documented_in_security_md():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    for role in Role:
        assert role.label in doc, f"docs/security.md does not describe the role {role.label!r}"
    for action in Action:
        assert f"`{action.value}`" in doc, f"docs/security.md does not name the action {action.value!r}"


def test_a_user_sees_only_the_patients_of_their_teams(alice, charlie, patient, other_team):
    theirs = factories.PatientFactory(care_team=other_team)
    assert list(Patient.objects.for_user(alice)) == [patient]
    assert list(Patient.objects.for_user(charlie)) == [theirs]
    draw = factories.BloodDrawFactory(patient=patient)
    event = factories.CellEventFactory(upload=factories.ImagingUploadFactory(draw=draw))
    assert not BloodDraw.objects.for_user(charlie).filter(pk=draw.pk).exists()
    assert not CellEvent.objects.for_user(charlie).filter(pk=event.pk).exists()
    assert CellEvent.objects.for_user(alice).filter(pk=event.pk).exists()


def test_a_trial_coordinator_sees_the_trials_patients_from_every_site_and_nothing_else(team, other_team, patient):
    trial = factories.TrialFactory()
    enrolled = factories.PatientFactory(care_team=other_team, trial=trial)
    factories.PatientFactory(care_team=other_team)  # same site, not in the trial
    coord = factories.UserFactory()
    trial.coordinators.add(coord)
    assert list(Patient.objects.for_user(coord)) == [enrolled]
    assert Role.COORDINATOR in roles_of(coord)
    assert can(coord, Action.EXPORT) and can(coord, Action.COHORT)
    assert not can(coord, Action.REVIEW)


def test_a_member_of_two_teams_sees_both_without_duplicates(team, other_team, patient):
    user = factories.UserFactory()
    factories.MembershipFactory(team=team, user=user, role=Role.MEMBER)
    factories.MembershipFactory(team=other_team, user=user, role=Role.REVIEWER)
    other = factories.PatientFactory(care_team=other_team)
    trial = factories.TrialFactory()
    trial.coordinators.add(user)
    Patient.objects.filter(pk=other.pk).update(trial=trial)
    assert sorted(Patient.objects.for_user(user).values_list("pk", flat=True)) == sorted([patient.pk, other.pk])
    assert can(user, Action.UPLOAD) and can(user, Action.REVIEW)


def test_admins_see_everything_and_inactive_or_anonymous_users_nothing(team, patient, other_team):
    from django.contrib.auth.models import AnonymousUser

    theirs = factories.PatientFactory(care_team=other_team)
    admin = factories.UserFactory()
    factories.MembershipFactory(team=team, user=admin, role=Role.ADMIN)
    assert set(Patient.objects.for_user(admin)) == {patient, theirs}
    assert can(admin, Action.AUDIT)
    admin.is_active = False
    admin.save()
    assert not Patient.objects.for_user(admin).exists()
    assert not can(admin, Action.AUDIT)
    assert not Patient.objects.for_user(AnonymousUser()).exists()
    assert not can(AnonymousUser(), Action.UPLOAD)


# --- the views enforce the matrix, not just patients.roles -------------------------------------


def _routes() -> list[str]:
    from django.urls import get_resolver

    out: set[str] = set()

    def walk(resolver, prefix):
        for _k, entries in resolver.reverse_dict.lists():
            for possibilities, *_ in entries:
                for fmt, _params in possibilities:
                    out.add(prefix + fmt)
        for _ns, (p, sub) in resolver.namespace_dict.items():
            walk(sub, prefix + p.replace("\\", ""))

    walk(get_resolver(), "/")
    return sorted(out)


def test_a_reviewer_of_the_same_team_cannot_export_and_a_member_cannot_review(client, bob, team, patient):
    from rest_framework.authtoken.models import Token

    from patients.summary import recompute_summary

    draw = factories.BloodDrawFactory(patient=patient)
    event = factories.CellEventFactory(upload=factories.ImagingUploadFactory(draw=draw))
    recompute_summary(draw)
    ids = {"patients/": patient.pk, "draws/": draw.pk, "events/": event.pk}

    def concrete(fmt: str) -> str | None:
        for seg, pk in ids.items():
            fmt = fmt.replace(f"{seg}%(pk)s", f"{seg}{pk}")
        return None if "%(" in fmt else fmt

    exports = [u for u in map(concrete, _routes()) if u and not u.startswith("/admin/")
               and any(w in u for w in ("export", "fhir", "deid", ".csv"))]
    token = Token.objects.create(user=bob)
    client.force_login(bob)
    leaks = []
    for url in exports:
        resp = client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}")
        if resp.status_code == 200:
            leaks.append(url)
    assert not leaks, f"a reviewer (no export right) could export: {leaks}"

    member = factories.UserFactory()
    factories.MembershipFactory(team=team, user=member, role=Role.MEMBER)
    client.force_login(member)
    resp = client.post(f"/events/{event.pk}/review/", {"call": "ctc", "reason": "x"})
    assert resp.status_code in (403, 404, 405)
    event.refresh_from_db()
    assert event.reviewed_call == ""


def test_a_deactivated_user_is_out_at_the_next_request_session_and_token(client, alice, patient):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=alice)
    client.force_login(alice)
    assert client.get(f"/patients/{patient.pk}/").status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get(f"/patients/{patient.pk}/").status_code in (302, 403, 404)
    client.logout()
    assert client.get("/api/patients/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code in (401, 403)


def test_scoping_filters_on_the_patient_not_on_a_self_join(alice):
    # A self-join over CellEvent (millions of rows) took seconds; the patient subquery uses indexes.
    sql = str(CellEvent.objects.for_user(alice).query)
    assert sql.count('FROM "patients_cellevent"') == 1 and 'FROM "patients_patient"' in sql, sql
