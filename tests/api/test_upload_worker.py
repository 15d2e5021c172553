"""End to end through the API: real multi-channel TIFFs -> POST -> a real Celery worker -> per-file calls."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from fhir.resources.R4B.bundle import Bundle

from patients.models import BloodDraw
from tests.api.synthetic import CHANNELS, field_tiff, write_events, zip_of
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _weights_present() -> bool:
    # Weights named in the environment (CLASSIFIER_WEIGHTS, as the worker reads them) or the shipped ones.
    configured = os.environ.get("CLASSIFIER_WEIGHTS")
    if configured:
        return Path(configured).exists()
    try:
        from classifier.weights import DEFAULT_WEIGHTS
    except ImportError:
        return False
    return Path(DEFAULT_WEIGHTS).exists()


def _wait_done(client, url: str, timeout: float = 240) -> dict:
    seen: list[tuple[str, int]] = []

    def done() -> dict | None:
        body = client.get(url).json()
        seen.append((body["status"], body["progress"]))
        return body if body["status"] in ("done", "failed") else None

    body = wait_for(done, timeout=timeout, interval=0.5, what=f"upload {url} to finish ({seen[-3:]})")
    assert body["status"] == "done", body["error"]
    return body


def _client_example():
    spec = importlib.util.spec_from_file_location("client_example", ROOT / "docs" / "examples" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not _weights_present(), reason="the classifier's shipped weights are not built yet")
def test_real_tiffs_through_the_api_to_a_worker_give_per_file_calls(worker, live_server, client_for, alice, patient,
                                                                     tmp_path, capsys):
    client = client_for(alice)
    categories = ["ctc", "leukocyte", "ctc", "leukocyte", "artifact"]
    paths = write_events(tmp_path / "gallery", categories)
    t0 = time.monotonic()
    # The documented client example does the first part over real HTTP: draw, upload, wait, count.
    result = _client_example().main([
        "--url", live_server.url, "--username", "alice", "--password", "pw-for-tests-only",
        "--patient", str(patient.pk), "--folder", str(tmp_path / "gallery"), "--channels", CHANNELS,
        "--volume", "7.5", "--timepoint", "C1D1", "--timeout", "240",
    ])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    assert result["events_analysed"] == len(paths) and result["model_version"]
    draw = BloodDraw.objects.get(pk=result["draw"])
    status = client.get(f"/api/uploads/{result['upload']}/").json()
    assert status["status"] == "done" and status["progress"] == 100 and status["model_version"]

    events = client.get(f"/api/draws/{draw.pk}/events/?upload={status['id']}&page_size=1000").json()
    by_source = {e["source"]: e for e in events["results"]}
    assert set(by_source) == {p.name for p in paths}, by_source.keys()  # one event per gallery file
    for e in by_source.values():
        assert e["call"] in ("ctc", "non_ctc") and 0.0 <= e["ctc_probability"] <= 1.0
        assert e["category"] and e["reviewed_call"] == ""
    p_ctc = [by_source[p.name]["ctc_probability"] for p, c in zip(paths, categories, strict=True) if c == "ctc"]
    p_wbc = [by_source[p.name]["ctc_probability"] for p, c in zip(paths, categories, strict=True)
             if c == "leukocyte"]
    assert min(p_ctc) > max(p_wbc), (p_ctc, p_wbc)  # CK+ CD45- cells rank above CD45+ leukocytes

    # The same events as one zip: the member names come back as sources.
    r = client.post(f"/api/draws/{draw.pk}/uploads/",
                    {"file": SimpleUploadedFile("gallery.zip", zip_of(paths), content_type="application/zip"),
                     "channels": CHANNELS}, format="multipart")
    assert r.status_code == 202, r.content
    zipped = _wait_done(client, r.json()["url"])
    sources = [e["source"] for e in client.get(
        f"/api/draws/{draw.pk}/events/?upload={zipped['id']}&page_size=1000").json()["results"]]
    assert sorted(Path(s).name for s in sources) == sorted(p.name for p in paths)

    # A field image: every segmented cell is an event, its source "name#k".
    data, n_cells = field_tiff()
    r = client.post(f"/api/draws/{draw.pk}/uploads/",
                    {"file": SimpleUploadedFile("field01.tif", data, content_type="image/tiff"),
                     "channels": CHANNELS, "kind": "field", "pixel_size_um": "0.65"}, format="multipart")
    assert r.status_code == 202, r.content
    field = _wait_done(client, r.json()["url"])
    field_events = client.get(f"/api/draws/{draw.pk}/events/?upload={field['id']}&page_size=1000").json()
    sources = [e["source"] for e in field_events["results"]]
    assert sources and all(s.startswith("field01.tif#") for s in sources), sources[:5]
    assert len(set(sources)) == len(sources)
    assert abs(len(sources) - n_cells) <= max(2, n_cells // 4), (len(sources), n_cells)  # segmentation finds the cells

    draw_body = client.get(f"/api/draws/{draw.pk}/").json()
    assert draw_body["summary"]["events_analysed"] == 2 * len(paths) + len(sources)
    assert draw_body["status"] == "preliminary"
    Bundle.model_validate(client.get(f"/api/draws/{draw.pk}/fhir/").json())
    assert time.monotonic() - t0 < 300
