"""Upload-time checks of PNG/JPEG files (new-user test): a channel-name count that does not fit an RGB
colour image, or a file whose data do not decode, answers 400 at once, on the API and the dashboard's
form alike, with nothing stored and no task queued; the worker's message stays the backstop and gives
advice that fits when every file disagrees with the names. The images inside a zip get the same checks
(within the request's budget of inflated bytes, ``Limits.request_zip_bytes``; members past it are the
worker's), so a gallery zip with the wrong channel count no longer fails minutes later in the worker."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from classifier.limits import DEFAULT_LIMITS
from patients.models import CellEvent, ImagingUpload, UploadedFile, UploadStatus
from tests.api.synthetic import CHANNELS, event_tiff, field_tiff

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


def _api(as_alice, queued, draw, files, channels, kind="events"):  # noqa: ANN001, ANN202
    return queued(as_alice, f"/api/draws/{draw.pk}/uploads/", {"file": files, "channels": channels, "kind": kind},
                  format="multipart")


def _zip(name: str, members: dict[str, bytes]) -> SimpleUploadedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return SimpleUploadedFile(name, buf.getvalue(), content_type="application/zip")


def _three_planes(seed: int) -> bytes:
    """A synthetic event TIFF with its last plane (CD45) left out: 3 channels where 4 are named."""
    arr = tifffile.imread(io.BytesIO(event_tiff("ctc", seed)))[:3]
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", metadata={"axes": "CYX"})
    return buf.getvalue()


def _gallery(n: int) -> dict[str, bytes]:
    return {f"event{k:03d}.tif": event_tiff("ctc" if k % 2 else "leukocyte", k) for k in range(1, n + 1)}


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


# --- zips: their images get the loose files' checks, within the request's budget -----------------------


def test_a_zip_whose_tiffs_hold_3_channels_for_4_names_is_a_400_naming_the_zip_and_the_member(as_alice, draw,
                                                                                              queued):
    members = {**_gallery(6), "event007.tif": _three_planes(7)}
    r = _api(as_alice, queued, draw, [_zip("slides.zip", members)], CHANNELS)
    assert r.status_code == 400, r.content
    assert r.json()["file"] == ["slides.zip/event007.tif: has 3 channels but 4 channel names were given."]
    _nothing_stored(queued)


def test_a_zip_with_a_truncated_png_member_is_a_400_naming_the_member(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_zip("photos.zip", {"a.png": _colour(seed=1), "b.png": _truncated(2)})],
             "CD45,CK,DAPI")
    assert r.status_code == 400, r.content
    msg = r.json()["file"][0]
    assert msg.startswith("photos.zip/b.png: cannot be read as PNG (truncated or corrupt"), msg
    _nothing_stored(queued)


def test_four_names_for_an_rgb_png_in_a_zip_is_a_400_with_the_loose_files_hint(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_zip("photos.zip", {"photo.png": _colour()})], "DAPI,CK,AF,CD45")
    assert r.status_code == 400, r.content
    msg = r.json()["file"][0]
    assert msg.startswith("photos.zip/photo.png: is an RGB colour image: its 3 planes are red, green, blue"), msg
    assert "4 channel names were given (DAPI,CK,AF,CD45)" in msg and "CD45,CK,DAPI" in msg
    _nothing_stored(queued)


def test_the_dashboard_form_refuses_a_zip_member_with_the_same_message(alice, draw, queued):
    r = _form(alice, queued, draw, [_zip("slides.zip", {"event007.tif": _three_planes(7)})], CHANNELS)
    assert r.status_code == 400, r.content
    assert "slides.zip/event007.tif: has 3 channels but 4 channel names were given." in r.json()["error"]
    _nothing_stored(queued)


def test_a_valid_gallery_zip_is_accepted_and_analysed_as_before(as_alice, draw, queued):
    from patients import pipeline

    r = _api(as_alice, queued, draw, [_zip("gallery.zip", _gallery(3))], CHANNELS)
    assert r.status_code == 202, r.content
    upload = ImagingUpload.objects.get()
    assert queued.sent == [upload.pk] and upload.status == UploadStatus.QUEUED
    assert pipeline.run_upload(upload.pk) == "done"
    sources = sorted(CellEvent.objects.filter(upload=upload).values_list("source", flat=True))
    assert sources == [f"gallery.zip/event{k:03d}.tif" for k in (1, 2, 3)]


def test_members_past_the_request_budget_are_accepted_and_left_to_the_worker(as_alice, draw, queued, monkeypatch):
    from patients import pipeline

    members = {**_gallery(2), "event003.tif": _three_planes(3)}
    r = _api(as_alice, queued, draw, [_zip("slides.zip", members)], CHANNELS)
    assert r.status_code == 400 and "slides.zip/event003.tif" in r.json()["file"][0]  # within the default budget
    # a budget of the first two members (a big cartridge zip, in small): the third waits for the worker
    small = replace(DEFAULT_LIMITS, request_zip_bytes=len(members["event001.tif"]) + len(members["event002.tif"]))
    monkeypatch.setattr("patients.uploads.DEFAULT_LIMITS", small)
    r = _api(as_alice, queued, draw, [_zip("slides.zip", members)], CHANNELS)
    assert r.status_code == 202, r.content
    upload = ImagingUpload.objects.get()
    assert queued.sent == [upload.pk]
    assert pipeline.run_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.error.startswith("slides.zip/event003.tif: has 3 channels but 4 channel names were given."), \
        upload.error


def test_a_zip_bomb_is_still_a_400(as_alice, draw, queued):
    r = _api(as_alice, queued, draw, [_zip("bomb.zip", {"a.tif": b"\0" * (40 << 20)})], CHANNELS)
    assert r.status_code == 400, r.content
    msg = r.json()["file"][0]
    assert msg.startswith("bomb.zip/a.tif: compressed ") and "possible zip bomb" in msg, msg
    _nothing_stored(queued)


def test_a_zip_of_whole_fields_is_accepted_as_a_field_upload(as_alice, draw, queued):
    fields = {f"field_{k:03d}.tif": field_tiff(seed=k)[0] for k in (1, 2)}
    r = _api(as_alice, queued, draw, [_zip("cartridge.zip", fields)], CHANNELS, kind="field")
    assert r.status_code == 202, r.content
    assert queued.sent == [ImagingUpload.objects.get().pk]


def test_a_zipped_stack_of_fields_is_a_400_with_the_workers_message(as_alice, draw, queued):
    # a multi-page stack is read field by field only as a loose TIFF (patients.cartridge); zipped, the
    # worker refuses it with this sentence, which the request now gives at once
    stack = np.random.default_rng(1).integers(0, 4000, (3, 4, 64, 80), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, stack, photometric="minisblack", metadata={"axes": "TCYX"})
    r = _api(as_alice, queued, draw, [_zip("stacks.zip", {"stack.tif": buf.getvalue()})], CHANNELS, kind="field")
    assert r.status_code == 400, r.content
    assert r.json()["file"] == ["stacks.zip/stack.tif: has more dimensions than channels x height x width "
                                "(T=3 x C=4); send one plane per channel (e.g. one focal plane)."]
    _nothing_stored(queued)


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
