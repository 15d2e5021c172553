"""POST /api/draws/{id}/uploads/: 202 with the upload's URL, or a clear 400 (nothing queued here)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import ImagingUpload
from tests.api.synthetic import CHANNELS, event_tiff

pytestmark = pytest.mark.django_db


def _tiff(name: str, seed: int = 1, category: str = "ctc") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, event_tiff(category, seed), content_type="image/tiff")


def test_upload_answers_202_with_the_upload_url(as_alice, draw):
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/",
                      {"file": [_tiff("a.tif", 1), _tiff("b.tif", 2)], "channels": CHANNELS, "pixel_size_um": "0.8"},
                      format="multipart")
    assert r.status_code == 202, r.json()
    body = r.json()
    assert body["status"] == "queued" and body["files"] == ["a.tif", "b.tif"]
    assert r["Location"] == body["url"] and body["url"].endswith(f"/api/uploads/{body['id']}/")
    upload = ImagingUpload.objects.get(pk=body["id"])
    assert upload.channels == ["DAPI", "CK", "AF", "CD45"] and upload.pixel_size_um == 0.8
    assert upload.kind == "events" and upload.draw == draw
    status = as_alice.get(f"/api/uploads/{body['id']}/").json()
    for key in ["status", "progress", "stage", "error", "model_version"]:
        assert key in status
    assert [u["id"] for u in as_alice.get(f"/api/draws/{draw.pk}/uploads/").json()] == [body["id"]]


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"channels": CHANNELS}, "file", "No file was uploaded"),
        ({"file": "tiff"}, "channels", "required"),
        ({"file": "tiff", "channels": "DAPI,CK,AF,CD45", "kind": "movie"}, "kind", "movie"),
        ({"file": "txt", "channels": CHANNELS}, "file", "unsupported file type"),
        ({"file": "tiff", "channels": "DAPI,CK"}, "channels", "CD45"),
        ({"file": "tiff", "channels": "DAPI,CK,CK"}, "channels", "twice"),
        ({"file": "tiff", "channels": CHANNELS, "pixel_size_um": "900"}, "pixel_size_um", "50"),
    ],
)
def test_upload_errors_are_clear_400s(as_alice, draw, data, field, text):
    data = dict(data)
    if data.get("file") == "tiff":
        data["file"] = _tiff("ev.tif")
    elif data.get("file") == "txt":
        data["file"] = SimpleUploadedFile("notes.txt", b"hello", content_type="text/plain")
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", data, format="multipart")
    assert r.status_code == 400, r.content
    assert text.lower() in " ".join(r.json()[field]).lower(), r.json()
    assert not ImagingUpload.objects.exists()


def test_upload_needs_the_upload_right_and_scope(as_bob, as_charlie, draw):
    assert as_bob.post(f"/api/draws/{draw.pk}/uploads/", {"file": _tiff("x.tif"), "channels": CHANNELS},
                       format="multipart").status_code == 403
    assert as_charlie.post(f"/api/draws/{draw.pk}/uploads/", {"file": _tiff("x.tif"), "channels": CHANNELS},
                           format="multipart").status_code == 404
