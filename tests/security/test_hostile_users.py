"""Issue 16, points 2-5: what a hostile user found, each answered by a clean 4xx.

2. export file names (Content-Disposition) and the identifier character set;
3. validation messages that told another team's user what exists;
4. the token throttle and the lockout trusting ``X-Forwarded-For``;
5. 500s from integers past 2^63 and from JSON nested 1,000 levels deep.
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils.http import parse_header_parameters

from patients.models import BloodDraw, Patient
from tests import factories


@pytest.fixture
def api_client():  # noqa: ANN201
    from rest_framework.test import APIClient

    return APIClient()


def _token_client(user):  # noqa: ANN001, ANN202
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return c


@pytest.fixture
def as_alice(alice):  # noqa: ANN001, ANN201
    return _token_client(alice)


@pytest.fixture
def as_charlie(charlie):  # noqa: ANN001, ANN201
    return _token_client(charlie)


HEADER_TRICK = "x\";filename*=UTF-8''report.html;a=\""
HUGE = 2**63  # one past PostgreSQL's bigint


def _filename(resp) -> str:  # noqa: ANN001
    """The file name a browser takes from Content-Disposition (``filename*`` wins, RFC 6266)."""
    value, params = parse_header_parameters(resp["Content-Disposition"])
    assert value == "attachment"
    assert set(params) <= {"filename", "filename*"}, params
    return params.get("filename*") or params["filename"]


# --- 2. file names and identifiers --------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("study_id", [HEADER_TRICK, "PT-1\r\nSet-Cookie: a=b", "PT-Ünïcode", "PT-7"])
def test_patient_export_names_the_file_safely_whatever_the_stored_study_id(client, alice, patient, study_id):
    # Records from before the character set was enforced (or the admin's bulk tools) still export.
    Patient.objects.filter(pk=patient.pk).update(study_id=study_id)
    client.force_login(alice)
    resp = client.get(f"/patients/{patient.pk}/export.csv")
    assert resp.status_code == 200
    name = _filename(resp)
    assert name.endswith("-draws.csv") and name != "report.html"
    assert "\r" not in resp["Content-Disposition"] and "\n" not in resp["Content-Disposition"]
    b"".join(resp.streaming_content)


@pytest.mark.django_db
def test_cohort_and_deidentified_exports_use_the_header_helper(client, alice, patient):
    client.force_login(alice)
    assert _filename(client.get("/cohort/export.csv")).startswith("cohort-")
    assert _filename(client.get("/api/export/deidentified/?format=csv")) == "ctc-deidentified.csv"


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [HEADER_TRICK, "PT-1\r\nX: y", "PT 1\n", "<a href=x>y</a>", "=HYPERLINK(1)",
                                 "PT\u00a01", "PT-1;rm", ""])
def test_api_refuses_study_ids_outside_the_character_set(as_alice, team, bad):
    resp = as_alice.post("/api/patients/", {"study_id": bad, "cancer_type": "breast_metastatic",
                                            "care_team": team.pk}, format="json")
    assert resp.status_code == 400, resp.content
    assert "study_id" in resp.json()
    assert not Patient.objects.filter(study_id=bad).exists()


@pytest.mark.django_db
def test_api_accepts_ordinary_study_ids_and_timepoints(as_alice, team, patient):
    resp = as_alice.post("/api/patients/", {"study_id": "BRC-2026_001.A", "cancer_type": "breast_metastatic",
                                            "care_team": team.pk}, format="json")
    assert resp.status_code == 201, resp.content
    for tp in ("baseline", "C3D1", "week 12", "EOT (cycle 6)", "C1D1/pre-dose", "follow-up #2"):
        r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2026-01-05T09:00:00Z",
                                          "volume_ml": 7.5, "timepoint": tp}, format="json")
        assert r.status_code == 201, (tp, r.content)


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["C1\r\nD1", "<b>C1</b>", "=cmd|' /C calc'!A0", "C1\"D1", ""])
def test_timepoints_outside_the_character_set_are_refused_by_api_form_and_model(as_alice, client, alice, patient,
                                                                                bad):
    r = as_alice.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2026-01-05T09:00:00Z", "volume_ml": 7.5,
                                      "timepoint": bad}, format="json")
    assert r.status_code == 400 and "timepoint" in r.json(), r.content
    r = as_alice.patch(f"/api/draws/{factories.BloodDrawFactory(patient=patient).pk}/", {"timepoint": bad},
                       format="json")
    assert r.status_code == 400 and "timepoint" in r.json(), r.content
    client.force_login(alice)
    before = BloodDraw.objects.count()
    r = client.post(f"/patients/{patient.pk}/draws/new/", {"drawn_at": "2026-01-05T09:00", "timepoint": bad,
                                                          "volume_ml": "7.5", "assay": "x"})
    assert BloodDraw.objects.count() == before and r.status_code in (200, 302, 400)
    from patients.admin import BloodDrawAdminForm

    form = BloodDrawAdminForm(data={"patient": patient.pk, "drawn_at": "2026-01-05 09:00", "volume_ml": "7.5",
                                    "timepoint": bad, "assay": "x"})
    assert not form.is_valid() and "timepoint" in form.errors


@pytest.mark.django_db
def test_the_admin_refuses_a_study_id_outside_the_character_set(team):
    from patients.admin import PatientAdminForm

    data = {"study_id": "PT\r\n1", "cancer_type": factories.cancer_type().pk, "care_team": team.pk}
    form = PatientAdminForm(data=data)
    assert not form.is_valid() and "study_id" in form.errors
    assert PatientAdminForm(data={**data, "study_id": "PT-1"}).is_valid(), PatientAdminForm(data=data).errors


# --- 3. existence ------------------------------------------------------------------------------

def _msgs(resp) -> str:  # noqa: ANN001
    return json.dumps(resp.json(), sort_keys=True)


@pytest.mark.django_db
def test_another_teams_care_team_answers_like_a_missing_one(as_charlie, team, other_team, charlie):
    body = {"study_id": "NEW-1", "cancer_type": "breast_metastatic"}
    invisible = as_charlie.post("/api/patients/", {**body, "care_team": team.pk}, format="json")
    missing_id = team.pk + other_team.pk + 1000
    missing = as_charlie.post("/api/patients/", {**body, "care_team": missing_id}, format="json")
    assert invisible.status_code == missing.status_code == 400
    assert team.name not in invisible.content.decode()
    assert _msgs(invisible).replace(str(team.pk), "N") == _msgs(missing).replace(str(missing_id), "N")


@pytest.mark.django_db
def test_a_duplicate_study_id_answers_the_same_visible_or_not(as_charlie, as_alice, patient, other_team, team):
    charlies = factories.PatientFactory(care_team=other_team, study_id="CH-1")
    invisible = as_charlie.post("/api/patients/", {"study_id": patient.study_id, "cancer_type": "breast_metastatic",
                                                   "care_team": other_team.pk}, format="json")
    visible = as_charlie.post("/api/patients/", {"study_id": charlies.study_id, "cancer_type": "breast_metastatic",
                                                 "care_team": other_team.pk}, format="json")
    assert invisible.status_code == visible.status_code == 400
    assert _msgs(invisible).replace(patient.study_id, "S") == _msgs(visible).replace(charlies.study_id, "S")
    assert "exist" not in invisible.content.decode().lower()
    # Case and a moved patient: the same rule (study IDs are unique site-wide, case-insensitively).
    moved = as_alice.patch(f"/api/patients/{patient.pk}/", {"study_id": charlies.study_id.lower()}, format="json")
    assert moved.status_code == 400 and _msgs(moved).replace(charlies.study_id.lower(), "S") == _msgs(visible).replace(
        charlies.study_id, "S")


@pytest.mark.django_db
@pytest.mark.parametrize("path,field", [("/api/draws/", "patient"), ("/api/treatment-lines/", "patient"),
                                        ("/api/clinical-events/", "patient")])
def test_related_records_of_another_team_answer_like_missing_ones(as_charlie, patient, path, field):
    body = {"drawn_at": "2026-01-05T09:00:00Z", "volume_ml": 7.5, "timepoint": "baseline", "line_number": 1,
            "regimen": "x", "start_date": "2026-01-01", "date": "2026-01-01", "kind": "surgery"}
    invisible = as_charlie.post(path, {**body, field: patient.pk}, format="json")
    missing = as_charlie.post(path, {**body, field: patient.pk + 10_000}, format="json")
    assert invisible.status_code == missing.status_code == 400
    assert _msgs(invisible).replace(str(patient.pk), "N") == _msgs(missing).replace(str(patient.pk + 10_000), "N")


# --- 4. trusted proxies ---------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_forged_forwarded_for_does_not_escape_the_token_throttle(api_client, alice):
    cache.clear()
    codes = [api_client.post("/api/auth/token/", {"username": "alice", "password": "wrong"},
                             HTTP_X_FORWARDED_FOR=f"10.0.{i // 250}.{i % 250}").status_code for i in range(25)]
    cache.clear()
    assert codes[:20] == [400] * 20 and set(codes[20:]) == {429}, codes


@pytest.mark.django_db
@override_settings(CTC_TRUSTED_PROXIES=1)
def test_behind_one_trusted_proxy_the_last_forwarded_address_is_the_client(api_client, alice):
    cache.clear()
    # Each client behind the proxy has its own budget; a forged left-hand entry changes nothing.
    first = [api_client.post("/api/auth/token/", {"username": "alice", "password": "wrong"},
                             HTTP_X_FORWARDED_FOR=f"6.6.6.{i}, 198.51.100.7").status_code for i in range(21)]
    other = api_client.post("/api/auth/token/", {"username": "alice", "password": "wrong"},
                            HTTP_X_FORWARDED_FOR="198.51.100.8").status_code
    cache.clear()
    assert first[-1] == 429 and other == 400


@pytest.mark.django_db
@override_settings(CTC_TRUSTED_PROXIES=1)
def test_the_audit_trail_takes_the_client_address_by_the_same_rule(api_client, alice):
    from patients.models import AuditEvent

    cache.clear()
    api_client.post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-only"},
                    HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.9")
    cache.clear()
    assert AuditEvent.objects.filter(action="login").latest("pk").ip_address == "198.51.100.9"


@pytest.mark.django_db
@override_settings(AXES_ENABLED=True, AXES_FAILURE_LIMIT=10)
def test_the_token_endpoint_says_locked_with_429_when_axes_locks(api_client, alice):
    from axes.utils import reset

    reset()
    cache.clear()
    codes = [api_client.post("/api/auth/token/", {"username": "alice", "password": f"wrong-{i}"},
                             HTTP_X_FORWARDED_FOR=f"10.9.9.{i}").status_code for i in range(10)]
    locked = api_client.post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-only"})
    reset()
    cache.clear()
    assert codes[:9] == [400] * 9, codes
    assert locked.status_code == 429, locked.content
    assert "locked" in locked.json()["detail"].lower()


# --- 5. hostile input --------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    f"/api/draws/?patient={HUGE}", f"/api/patients/?care_team={HUGE}", f"/api/uploads/?draw={HUGE}",
    f"/api/uploads/?patient={HUGE}", f"/api/events/?draw={HUGE}", f"/api/events/?upload={HUGE}",
    f"/api/summaries/?patient={HUGE}", f"/api/treatment-lines/?patient={HUGE}",
    f"/api/clinical-events/?patient={HUGE}", f"/api/cohort/?care_team={HUGE}", f"/api/draws/?patient=-{HUGE}",
    "/api/draws/?patient=1e400", "/api/draws/?patient=NaN", f"/api/summaries/{HUGE}/", f"/api/patients/{HUGE}/",
    f"/api/draws/{HUGE}/events/?upload={HUGE}", f"/api/events/?page={HUGE}",
    # found by tests/api/test_fuzz.py: a non-numeric id on the PNG routes, an offset PostgreSQL refuses
    "/api/events/%C2%A4/thumbnail/", "/api/events/x/heatmap/",
    "/api/summaries/?drawn_after=0163-03-15T11:21:15%2B17:52", "/api/draws/?drawn_before=0001-01-01T00:00:00%2B05:00",
])
def test_integers_past_bigint_are_a_4xx_with_a_message(as_alice, draw, url):
    resp = as_alice.get(url)
    assert 400 <= resp.status_code < 500, (url, resp.status_code, resp.content[:300])
    assert resp.content  # a message (the PNG routes answer their 404 in JSON bytes)


@pytest.mark.django_db
def test_a_detail_id_past_bigint_is_refused_before_any_query(as_alice, draw):
    # On SQLite (make run's embedded default) a foreign-key lookup with 2^63 raised OverflowError
    # (a 500 on /api/summaries/<2^63>/); PostgreSQL answered "no row". The id is now refused first.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        resp = as_alice.get(f"/api/summaries/{HUGE}/")
    assert resp.status_code == 404 and str(HUGE) in resp.json()["detail"]
    assert not [q for q in ctx.captured_queries if "patients_drawsummary" in q["sql"]]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_a_400(as_alice, api_client, alice, patient, depth):
    for c, path in ((as_alice, "/api/draws/"), (as_alice, "/api/patients/"), (api_client, "/api/auth/token/"),
                    (as_alice, f"/api/uploads/{factories.ImagingUploadFactory(draw__patient=patient).pk}/withdraw/")):
        resp = c.generic("POST", path, _nested(depth), content_type="application/json")
        assert resp.status_code == 400, (path, resp.status_code, resp.content[:300])
        assert "nest" in resp.json()["detail"].lower()
        nested_obj = b'{"timepoint": ' + _nested(depth) + b"}"
        resp = c.generic("POST", path, nested_obj, content_type="application/json")
        assert resp.status_code == 400, (path, resp.status_code, resp.content[:300])


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/cohort/?x=%00", "/api/draws/?foo=a%00b", "/api/patients/?%00=1"])
def test_a_nul_in_an_unknown_query_parameter_is_not_a_500(as_alice, draw, url):
    # Found by tests/api/test_fuzz.py: the read's audit row keeps the query, and jsonb refuses U+0000.
    from patients.models import AuditEvent

    resp = as_alice.get(url)
    assert resp.status_code == 200, (url, resp.content[:300])
    assert "\\x00" in json.dumps(AuditEvent.objects.latest("pk").detail)


@pytest.mark.django_db
@override_settings(CTC_TRUSTED_PROXIES=1)
def test_a_forwarded_hop_that_is_not_an_address_falls_back_to_remote_addr(api_client, alice):
    from patients.models import AuditEvent

    cache.clear()
    resp = api_client.post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-only"},
                           HTTP_X_FORWARDED_FOR="1.2.3.4, not-an-address", REMOTE_ADDR="192.0.2.10")
    cache.clear()
    assert resp.status_code == 200
    assert AuditEvent.objects.filter(action="login").latest("pk").ip_address == "192.0.2.10"


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["user=%00", "patient=%00", "action=%00", "since=%00"])
def test_the_audit_page_filters_survive_a_nul(client, alice, query):
    # Found by probing every dashboard page with hostile query values (the API has the fuzzer).
    alice.is_superuser = alice.is_staff = True
    alice.save()
    client.force_login(alice)
    assert client.get(f"/audit/?{query}").status_code == 200


@pytest.mark.django_db
def test_a_nul_in_a_code_is_a_4xx(as_alice):
    # Found by tests/api/test_fuzz.py (FUZZ_RANDOM=1): codes went to PostgreSQL, which refuses NUL (a 500).
    for url in ("/api/trials/%00/", "/api/cancer-types/a%00b/"):
        assert as_alice.get(url).status_code == 404, url
    for body in ({"study_id": "A-1", "cancer_type": "x\x00y"},
                 {"study_id": "A-2", "cancer_type": "breast_metastatic", "trial": "t\x00"}):
        resp = as_alice.post("/api/patients/", body, format="json")
        assert resp.status_code == 400 and "exist" in resp.content.decode(), resp.content
