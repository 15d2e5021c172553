"""FHIR R4 export, validated with the fhir.resources package (R4B models: R4-compatible for these resources)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.specimen import Specimen

from patients.models import AuditEvent
from patients.summary import recompute_summary
from tests import factories

pytestmark = pytest.mark.django_db

CLASSES = {"Patient": FhirPatient, "Specimen": Specimen, "Observation": Observation,
           "DiagnosticReport": DiagnosticReport}


def _analysed(draw, calls):
    upload = factories.ImagingUploadFactory(draw=draw, model_version="ctc-dual-1.0")
    for c in calls:
        factories.CellEventFactory(upload=upload, call=c, ctc_probability=0.9 if c == "ctc" else 0.1)
    return recompute_summary(draw)


def _validated(body: dict) -> dict[str, list[dict]]:
    Bundle.model_validate(body)
    by_type: dict[str, list[dict]] = {}
    for entry in body["entry"]:
        res = entry["resource"]
        CLASSES[res["resourceType"]].model_validate(res)  # each resource against its own R4 model
        assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
        by_type.setdefault(res["resourceType"], []).append(res)
    # every reference inside the bundle resolves to an entry
    urls = {e["fullUrl"] for e in body["entry"]}
    for res in (r for rs in by_type.values() for r in rs):
        for ref in _references(res):
            assert ref in urls, ref
    return by_type


def _references(obj) -> list[str]:
    if isinstance(obj, dict):
        out = [obj["reference"]] if isinstance(obj.get("reference"), str) else []
        return out + [r for v in obj.values() for r in _references(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _references(v)]
    return []


def test_draw_bundle_is_valid_r4_with_specimen_observations_and_report(as_alice, patient):
    draw = factories.BloodDrawFactory(patient=patient, volume_ml=Decimal("5.0"),
                                      drawn_at=dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC))
    _analysed(draw, ["ctc"] * 4 + ["non_ctc"] * 6)  # 4 in 5 mL -> 6 per 7.5 mL: above the breast cut-off of 5
    r = as_alice.get(f"/api/draws/{draw.pk}/fhir/")
    assert r.status_code == 200 and r["Content-Type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "collection"
    res = _validated(body)
    assert len(res["Specimen"]) == 1 and len(res["Observation"]) == 2 and len(res["DiagnosticReport"]) == 1

    spec = res["Specimen"][0]
    assert spec["type"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "122555007",
                                         "display": "Venous blood specimen"}
    assert spec["collection"]["collectedDateTime"].startswith("2025-03-01T09:00:00")
    assert spec["collection"]["quantity"] == {"value": 5.0, "unit": "mL", "system": "http://unitsofmeasure.org",
                                              "code": "mL"}

    ctc, frac = sorted(res["Observation"], key=lambda o: o["code"]["coding"][0]["code"])
    assert ctc["code"]["coding"][0]["code"] == "ctc-per-7.5ml"
    assert ctc["valueQuantity"]["value"] == 6.0 and ctc["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert ctc["status"] == "preliminary"
    assert ctc["effectiveDateTime"].startswith("2025-03-01T09:00:00")
    assert ctc["interpretation"][0]["coding"][0]["code"] == "H"
    assert ctc["interpretation"][0]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation")
    assert "ctc-dual-1.0" in ctc["method"]["text"]
    assert ctc["subject"]["identifier"]["value"] == patient.study_id
    assert ctc["specimen"]["reference"] == f"urn:uuid:{spec['id']}"
    assert frac["valueQuantity"] == {"value": 40.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}

    report = res["DiagnosticReport"][0]
    assert {r["reference"] for r in report["result"]} == {f"urn:uuid:{ctc['id']}", f"urn:uuid:{frac['id']}"}
    assert report["status"] == "preliminary"
    assert res["Patient"][0]["identifier"][0]["value"] == patient.study_id
    assert "mrn" not in r.content.decode().lower()
    assert AuditEvent.objects.filter(action="export", patient=patient).count() == 1


def test_status_follows_the_review_and_interpretation_the_cut_off(as_alice, bob, patient):
    from patients.review import review_event

    draw = factories.BloodDrawFactory(patient=patient)
    _analysed(draw, ["ctc", "non_ctc"])  # 1 per 7.5 mL: below 5
    for e in draw.events.all():
        review_event(e, bob, e.call)
    res = _validated(as_alice.get(f"/api/draws/{draw.pk}/fhir/").json())
    assert {o["status"] for o in res["Observation"]} == {"final"}
    ctc = next(o for o in res["Observation"] if o["code"]["coding"][0]["code"] == "ctc-per-7.5ml")
    assert ctc["interpretation"][0]["coding"][0]["code"] == "N"
    e = draw.events.get(call="non_ctc")
    review_event(e, bob, "ctc", "CK+ after all", change=True)
    res = _validated(as_alice.get(f"/api/draws/{draw.pk}/fhir/").json())
    assert {o["status"] for o in res["Observation"]} == {"amended"}
    assert res["DiagnosticReport"][0]["status"] == "amended"


def test_a_draw_without_results_is_registered_only(as_alice, draw):
    res = _validated(as_alice.get(f"/api/draws/{draw.pk}/fhir/").json())
    assert "Observation" not in res and res["DiagnosticReport"][0]["status"] == "registered"


def test_patient_bundle_has_every_draw(as_alice, patient, django_assert_max_num_queries):
    draws = [factories.BloodDrawFactory(patient=patient, drawn_at=dt.datetime(2025, m, 1, tzinfo=dt.UTC))
             for m in (1, 2, 3)]
    _analysed(draws[0], ["ctc"])
    _analysed(draws[1], ["non_ctc"])
    with django_assert_max_num_queries(10):
        body = as_alice.get(f"/api/patients/{patient.pk}/fhir/").json()
    res = _validated(body)
    assert len(res["Patient"]) == 1 and len(res["Specimen"]) == 3 and len(res["DiagnosticReport"]) == 3
    assert len(res["Observation"]) == 4
