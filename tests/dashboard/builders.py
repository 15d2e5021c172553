"""Test data for the dashboard: a patient with a course, and analysed draws with real-looking cells.

Cells are drawn by ``classifier.synth`` (the same generator the model trains on), so
screenshots show what a reviewer would see; calls and explanations are made up here,
the pipeline is not involved (the browser upload test runs the real worker instead).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
from django.utils import timezone

from patients.imaging import encode_grey, encode_strip
from patients.models import CellEvent, ClinicalEvent, Patient, UploadStatus
from patients.summary import recompute_summary
from tests import factories

CHANNELS = ["DAPI", "CK", "AF", "CD45"]


def _thumb(rng: np.random.Generator, category: str, size: int = 64) -> np.ndarray:
    from classifier.synth import make_event

    image, _ = make_event(rng, category, px_um=0.65, size_px=size)
    out = np.empty(image.shape, dtype=np.uint8)
    for c, ch in enumerate(image):
        lo, hi = np.percentile(ch, 1), np.percentile(ch, 99.8)
        out[c] = np.clip((ch - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def _heat(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    d = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    return (255 * np.exp(-d / (2 * (size / 7) ** 2))).astype(np.uint8)


def add_cells(draw, n_ctc: int, n_other: int, seed: int = 0, uncertain: int = 1, with_images: bool = True):
    """An analysed upload for ``draw`` with ``n_ctc`` CTC and ``n_other`` non-CTC calls; summary recomputed."""
    rng = np.random.default_rng(seed)
    upload = factories.ImagingUploadFactory(draw=draw, channels=CHANNELS, result_channels=CHANNELS,
                                            status=UploadStatus.DONE, progress=100, model_version="test-model")
    heat = encode_grey(_heat()) if with_images else b""
    rows = []
    for i in range(n_ctc + n_other):
        is_ctc = i < n_ctc
        if i < uncertain:  # the most uncertain cells first in the queue
            p = 0.55 if is_ctc else 0.45
        else:
            p = float(rng.uniform(0.8, 0.99)) if is_ctc else float(rng.uniform(0.01, 0.2))
        category = "ctc" if is_ctc else str(rng.choice(["leukocyte", "leukocyte", "ck_debris", "apoptotic_ctc"]))
        spatial = round(float(rng.uniform(0.4, 0.7)), 3)
        rows.append(CellEvent(
            upload=upload, draw=draw, index=i, source=f"event{i:03d}.tif", x=32.0, y=32.0,
            call="ctc" if is_ctc else "non_ctc", ctc_probability=round(p, 3), margin=abs(p - 0.5),
            category=category, category_probabilities={category: round(p if is_ctc else 1 - p, 3)},
            explanation={
                "branch_contributions": {"spatial": spatial, "texture": round(1 - spatial, 3)},
                "top_attributes": [
                    {"name": "ck_mean", "value": round(float(rng.uniform(0, 1)), 3), "effect": 0.8 if is_ctc else -0.5,
                     "direction": "toward_ctc" if is_ctc else "away_from_ctc"},
                    {"name": "cd45_mean", "value": round(float(rng.uniform(0, 1)), 3), "effect": -0.3,
                     "direction": "away_from_ctc"},
                    {"name": "nucleus_area_um2", "value": round(float(rng.uniform(20, 120)), 1), "effect": 0.2,
                     "direction": "toward_ctc"},
                ],
                "embedding": [round(float(v), 3) for v in rng.normal(2.0 if is_ctc else -1.0, 0.8, 8)],
            },
            thumbnail=encode_strip(_thumb(rng, category)) if with_images else b"",
            heatmap=heat,
        ))
    CellEvent.objects.bulk_create(rows)
    recompute_summary(draw)
    return upload


def two_teams(team, other_team, patient, seed: int, with_images: bool = True) -> dict[str, dict]:
    """An analysed draw (2 CTC, 3 other calls) for a patient of each team: ``"a"`` a new patient of
    ``other_team`` (TEAM-A-001), ``"b"`` ``patient`` of ``team`` (renamed TEAM-B-001); each entry holds
    the patient, draw, upload and first cell (by index). The world of the per-team rights tests."""
    a = factories.PatientFactory(care_team=other_team, study_id="TEAM-A-001")
    Patient.objects.filter(pk=patient.pk).update(study_id="TEAM-B-001")
    patient.refresh_from_db()
    out = {}
    for key, p in (("a", a), ("b", patient)):
        draw = factories.BloodDrawFactory(patient=p)
        upload = add_cells(draw, 2, 3, seed=seed, with_images=with_images)
        out[key] = {"patient": p, "draw": draw, "upload": upload,
                    "cell": CellEvent.objects.filter(upload=upload).order_by("index").first()}
    return out


def draw_on(patient, day: dt.date, timepoint: str, hour: int = 9, volume: str = "7.5"):
    moment = timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))
    return factories.BloodDrawFactory(patient=patient, drawn_at=moment, timepoint=timepoint, volume_ml=Decimal(volume))


def course_patient(team, study_id: str = "PT-DEMO-01", trial=None, arm=None, images: bool = True, today=None):
    """A metastatic breast patient over two treatment lines, converting to favorable after baseline.

    Draws: baseline (unfavorable), C3D1 (favorable), two draws on one day (C5D1 and a
    repeat), and a draw not analysed yet.
    """
    today = today or timezone.localdate()
    start = today - dt.timedelta(days=160)
    patient = factories.PatientFactory(
        care_team=team, study_id=study_id, diagnosis_date=start - dt.timedelta(days=30), enrolled_on=start,
        trial=trial, arm=arm,
    )
    factories.TreatmentLineFactory(patient=patient, line_number=1, regimen="Paclitaxel + bevacizumab", start_date=start,
                                   end_date=start + dt.timedelta(days=95), stop_reason="progression")
    factories.TreatmentLineFactory(patient=patient, line_number=2, regimen="Capecitabine",
                                   start_date=start + dt.timedelta(days=100))
    factories.ClinicalEventFactory(patient=patient, date=start + dt.timedelta(days=60), kind=ClinicalEvent.Kind.IMAGING,
                                   recist=ClinicalEvent.Recist.PR, note="CT: target lesions -35%")
    factories.ClinicalEventFactory(patient=patient, date=start + dt.timedelta(days=92),
                                   kind=ClinicalEvent.Kind.PROGRESSION, recist=ClinicalEvent.Recist.PD)
    baseline = draw_on(patient, start, "baseline")
    add_cells(baseline, 9, 14, seed=1, with_images=images)
    c3 = draw_on(patient, start + dt.timedelta(days=42), "C3D1")
    add_cells(c3, 2, 18, seed=2, with_images=images)
    c5 = draw_on(patient, start + dt.timedelta(days=90), "C5D1", hour=8)
    add_cells(c5, 1, 12, seed=3, with_images=images)
    repeat = draw_on(patient, start + dt.timedelta(days=90), "C5D1 repeat", hour=15)
    add_cells(repeat, 6, 10, seed=4, with_images=images)
    pending = draw_on(patient, start + dt.timedelta(days=120), "L2 C1D1")
    return patient, {"baseline": baseline, "c3": c3, "c5": c5, "repeat": repeat, "pending": pending}
