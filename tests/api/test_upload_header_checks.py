"""Upload-time checks of PNG/JPEG files (new-user test): a channel-name count that does not fit an RGB
colour image, or a file whose data do not decode, answers 400 at once, on the API and the dashboard's
form alike, with nothing stored and no task queued; the worker's message stays the backstop and gives
advice that fits when every file disagrees with the names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from patients.models import ImagingUpload, UploadedFile, UploadStatus
from tests.api.synthetic import CHANNELS, event_tiff

pytestmark = pytest.mark.django_db


def _colour(name: str = "photo.png", seed: int = 1, size: int = 64, fmt: str = "PNG") -> bytes:
    """A colour composite: three different planes (not a greyscale channel saved as RGB)."""
    rgb = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, fmt)
    return buf.getvalue()


def _grey_as_rgb(seed: int) -> bytes:
    """One greyscale channel saved as an RGB PNG (per-channel exports do this): one channel, not three."""
    grey = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB").save(buf, "PNG")
    return buf.getvalue()


def _png(name: str, data: bytes | None = None, seed: int = 1) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data if data is not None else _colour(name, seed), content_type="image/png")


def _truncated(seed: int = 1) -> bytes:
    data = _colour(seed=seed)
    return data[: len(data) * 2 // 3]  # the header (IHDR) is whole; the image data stop early


@pytest.fixture
def queued(monkeypatch, settings, tmp_path, django_capture_on_commit_callbacks):
    """Post with the commit callbacks run, recording the uploads queued (no broker needed);
    media under ``tmp_path`` so "nothing stored" can be checked on disk too."""
    settings.MEDIA_ROOT = tmp_path
    sent: list[int] = []
    monkeypatch.setattr("patients.uploads.enqueue", lambda pk, lane="interactive": sent.append(pk) or True)

    def post(client, url: str, data: dict, **kw):  # noqa: ANN001, ANN202
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, data, **kw)

    post.sent = sent
    post.media = tmp_path
    return post


def _nothing_stored(queued) -> None:  # noqa: ANN001
    assert not ImagingUpload.objects.exists() and not UploadedFile.objects.exists()
    assert not [p for p in queued.media.rglob("*") if p.is_file()], "refused files must not stay on disk"
    assert queued.sent == []


def _api(as_alice, queued, draw, files, channels):  # noqa: ANN001, ANN202
    return queued(as_alice, f"/api/draws/{draw.pk}/uploads/", {"file": files, "channels": channels},
                  format="multipart")


def _form(alice, queued, draw, files, channels):  # noqa: ANN001, ANN202
    c = Client()
    c.force_login(alice)
    return queued(c, f"/draws/{draw.pk}/uploads/", {"files": files, "channels": channels, "kind": "events"},
                  HTTP_ACCEPT="application/json")


# --- the API ------------------------------------------------------------------------------------------


def test_four_names_for_an_rgb_png_is_a_400_saying_its_planes_are_red_green_blue(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_png("photo.png")], "DAPI,CK,AF,CD45")
    assert r.status_code == 400, r.content
    (msg,) = r.json()["file"]
    assert msg.startswith("photo.png: is an RGB colour image"), msg
    assert "its 3 planes are red, green, blue" in msg and "4 channel names were given (DAPI,CK,AF,CD45)" in msg
    assert "in that order" in msg and "CD45,CK,DAPI" in msg
    _nothing_stored(queued)


def test_four_names_for_an_rgb_jpeg_is_a_400_too(as_alice, draw, queued):
    f = SimpleUploadedFile("photo.jpg", _colour(fmt="JPEG"), content_type="image/jpeg")
    r = _api(as_alice, queued, draw, [f], "DAPI,CK,AF,CD45")
    assert r.status_code == 400, r.content
    assert "photo.jpg: is an RGB colour image" in r.json()["file"][0]
    _nothing_stored(queued)


def test_five_names_for_an_rgba_png_is_a_400_naming_its_colours_and_alpha(as_alice, draw, queued):
    rgba = np.random.default_rng(3).integers(0, 255, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    r = _api(as_alice, queued, draw, [_png("rgba.png", buf.getvalue())], "DAPI,CK,AF,CD45,none")
    assert r.status_code == 400, r.content
    msg = r.json()["file"][0]
    assert "rgba.png: is an RGBA colour image" in msg and "red, green, blue" in msg and "alpha" in msg
    _nothing_stored(queued)


def test_a_truncated_png_is_a_400(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_png("cut.png", _truncated())], "CD45,CK,DAPI")
    assert r.status_code == 400, r.content
    msg = r.json()["file"][0]
    assert msg.startswith("cut.png: cannot be read as PNG (truncated or corrupt"), msg
    _nothing_stored(queued)


def test_a_png_with_a_broken_header_is_a_400(as_alice, draw, queued):
    data = bytearray(_colour())
    data[12:16] = b"XXXX"  # the IHDR chunk's type: no image header
    r = _api(as_alice, queued, draw, [_png("bad.png", bytes(data))], "CD45,CK,DAPI")
    assert r.status_code == 400, r.content
    assert r.json()["file"][0].startswith("bad.png: cannot be read as PNG"), r.json()
    _nothing_stored(queued)


def test_three_names_for_rgb_pngs_are_accepted_and_queued_as_before(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_png("a.png", seed=1), _png("b.png", seed=2)], "CD45,CK,DAPI")
    assert r.status_code == 202, r.content
    upload = ImagingUpload.objects.get()
    assert r.json()["id"] == upload.pk and upload.status == UploadStatus.QUEUED
    assert upload.channels == ["CD45", "CK", "DAPI"] and upload.files.count() == 2
    assert queued.sent == [upload.pk]


def test_greyscale_channels_saved_as_rgb_pngs_one_file_per_channel_stay_accepted(as_alice, draw, queued):
    # three colour planes in the header, one channel in the pixels: the count is the pixels' to say
    files = [_png(f"event1_{m}.png", _grey_as_rgb(k)) for k, m in enumerate(["DAPI", "CK", "AF", "CD45"])]
    r = _api(as_alice, queued, draw, files, CHANNELS)
    assert r.status_code == 202, r.content
    assert queued.sent == [ImagingUpload.objects.get().pk]


# --- the dashboard's upload form (its own view, the same create_upload) ----------------------------------


def test_the_dashboard_form_refuses_four_names_for_an_rgb_png_with_the_same_hint(alice, draw, queued):
    r = _form(alice, queued, draw, [_png("photo.png")], "DAPI,CK,AF,CD45")
    assert r.status_code == 400, r.content
    msg = r.json()["error"]
    assert "photo.png: is an RGB colour image" in msg and "red, green, blue" in msg
    _nothing_stored(queued)


def test_the_dashboard_form_refuses_a_truncated_png(alice, draw, queued):
    r = _form(alice, queued, draw, [_png("cut.png", _truncated())], "CD45,CK,DAPI")
    assert r.status_code == 400, r.content
    assert "cut.png: cannot be read as PNG" in r.json()["error"]
    _nothing_stored(queued)


def test_the_dashboard_form_accepts_three_names_for_an_rgb_png(alice, draw, queued):
    r = _form(alice, queued, draw, [_png("photo.png")], "CD45,CK,DAPI")
    assert r.status_code == 201, r.content
    assert queued.sent == [ImagingUpload.objects.get().pk]


# --- the worker: the backstop, with advice that fits ------------------------------------------------------


def _stored_without_checks(draw, alice, files: dict[str, bytes], channels: list[str]) -> ImagingUpload:  # noqa: ANN001
    """An upload stored as create_upload would, but past its checks (a file changed on disk, an import)."""
    upload = ImagingUpload.objects.create(draw=draw, channels=channels, created_by=alice)
    for k, (name, data) in enumerate(files.items()):
        row = UploadedFile(upload=upload, original_name=name, size=len(data), position=k)
        row.file.save(name, SimpleUploadedFile(name, data), save=True)
    return upload


def test_the_worker_says_the_names_are_wrong_when_every_file_disagrees_with_them(alice, draw, settings, tmp_path):
    from patients import pipeline

    settings.MEDIA_ROOT = tmp_path
    upload = _stored_without_checks(draw, alice, {"a.png": _colour(seed=1), "b.png": _colour(seed=2)},
                                    ["DAPI", "CK", "AF", "CD45"])
    assert pipeline.run_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.error.startswith("a.png: is an RGB colour image: its 3 planes are red, green, blue"), upload.error
    assert "without that file" not in upload.error
    assert "Every file of this upload (2) has 3 planes" in upload.error, upload.error
    assert "upload them again with 3 channel names" in upload.error


def test_the_worker_still_names_the_odd_file_out(alice, draw, settings, tmp_path):
    from patients import pipeline

    settings.MEDIA_ROOT = tmp_path
    upload = _stored_without_checks(draw, alice, {"a.tif": event_tiff("ctc", 1), "b.png": _colour(seed=2)},
                                    ["DAPI", "CK", "AF", "CD45"])
    assert pipeline.run_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.error.startswith("b.png: is an RGB colour image"), upload.error
    assert "upload it again without that file, or with it corrected" in upload.error
