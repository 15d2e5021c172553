"""Token and session authentication; the token endpoint is throttled."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.throttling import ScopedRateThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle():
    # The throttle counts in the cache: start and end each test with none spent.
    cache.clear()
    yield
    cache.clear()


def test_token_for_username_and_password(api_client, alice):
    r = api_client.post("/api/auth/token/", {"username": "alice", "password": "pw-for-tests-only"})
    assert r.status_code == 200
    token = r.json()["token"]
    from patients.models import AuditEvent

    assert AuditEvent.objects.filter(user=alice, action="login", object_type="Token").count() == 1
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api_client.get("/api/patients/").status_code == 200


def test_it_rejects_a_wrong_password(api_client, alice):
    r = api_client.post("/api/auth/token/", {"username": "alice", "password": "nope"})
    assert r.status_code == 400
    assert "token" not in r.json()


def test_token_endpoint_is_throttled(api_client, alice, monkeypatch):
    # Guessing passwords must slow down: a low rate for this test, the 4th try is refused.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    codes = [api_client.post("/api/auth/token/", {"username": "alice", "password": "x"}).status_code
             for _ in range(4)]
    assert codes[:3] == [400, 400, 400]
    assert codes[3] == 429


@pytest.mark.parametrize("path", ["/api/patients/", "/api/draws/", "/api/events/", "/api/uploads/",
                                  "/api/export/deidentified/", "/api/models/", "/api/care-teams/"])
def test_anonymous_gets_401(api_client, path):
    assert api_client.get(path).status_code == 401


def test_a_bad_token_is_401(api_client, patient):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert api_client.get("/api/patients/").status_code == 401


def test_session_login_works_for_the_api(client, alice, patient):
    # The dashboard's session is enough for its own fetch() calls.
    client.force_login(alice)
    r = client.get("/api/patients/")
    assert r.status_code == 200
    assert r.json()["count"] == 1


def test_session_writes_need_the_csrf_token(alice, patient):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    r = browser.post("/api/draws/", {"patient": patient.pk, "drawn_at": "2025-03-01T09:00:00Z", "volume_ml": 7.5,
                                     "timepoint": "C2D1"}, content_type="application/json")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
