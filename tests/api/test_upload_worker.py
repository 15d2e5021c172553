"""End to end through the API: real multi-channel TIFFs -> POST -> a real Celery worker -> per-file calls."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from fhir.resources.R4B.bundle import Bundle

from tests.api.synthetic import CHANNELS, write_events, zip_of
from tests.conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _weights_present() -> bool:
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


@pytest.mark.skipif(not _weights_present(), reason="the classifier's shipped weights are not built yet")
def test_real_tiffs_through_the_api_to_a_worker_give_per_file_calls(worker, client_for, alice, draw, tmp_path):
    client = client_for(alice)
    categories = ["ctc", "leukocyte", "ctc", "leukocyte", "artifact"]
    paths = write_events(tmp_path / "gallery", categories)
    files = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/tiff") for p in paths]
    t0 = time.monotonic()
    r = client.post(f"/api/draws/{draw.pk}/uploads/", {"file": files, "channels": CHANNELS, "kind": "events",
                                                       "pixel_size_um": "0.65"}, format="multipart")
    assert r.status_code == 202, r.content
    status = _wait_done(client, r["Location"])
    assert status["progress"] == 100 and status["model_version"]

    events = client.get(f"/api/draws/{draw.pk}/events/?upload={status['id']}&page_size=1000").json()
    by_source = {e["source"]: e for e in events["results"]}
    assert set(by_source) == {p.name for p in paths}, by_source.keys()  # one event per gallery file
    for e in by_source.values():
        assert e["call"] in ("ctc", "non_ctc") and 0.0 <= e["ctc_probability"] <= 1.0
        assert e["category"] and e["reviewed_call"] == ""
    p_ctc = [by_source[p.name]["ctc_probability"] for p, c in zip(paths, categories, strict=True) if c == "ctc"]
    p_other = [by_source[p.name]["ctc_probability"] for p, c in zip(paths, categories, strict=True) if c != "ctc"]
    assert min(p_ctc) > max(p_other), (p_ctc, p_other)  # clear synthetic cases are ranked right

    # The same events as one zip: the member names come back as sources.
    r = client.post(f"/api/draws/{draw.pk}/uploads/",
                    {"file": SimpleUploadedFile("gallery.zip", zip_of(paths), content_type="application/zip"),
                     "channels": CHANNELS}, format="multipart")
    assert r.status_code == 202, r.content
    zipped = _wait_done(client, r.json()["url"])
    sources = [e["source"] for e in client.get(
        f"/api/draws/{draw.pk}/events/?upload={zipped['id']}&page_size=1000").json()["results"]]
    assert sorted(Path(s).name for s in sources) == sorted(p.name for p in paths)

    draw_body = client.get(f"/api/draws/{draw.pk}/").json()
    assert draw_body["summary"]["events_analysed"] == 2 * len(paths)
    assert draw_body["status"] == "preliminary"
    Bundle.model_validate(client.get(f"/api/draws/{draw.pk}/fhir/").json())
    assert time.monotonic() - t0 < 300
