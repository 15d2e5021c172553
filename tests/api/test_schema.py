"""The OpenAPI schema builds without warnings, lists every route, and the docs page is served offline."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db


def _api_routes() -> set[str]:
    """Every /api/ route of the URLconf as an OpenAPI path (``{id}`` style)."""
    out: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if "<format>" in route or "format_suffix" in route:
                    continue  # DRF's .json suffix variants of the same routes
                route = route.replace("^", "").replace("$", "")
                route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
                route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
                out.add("/" + route.replace("{pk}", "{id}"))

    walk(get_resolver().url_patterns, "")
    return {r for r in out if r.startswith("/api/") and r not in ("/api/", "/api/schema/", "/api/docs/")}


def test_schema_generates_without_warnings_and_has_every_route(tmp_path, capsys):
    out = tmp_path / "schema.yml"
    # --fail-on-warn turns any warning into an error: the schema stays exact as the API grows.
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    import json

    schema = json.loads(out.read_text())
    assert schema["openapi"].startswith("3.")
    paths = set(schema["paths"])
    routes = _api_routes()
    assert len(routes) > 25, routes
    missing = routes - paths
    assert not missing, missing
    for required in ["/api/auth/token/", "/api/patients/", "/api/patients/{id}/", "/api/draws/", "/api/draws/{id}/",
                     "/api/draws/{id}/uploads/", "/api/uploads/{id}/", "/api/draws/{id}/events/",
                     "/api/draws/{id}/fhir/", "/api/patients/{id}/fhir/", "/api/export/deidentified/",
                     "/api/events/{id}/review/", "/api/summaries/", "/api/models/", "/api/care-teams/",
                     "/api/treatment-lines/", "/api/clinical-events/"]:
        assert required in paths, required
    assert "multipart/form-data" in schema["paths"]["/api/draws/{id}/uploads/"]["post"]["requestBody"]["content"]


def test_the_api_description_is_public_and_holds_no_record(client, patient):
    """docs/api.md: the schema and Swagger UI answer without credentials (the fuzz test loads the schema so);
    they describe the API, never its data. Everything else under /api/ answers 401."""
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200 and "/api/patients/{id}/" in schema.json()["paths"]
    page = client.get("/api/docs/")
    assert page.status_code == 200 and "swagger-ui" in page.content.decode()
    for body in (schema.content.decode(), page.content.decode()):
        assert patient.study_id not in body and patient.care_team.name not in body
    assert client.get("/api/").status_code == 401
    assert client.get(f"/api/patients/{patient.pk}/").status_code == 401


def test_schema_and_swagger_ui_are_served_without_a_cdn(client, alice):
    client.force_login(alice)
    r = client.get("/api/schema/?format=json")
    assert r.status_code == 200
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    # No inline script (the production CSP allows scripts from this origin only).
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), html
    init = re.findall(r'<script src="(/api/docs/[^"]+)"', html)
    assert init and client.get(init[0].replace("&amp;", "&")).status_code == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:  # served by this server, from drf-spectacular-sidecar
        assert client.get(asset).status_code == 200, asset
