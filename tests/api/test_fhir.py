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


# --- The domain check travels with the count (patients.drawdomain) ---------------------------------

REASON = "RGB composite (a colour picture: PNG, JPEG or RGB TIFF): the model was validated on separate channels"


def _checked(patient, check, day):
    draw = factories.BloodDrawFactory(patient=patient, drawn_at=dt.datetime(2025, 3, day, 9, tzinfo=dt.UTC))
    _analysed(draw, ["ctc", "non_ctc", "non_ctc"])
    draw.uploads.update(domain_check=check)
    recompute_summary(draw)
    return draw


def _ctc(res):
    return next(o for o in res["Observation"] if o["code"]["coding"][0]["code"] == "ctc-per-7.5ml")


def _domain_component(obs):
    found = [c for c in obs["component"] if c["code"]["coding"][0]["code"] == "domain-check"]
    return found[0] if found else None


def test_a_shifted_draw_says_so_in_the_ctc_observation_and_the_report(as_alice, patient):
    draw = _checked(patient, {"status": "shifted", "score": 0.64, "reasons": [REASON]}, 1)
    res = _validated(as_alice.get(f"/api/draws/{draw.pk}/fhir/").json())  # still valid R4(B)
    ctc = _ctc(res)
    (note,) = ctc["note"]
    assert "Images unlike the ones the classifier was validated on" in note["text"] and REASON in note["text"]
    comp = _domain_component(ctc)
    assert comp["valueCodeableConcept"]["coding"][0]["code"] == "shifted"
    assert "0.64" in comp["valueCodeableConcept"]["text"]
    assert "Images unlike the ones the classifier was validated on" in res["DiagnosticReport"][0]["conclusion"]
    frac = next(o for o in res["Observation"] if o is not ctc)
    assert "note" not in frac  # the flag belongs to the count


def test_an_in_domain_draw_is_coded_but_not_flagged_and_an_unchecked_one_is_as_before(as_alice, patient):
    inside = _checked(patient, {"status": "in_domain", "score": 0.05, "reasons": []}, 2)
    unchecked = _checked(patient, None, 3)
    body = as_alice.get(f"/api/patients/{patient.pk}/fhir/").json()
    res = _validated(body)
    by_draw = {o["specimen"]["reference"]: o for o in res["Observation"]
               if o["code"]["coding"][0]["code"] == "ctc-per-7.5ml"}
    spec = {s["identifier"][0]["value"]: f"urn:uuid:{s['id']}" for s in res["Specimen"]}
    ok = by_draw[spec[str(inside.pk)]]
    assert _domain_component(ok)["valueCodeableConcept"]["coding"][0]["code"] == "in_domain"
    assert "unlike" not in ok["note"][0]["text"]
    plain = by_draw[spec[str(unchecked.pk)]]
    assert "note" not in plain and _domain_component(plain) is None
    assert not any("unlike" in r.get("conclusion", "") for r in res["DiagnosticReport"])
