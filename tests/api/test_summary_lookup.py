"""Issue 12.5: "this draw's summary, or none" is one property, ``BloodDraw.summary_or_none``.

The four copies it replaced (the dashboard's via ``schedule._has_summary``, the API serializer,
FHIR, the de-identified export) agreed: a draw with a summary row is analysed, whatever its
count. Every reader still gives the same answer, including for a draw whose only upload was
withdrawn (a summary of 0 events).
"""

from __future__ import annotations

import datetime as dt

import pytest

from patients.models import BloodDraw
from patients.summary import recompute_summary
from patients.uploads import withdraw_upload
from tests import factories

pytestmark = pytest.mark.django_db


def _analysed(draw: BloodDraw, calls: list[str]):  # noqa: ANN202
    upload = factories.ImagingUploadFactory(draw=draw, model_version="ctc-dual-1.0")
    for i, c in enumerate(calls):
        factories.CellEventFactory(upload=upload, index=i, call=c, ctc_probability=0.9 if c == "ctc" else 0.1)
    recompute_summary(draw)
    return upload


def test_summary_or_none_is_the_row_or_none_without_a_query_when_selected(draw, patient,
                                                                          django_assert_num_queries):
    assert draw.summary_or_none is None
    _analysed(draw, ["ctc", "non_ctc"])
    bare = factories.BloodDrawFactory(patient=patient)
    rows = {d.pk: d for d in BloodDraw.objects.select_related("summary").filter(pk__in=[draw.pk, bare.pk])}
    with django_assert_num_queries(0):
        assert rows[draw.pk].summary_or_none.events_analysed == 2
        assert rows[bare.pk].summary_or_none is None


def test_the_pages_the_api_fhir_and_the_deidentified_export_agree(client, as_alice, alice, patient):
    def drawn(day: int) -> BloodDraw:
        return factories.BloodDrawFactory(patient=patient, drawn_at=dt.datetime(2025, 3, day, 9, tzinfo=dt.UTC))

    not_analysed, analysed, withdrawn = drawn(1), drawn(2), drawn(3)
    _analysed(analysed, ["ctc", "ctc", "non_ctc"])
    withdraw_upload(_analysed(withdrawn, ["ctc"]), alice, "channels in the wrong order")
    # events analysed; None: no summary (a draw whose only upload was withdrawn has nothing analysed:
    # no count, rather than 0 CTC read as favorable)
    expected = {not_analysed.pk: None, analysed.pk: 3, withdrawn.pk: None}

    client.force_login(alice)
    page = client.get(f"/patients/{patient.pk}/").context["draws"]
    assert {d.pk: d.summary_row and d.summary_row.events_analysed for d in page} == expected
    export = as_alice.get("/api/export/deidentified/?format=json").json()["patients"]
    (record,) = [p for p in export if p["draws"]]
    assert [d["events_analysed"] for d in record["draws"]] == list(expected.values())  # in drawn order
    for pk, n in expected.items():
        summary = client.get(f"/draws/{pk}/").context["summary"]
        assert (summary and summary.events_analysed) == n
        body = as_alice.get(f"/api/draws/{pk}/").json()
        assert body["events_analysed"] == n and (body["summary"] is None) == (n is None)
        fhir = as_alice.get(f"/api/draws/{pk}/fhir/").json()
        kinds = [e["resource"]["resourceType"] for e in fhir["entry"]]
        assert kinds.count("Observation") == (0 if n is None else 2), kinds
