"""The audit trail: changes (simple-history, with the user), reads and exports (AuditEvent),
overrides with their reason, and the administrators' audit page."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import get_resolver
from rest_framework.authtoken.models import Token

from patients.models import AuditEvent, BloodDraw, CellEvent, Patient, Role
from patients.review import review_event
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(team):
    user = factories.UserFactory(username="ada")
    factories.MembershipFactory(team=team, user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def event(draw):
    upload = factories.ImagingUploadFactory(draw=draw)
    return factories.CellEventFactory(upload=upload, call="ctc", ctc_probability=0.8)


def _token_client(client, user):
    token, _ = Token.objects.get_or_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def _routes() -> set[str]:
    out: set[str] = set()

    def walk(resolver, prefix):
        for _k, entries in resolver.reverse_dict.lists():
            for possibilities, *_ in entries:
                for fmt, _params in possibilities:
                    out.add(prefix + fmt)
        for _ns, (p, sub) in resolver.namespace_dict.items():
            walk(sub, prefix + p.replace("\\", ""))

    walk(get_resolver(), "/")
    return out


# --- changes: history rows carry the user -------------------------------------------


def test_a_patient_created_via_the_api_has_a_history_row_naming_the_user(client, alice, team):
    resp = _token_client(client, alice).post(
        "/api/patients/", {"study_id": "AUD-1", "cancer_type": "breast_metastatic", "care_team": team.pk},
        content_type="application/json")
    if resp.status_code == 405:
        pytest.skip("POST /api/patients/ does not exist yet")
    assert resp.status_code == 201, resp.content
    h = Patient.history.filter(study_id="AUD-1").latest("history_date")
    assert h.history_type == "+" and h.history_user == alice


def test_a_draw_created_via_the_api_has_a_history_row_naming_the_user(client, alice, patient):
    resp = _token_client(client, alice).post(
        "/api/draws/", {"patient": patient.pk, "drawn_at": "2025-06-01T09:00:00Z", "volume_ml": "7.5",
                        "timepoint": "C2D1"}, content_type="application/json")
    if resp.status_code == 405:
        pytest.skip("POST /api/draws/ does not exist yet")
    assert resp.status_code == 201, resp.content
    h = BloodDraw.history.filter(patient_id=patient.pk, timepoint="C2D1").latest("history_date")
    assert h.history_user == alice


def test_a_draw_recorded_with_the_dashboard_form_has_a_history_row_naming_the_user(client, alice, patient):
    from django.urls import Resolver404, resolve

    url = f"/patients/{patient.pk}/draws/new/"
    try:
        resolve(url)
    except Resolver404:
        pytest.skip("the dashboard's draw form does not exist yet")
    client.force_login(alice)
    resp = client.post(url, {"drawn_at": "2025-06-01T09:00", "timepoint": "C4D1", "volume_ml": "7.5",
                             "assay": "CTC enumeration"})
    assert resp.status_code == 302
    h = BloodDraw.history.filter(patient_id=patient.pk, timepoint="C4D1").latest("history_date")
    assert h.history_type == "+" and h.history_user == alice


def test_changes_made_in_a_request_carry_the_user_update_and_delete_too(rf, alice, patient):
    # The middleware path every view (dashboard, API, admin) goes through.
    from simple_history.models import HistoricalRecords

    request = rf.post("/")
    request.user = alice
    HistoricalRecords.context.request = request
    try:
        line = factories.TreatmentLineFactory(patient=patient, regimen="FOLFOX")
        line.regimen = "FOLFIRI"
        line.save()
        line.delete()
    finally:
        del HistoricalRecords.context.request
    rows = list(patient.treatment_lines.model.history.filter(patient_id=patient.pk).order_by("history_date"))
    assert [r.history_type for r in rows] == ["+", "~", "-"]
    assert {r.history_user for r in rows} == {alice}


# --- overrides carry their reason ------------------------------------------------------


def test_an_override_needs_a_reason_and_the_history_keeps_it_with_the_reviewer(bob, event):
    with pytest.raises(ValidationError):
        review_event(event, bob, "non_ctc", "")
    review_event(event, bob, "non_ctc", "debris overlapping a leukocyte")
    h = CellEvent.history.filter(id=event.pk).latest("history_date")
    assert h.history_user == bob
    assert "debris overlapping a leukocyte" in h.history_change_reason
    assert h.review_reason == "debris overlapping a leukocyte" and h.reviewed_call == "non_ctc"


# --- reads and exports are recorded -------------------------------------------------------


@pytest.mark.parametrize("url", ["/patients/{patient}/", "/api/patients/{patient}/", "/draws/{draw}/",
                                 "/api/draws/{draw}/"])
def test_viewing_a_patient_record_is_recorded(client, alice, patient, draw, url):
    client.force_login(alice)
    url = url.format(patient=patient.pk, draw=draw.pk)
    resp = _token_client(client, alice).get(url)
    assert resp.status_code == 200
    ev = AuditEvent.objects.filter(action="view", user=alice, patient=patient).order_by("-at").first()
    assert ev is not None, f"GET {url} did not call patients.audit.record(request, 'view', ...)"
    assert ev.path.startswith(url.rstrip("/")) and ev.ip_address


def test_every_export_route_records_an_export(client, alice, patient, draw, event):
    from patients.summary import recompute_summary

    recompute_summary(draw)
    exports = sorted(r for r in _routes() if any(w in r for w in ("export", "fhir", ".csv", "deid")))
    if not exports:
        pytest.skip("no export routes yet")
    client.force_login(alice)
    _token_client(client, alice)
    missing = []
    for fmt in exports:
        url = fmt.replace("%(pk)s", str(patient.pk if "patients/" in fmt else draw.pk))
        if "%(" in url:
            continue
        before = AuditEvent.objects.filter(action="export", user=alice).count()
        resp = client.get(url)
        if resp.status_code != 200:
            continue  # e.g. a POST-only export form; not a read
        if AuditEvent.objects.filter(action="export", user=alice).count() == before:
            missing.append(url)
    assert not missing, f"exports without an audit record: {missing}"


def test_a_rejected_view_of_another_teams_patient_leaves_no_data_but_is_not_a_view(client, charlie, patient):
    client.force_login(charlie)
    assert client.get(f"/patients/{patient.pk}/").status_code == 404
    assert not AuditEvent.objects.filter(user=charlie, action="view", patient=patient).exists()


# --- the audit page ------------------------------------------------------------------------


def test_the_audit_page_is_for_administrators_only(client, alice, admin_user):
    assert client.get("/audit/").status_code == 302  # anonymous -> login
    client.force_login(alice)
    assert client.get("/audit/").status_code == 403
    client.force_login(admin_user)
    assert client.get("/audit/").status_code == 200


def test_the_audit_page_filters_by_user_patient_and_action(client, admin_user, alice, bob, patient, event,
                                                          other_team):
    other = factories.PatientFactory(care_team=other_team, study_id="OTHER-9")
    AuditEvent.objects.create(user=alice, action="view", object_type="Patient", object_id=str(patient.pk),
                              patient=patient, ip_address="10.0.0.7", path=f"/patients/{patient.pk}/")
    AuditEvent.objects.create(user=bob, action="export", object_type="Patient", object_id=str(other.pk),
                              patient=other, path="/cohort/export.csv")
    review_event(event, bob, "non_ctc", "apoptotic blebbing")
    client.force_login(admin_user)

    page = client.get("/audit/").content.decode()
    assert "10.0.0.7" in page and "/cohort/export.csv" in page and "apoptotic blebbing" in page

    by_user = client.get("/audit/", {"user": "alice"}).content.decode()
    assert "10.0.0.7" in by_user and "/cohort/export.csv" not in by_user

    by_patient = client.get("/audit/", {"patient": "OTHER-9"}).content.decode()
    assert "/cohort/export.csv" in by_patient and "10.0.0.7" not in by_patient

    by_action = client.get("/audit/", {"action": "update", "user": "bob"}).content.decode()
    assert "apoptotic blebbing" in by_action and "/cohort/export.csv" not in by_action

    exports = client.get("/audit/", {"action": "export"}).content.decode()
    assert "/cohort/export.csv" in exports and "10.0.0.7" not in exports
    # Looking at the trail is itself recorded.
    assert AuditEvent.objects.filter(user=admin_user, object_type="AuditTrail").count() == 5


#: Reads of one object that are not a view of the record: the upload form's progress poll.
NOT_A_RECORD_VIEW = ("/uploads/%(pk)s/status/",)


def test_every_read_of_one_patient_object_is_audited(client, alice, patient):
    """Every GET route taking one object id (dashboard and API, as the resolver lists them
    when the test runs) that answers 200 writes an AuditEvent for alice's patient."""
    draw = factories.BloodDrawFactory(patient=patient)
    upload = factories.ImagingUploadFactory(draw=draw)
    cell = factories.CellEventFactory(upload=upload)
    from patients.summary import recompute_summary

    ids = {"patients": patient.pk, "draws": draw.pk, "uploads": upload.pk, "events": cell.pk,
           "treatment-lines": factories.TreatmentLineFactory(patient=patient).pk,
           "clinical-events": factories.ClinicalEventFactory(patient=patient).pk,
           "summaries": recompute_summary(draw).pk}
    client.force_login(alice)
    _token_client(client, alice)
    checked, missing = 0, []
    for fmt in sorted(_routes()):
        if fmt.startswith("/admin/") or fmt.count("%(") != 1 or "%(format)s" in fmt or fmt in NOT_A_RECORD_VIEW:
            continue
        seg = fmt.split("%(")[0].rstrip("/").rsplit("/", 1)[-1]
        if seg not in ids:
            continue
        url = re.sub(r"%\(\w+\)s", str(ids[seg]), fmt)
        before = AuditEvent.objects.filter(user=alice, patient=patient).count()
        if client.get(url).status_code != 200:
            continue  # POST-only routes, images the factories do not make
        checked += 1
        if AuditEvent.objects.filter(user=alice, patient=patient).count() == before:
            missing.append(url)
    assert checked >= 4, "the walk found too few routes to mean anything"
    assert not missing, f"reads of patient data without an audit record: {missing}"


