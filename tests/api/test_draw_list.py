"""/api/draws/ is serialised with shortcuts (one nested summary serializer, links from a template):
the output must stay exactly what plain DRF fields give."""

from __future__ import annotations

import json

from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from api.serializers import DrawSerializer, DrawSummarySerializer, ListedIdentityField
from patients.models import BloodDraw
from patients.summary import recompute_summary
from tests import factories


class PlainDrawSerializer(DrawSerializer):
    """DrawSerializer as DRF would do it without the shortcuts: the reference."""

    url = serializers.HyperlinkedIdentityField(view_name="api:draw-detail")
    uploads_url = serializers.HyperlinkedIdentityField(view_name="api:draw-uploads")
    events_url = serializers.HyperlinkedIdentityField(view_name="api:draw-events")
    fhir_url = serializers.HyperlinkedIdentityField(view_name="api:draw-fhir")

    def get_summary(self, draw: BloodDraw) -> dict | None:
        s = draw.summary_or_none
        return DrawSummarySerializer(s).data if s is not None else None


def _draws(team, n: int = 4) -> list[BloodDraw]:
    draws = []
    for i in range(n):
        draw = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=team))
        if i % 2 == 0:  # half analysed, half without a summary (null summary fields)
            upload = factories.ImagingUploadFactory(draw=draw)
            factories.CellEventFactory(upload=upload)
            recompute_summary(draw)
        draws.append(draw)
    return draws


def test_list_output_is_what_plain_drf_fields_give(as_alice, team):
    _draws(team)
    body = as_alice.get("/api/draws/?page_size=100").json()
    qs = BloodDraw.objects.select_related("summary", "patient__cancer_type").order_by("drawn_at", "pk")
    request = Request(APIRequestFactory().get("/api/draws/"))
    expected = json.loads(JSONRenderer().render(PlainDrawSerializer(qs, many=True, context={"request": request}).data))
    assert body["count"] == 4
    assert body["results"] == expected
    assert sum(r["summary"] is None for r in body["results"]) == 2
    analysed = next(r for r in body["results"] if r["summary"])
    assert analysed["url"].endswith(f"/api/draws/{analysed['id']}/")
    assert analysed["events_url"].endswith(f"/api/draws/{analysed['id']}/events/")


def test_detail_output_is_unchanged(as_alice, team):
    draw = _draws(team, 1)[0]
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    request = Request(APIRequestFactory().get(f"/api/draws/{draw.pk}/"))
    draw = BloodDraw.objects.select_related("summary").get(pk=draw.pk)
    assert body == json.loads(JSONRenderer().render(PlainDrawSerializer(draw, context={"request": request}).data))


def test_link_template_follows_the_request(settings):
    """A field reused with another request (another host) must not keep the first request's links."""
    settings.ALLOWED_HOSTS = ["one.example", "two.example"]
    field = ListedIdentityField(view_name="api:draw-detail")
    one = Request(APIRequestFactory().get("/", HTTP_HOST="one.example"))
    two = Request(APIRequestFactory().get("/", HTTP_HOST="two.example"))
    draw = BloodDraw(pk=7)
    assert field.get_url(draw, "api:draw-detail", one, None) == "http://one.example/api/draws/7/"
    assert field.get_url(BloodDraw(pk=8), "api:draw-detail", one, None) == "http://one.example/api/draws/8/"
    assert field.get_url(draw, "api:draw-detail", two, None) == "http://two.example/api/draws/7/"
    assert field.get_url(BloodDraw(), "api:draw-detail", two, None) is None  # unsaved: no URL
