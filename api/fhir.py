"""HL7 FHIR R4 for CTC results: Specimen (the draw), Observations (counts), DiagnosticReport.

One draw becomes, in a ``collection`` Bundle:

- ``Patient``: the pseudonymous study ID only (no MRN, no name: the product stores none).
- ``Specimen``: venous blood (SNOMED CT 122555007), collected time, volume analysed (mL).
- ``Observation`` CTC count per 7.5 mL: status preliminary/final/amended from the draw
  summary (machine calls / every call reviewed / changed after final), interpretation
  H or N against the cancer type's prognostic cut-off (v3-ObservationInterpretation),
  method naming the classifier version, components with the raw count, the events
  analysed and the volume, and (issue 14) the count's uncertainty as components with a
  ``valueRange``: the exact 95 % Poisson interval of the count and per 7.5 mL, and the model's
  range; interpretation IND ("indeterminate until reviewed") while a preliminary count's model
  range straddles the cut-off. When the draw's images were domain-checked
  (``patients.drawdomain``): a ``domain-check`` component whose ``valueCodeableConcept`` is
  ``in_domain`` or ``shifted`` (score in its text), and a ``note`` saying so in words, with the
  reasons when the images are unlike the validated ones (the count may be wrong); the
  DiagnosticReport's conclusion then says it too. A draw without a stored check gets neither.
- ``Observation`` malignant fraction (UCUM ``%``): CTCs among the events analysed.
- ``DiagnosticReport`` grouping both, with a one-line conclusion.

There is no LOINC code for "CellSearch-type CTC per 7.5 mL"; the observations carry a
code from this product's own code system (``CODE_SYSTEM``) with a readable text. The
count per 7.5 mL has no UCUM unit of its own (UCUM factors must be integers), so the
value is a count (``{cells}``) whose unit text says "CTC/7.5 mL" and whose code says
what it is normalised to.

Identifiers of resources are stable UUIDs derived from the draw, so exporting the same
draw twice gives the same ``fullUrl`` and a receiver can de-duplicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from patients import drawdomain
from patients.drawdomain import DrawDomain
from patients.models import BloodDraw, DrawSummary, Patient, SummaryStatus
from patients.schedule import at_or_above_cutoff
from patients.stats import count_ci, per_7_5ml_ci
from patients.summary import INDETERMINATE_REVIEW, summary_status

CODE_SYSTEM = "https://ctc-monitor.example.org/fhir/CodeSystem/ctc"
STUDY_ID_SYSTEM = "https://ctc-monitor.example.org/fhir/NamingSystem/study-id"
DRAW_ID_SYSTEM = "https://ctc-monitor.example.org/fhir/NamingSystem/draw"
MODEL_SYSTEM = "https://ctc-monitor.example.org/fhir/CodeSystem/classifier-version"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"

_NS = uuid.UUID("6f1e2d7c-3b0a-4c59-9a51-0c7e5b1d2a40")

#: DrawSummary.status -> FHIR Observation/DiagnosticReport status (the same words in R4).
STATUS = {
    SummaryStatus.PRELIMINARY: "preliminary",
    SummaryStatus.FINAL: "final",
    SummaryStatus.AMENDED: "amended",
}


def _uuid(kind: str, pk: int) -> str:
    return str(uuid.uuid5(_NS, f"{kind}:{pk}"))


def _ref(kind: str, pk: int) -> dict[str, str]:
    return {"reference": f"urn:uuid:{_uuid(kind, pk)}"}


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def patient_resource(patient: Patient) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": _uuid("patient", patient.pk),
        "identifier": [{"use": "official", "system": STUDY_ID_SYSTEM, "value": patient.study_id}],
    }


def _subject(patient: Patient) -> dict[str, Any]:
    return {
        **_ref("patient", patient.pk),
        "type": "Patient",
        "identifier": {"system": STUDY_ID_SYSTEM, "value": patient.study_id},
        "display": patient.study_id,
    }


def specimen_resource(draw: BloodDraw) -> dict[str, Any]:
    return {
        "resourceType": "Specimen",
        "id": _uuid("specimen", draw.pk),
        "identifier": [{"system": DRAW_ID_SYSTEM, "value": str(draw.pk)}],
        "status": "available",
        "type": {
            "coding": [{"system": SNOMED, "code": "122555007", "display": "Venous blood specimen"}],
            "text": "Venous blood",
        },
        "subject": _subject(draw.patient),
        "collection": {
            "collectedDateTime": draw.drawn_at.isoformat(),
            "quantity": {"value": float(draw.volume_ml), "unit": "mL", "system": UCUM, "code": "mL"},
        },
        "note": [{"text": f"Timepoint {draw.timepoint}; assay: {draw.assay}"}],
    }


def _method(model_version: str) -> dict[str, Any]:
    version = model_version or "unknown"
    return {
        "coding": [{"system": MODEL_SYSTEM, "code": version, "display": f"CTC classifier {version}"}],
        "text": f"Automated image classification (dual-branch network, model version {version})"
                " of DAPI/CK/CD45 immunofluorescence events; CellSearch CTC definition",
    }


def _common(draw: BloodDraw, summary: DrawSummary) -> dict[str, Any]:
    return {
        "status": STATUS.get(summary.status, "preliminary"),
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}],
        "subject": _subject(draw.patient),
        "effectiveDateTime": draw.drawn_at.isoformat(),
        "issued": summary.updated_at.isoformat(),
        "specimen": _ref("specimen", draw.pk),
        "method": _method(summary.model_version),
    }


def unfavorable(draw: BloodDraw, summary: DrawSummary) -> bool:
    return at_or_above_cutoff(summary.ctc_per_7_5ml, draw.patient.cancer_type.ctc_cutoff)


def _range(low: float, high: float, unit: str, code: str) -> dict[str, Any]:
    return {"low": {"value": low, "unit": unit, "system": UCUM, "code": code},
            "high": {"value": high, "unit": unit, "system": UCUM, "code": code}}


def uncertainty_components(draw: BloodDraw, summary: DrawSummary) -> list[dict[str, Any]]:
    """Issue 14: the count's uncertainty as Observation components with a ``valueRange``.

    Components, not ``referenceRange``: a reference range is the range of normal values
    (here, below the cut-off), not the uncertainty of this result. Three ranges: the exact
    95 % Poisson interval of the count, the same per 7.5 mL, and the model's range (the count
    without the unsure unreviewed CTC calls .. with the unsure non-CTC calls).
    """
    volume = float(draw.volume_ml)
    low, high = count_ci(summary.ctc_count)
    low75, high75 = per_7_5ml_ci(summary.ctc_count, volume)
    cmin = summary.ctc_count if summary.ctc_count_min is None else summary.ctc_count_min
    cmax = summary.ctc_count if summary.ctc_count_max is None else summary.ctc_count_max
    return [
        {
            "code": {"coding": [{"system": CODE_SYSTEM, "code": "ctc-count-ci95",
                                 "display": "CTCs counted, exact 95% Poisson interval (Garwood)"}]},
            "valueRange": _range(low, high, "cells", "{cells}"),
        },
        {
            "code": {"coding": [{"system": CODE_SYSTEM, "code": "ctc-per-7.5ml-ci95",
                                 "display": "CTC per 7.5 mL, exact 95% Poisson interval through the volume"}]},
            "valueRange": _range(low75, high75, "CTC/7.5 mL", "{cells}"),
        },
        {
            "code": {"coding": [{"system": CODE_SYSTEM, "code": "ctc-count-model-range",
                                 "display": "CTCs counted, range over the calls the model is unsure of"}]},
            "valueRange": _range(float(cmin), float(cmax), "cells", "{cells}"),
        },
    ]


DOMAIN_DISPLAY = {drawdomain.IN_DOMAIN: "Images like the validated ones",
                  drawdomain.SHIFTED: "Images unlike the validated ones: review"}


def domain_component(domain: DrawDomain) -> dict[str, Any]:
    """The domain check as a coded component, for a receiver that reads codes rather than notes."""
    score = f" (score {domain.score_text})" if domain.score_text else ""
    return {
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "domain-check",
                             "display": "Images like those the classifier was validated on"}]},
        "valueCodeableConcept": {
            "coding": [{"system": CODE_SYSTEM, "code": domain.status, "display": DOMAIN_DISPLAY[domain.status]}],
            "text": f"Domain check {domain.status}{score}",
        },
    }


def domain_note(domain: DrawDomain) -> dict[str, str]:
    """The domain check in words (Observation.note): what a person reading the result sees."""
    if not domain.shifted:
        return {"text": "Domain check: in_domain (the images look like those the classifier was validated on)."}
    reasons = f" Reasons: {domain.reasons_text}." if domain.reasons else ""
    return {"text": drawdomain.SENTENCE + reasons}


def ctc_observation(draw: BloodDraw, summary: DrawSummary, domain: DrawDomain | None = None) -> dict[str, Any]:
    cancer = draw.patient.cancer_type
    high = unfavorable(draw, summary)
    status_text, interval_note = summary_status(draw, summary)
    indeterminate = status_text == INDETERMINATE_REVIEW
    if indeterminate:
        coding = {"system": INTERPRETATION, "code": "IND", "display": "Indeterminate"}
    else:
        coding = {"system": INTERPRETATION, "code": "H" if high else "N", "display": "High" if high else "Normal"}
    words = "Indeterminate until reviewed" if indeterminate else ("Unfavorable" if high else "Favorable")
    observation = {
        "resourceType": "Observation",
        "id": _uuid("obs-ctc", draw.pk),
        **_common(draw, summary),
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "ctc-per-7.5ml",
                        "display": "Circulating tumor cells per 7.5 mL of blood"}],
            "text": "CTC count per 7.5 mL blood",
        },
        "valueQuantity": {"value": summary.ctc_per_7_5ml, "unit": "CTC/7.5 mL", "system": UCUM, "code": "{cells}"},
        "interpretation": [{
            "coding": [coding],
            "text": words + f" (cut-off >= {cancer.ctc_cutoff} CTC/7.5 mL for {cancer.name})"
            + (f"; {interval_note}" if interval_note else ""),
        }],
        "referenceRange": [{
            "text": f"Favorable below {cancer.ctc_cutoff} CTC/7.5 mL ({cancer.cutoff_reference or cancer.name})",
        }],
        "component": [
            {
                "code": {"coding": [{"system": CODE_SYSTEM, "code": "ctc-count", "display": "CTCs counted"}]},
                "valueQuantity": {"value": summary.ctc_count, "unit": "cells", "system": UCUM, "code": "{cells}"},
            },
            {
                "code": {"coding": [{"system": CODE_SYSTEM, "code": "events-analysed", "display": "Events analysed"}]},
                "valueQuantity": {"value": summary.events_analysed, "unit": "events", "system": UCUM,
                                  "code": "{events}"},
            },
            {
                "code": {"coding": [{"system": CODE_SYSTEM, "code": "events-reviewed",
                                     "display": "Events reviewed by a person"}]},
                "valueQuantity": {"value": summary.reviewed_events, "unit": "events", "system": UCUM,
                                  "code": "{events}"},
            },
            {
                "code": {"coding": [{"system": CODE_SYSTEM, "code": "volume-analysed",
                                     "display": "Blood volume analysed"}]},
                "valueQuantity": {"value": float(draw.volume_ml), "unit": "mL", "system": UCUM, "code": "mL"},
            },
            *uncertainty_components(draw, summary),
        ],
    }
    if domain is not None:  # no stored check (analysed before it existed): the Observation as before
        observation["component"].append(domain_component(domain))
        observation["note"] = [domain_note(domain)]
    return observation


def fraction_observation(draw: BloodDraw, summary: DrawSummary) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _uuid("obs-fraction", draw.pk),
        **_common(draw, summary),
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "malignant-fraction",
                        "display": "Malignant fraction of analysed events"}],
            "text": "CTCs among the events analysed",
        },
        "valueQuantity": {"value": round(summary.malignant_fraction * 100, 2), "unit": "%", "system": UCUM,
                          "code": "%"},
    }


def report_resource(draw: BloodDraw, summary: DrawSummary | None,
                    domain: DrawDomain | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": _uuid("report", draw.pk),
        "identifier": [{"system": DRAW_ID_SYSTEM, "value": str(draw.pk)}],
        "category": [{"coding": [{"system": V2_0074, "code": "LAB", "display": "Laboratory"}]}],
        "code": {
            "coding": [{"system": CODE_SYSTEM, "code": "ctc-enumeration", "display": "CTC enumeration"}],
            "text": f"CTC enumeration, {draw.timepoint}",
        },
        "subject": _subject(draw.patient),
        "effectiveDateTime": draw.drawn_at.isoformat(),
        "specimen": [_ref("specimen", draw.pk)],
    }
    if summary is None:
        # Recorded, not yet analysed: no results to report.
        report["status"] = "registered"
        return report
    cancer = draw.patient.cancer_type
    status_text, interval_note = summary_status(draw, summary)
    verdict = status_text or ("unfavorable" if unfavorable(draw, summary) else "favorable")
    low75, high75 = per_7_5ml_ci(summary.ctc_count, float(draw.volume_ml))
    report.update(
        status=STATUS.get(summary.status, "preliminary"),
        issued=summary.updated_at.isoformat(),
        result=[_ref("obs-ctc", draw.pk), _ref("obs-fraction", draw.pk)],
        conclusion=(
            f"{summary.ctc_per_7_5ml:g} CTC per 7.5 mL ({summary.ctc_count} in {float(draw.volume_ml):g} mL; "
            f"95% CI {low75:g}-{high75:g}; "
            f"{verdict}{', ' + interval_note if interval_note else ''}, cut-off >= {cancer.ctc_cutoff} for "
            f"{cancer.name}). "
            f"{summary.reviewed_events} of {summary.events_analysed} events reviewed; status {summary.status}."
            + (f" {drawdomain.SENTENCE}" if domain is not None and domain.shifted else "")
        ),
    )
    return report


def draw_resources(draw: BloodDraw, domain: DrawDomain | None = None) -> list[dict[str, Any]]:
    """Specimen, Observations and DiagnosticReport of one draw (no Patient); ``domain``: its
    merged domain check (:func:`patients.drawdomain.for_draws`), None without one."""
    summary = draw.summary_or_none
    resources = [specimen_resource(draw)]
    if summary is not None:
        resources += [ctc_observation(draw, summary, domain), fraction_observation(draw, summary)]
    resources.append(report_resource(draw, summary, domain if summary is not None else None))
    return resources


def bundle(patient: Patient, draws: Iterable[BloodDraw], bundle_key: str) -> dict[str, Any]:
    draws = list(draws)
    # one query for the whole bundle; only analysed draws carry a count to qualify
    domains = drawdomain.for_draws(d.pk for d in draws if d.summary_or_none is not None)
    entries = [_entry(patient_resource(patient))]
    for draw in draws:
        entries += [_entry(r) for r in draw_resources(draw, domains.get(draw.pk))]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NS, bundle_key)),
        "type": "collection",
        "timestamp": timezone.now().isoformat(),
        "entry": entries,
    }


def draw_bundle(draw: BloodDraw) -> dict[str, Any]:
    return bundle(draw.patient, [draw], f"draw-bundle:{draw.pk}")


def patient_bundle(patient: Patient, draws: Iterable[BloodDraw]) -> dict[str, Any]:
    return bundle(patient, draws, f"patient-bundle:{patient.pk}")