def test_web_sign_in_sign_out_and_failed_sign_in_are_audited(client, alice):
    r = client.post("/accounts/login/", {"username": "alice", "password": "wrong-password-123"},
                    REMOTE_ADDR="10.1.2.3")
    assert r.status_code == 200  # the form again
    failed = AuditEvent.objects.get(action="login_fail")
    assert failed.user is None and failed.detail == {"username": "alice"} and failed.ip_address == "10.1.2.3"
    assert "wrong-password" not in str(failed.detail) and "wrong-password" not in failed.path
    r = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"},
                    REMOTE_ADDR="10.1.2.3")
    assert r.status_code == 302
    login = AuditEvent.objects.get(action="login")
    assert login.user == alice and login.ip_address == "10.1.2.3" and login.object_type == "Session"
    client.post("/accounts/logout/", REMOTE_ADDR="10.1.2.4")
    logout = AuditEvent.objects.get(action="logout")
    assert logout.user == alice and logout.ip_address == "10.1.2.4"


def test_a_failed_api_token_login_is_audited_without_the_password(client, alice):
    r = client.post("/api/auth/token/", {"username": "alice", "password": "not-it-at-all"})
    assert r.status_code == 400
    failed = AuditEvent.objects.get(action="login_fail")
    assert failed.detail == {"username": "alice"}


def test_the_audit_page_says_when_the_since_date_is_not_a_date(client, admin_user):
    client.force_login(admin_user)
    for bad in ["garbage", "2026-02-30"]:
        body = client.get("/audit/", {"since": bad}).content.decode()
        assert "is not a date" in body and "YYYY-MM-DD" in body
    assert "is not a date" not in client.get("/audit/", {"since": "2026-01-01"}).content.decode()
