"""Request-time validation of uploads: clear errors, nothing stored on rejection."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from patients.models import ImagingUpload, UploadedFile
from patients.uploads import UploadRequest, create_upload, parse_channels

pytestmark = pytest.mark.django_db


def tiff(shape=(4, 64, 64), name="a.tif") -> SimpleUploadedFile:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros(shape, np.uint8), photometric="minisblack", metadata={"axes": "CYX"})
    return SimpleUploadedFile(name, buf.getvalue())


def test_parse_channels_trims_and_rejects_duplicates_and_junk():
    assert parse_channels(" DAPI, CK ,CD45 ") == ["DAPI", "CK", "CD45"]
    for bad in ("", "DAPI,dapi,CK", "DAPI,<script>"):
        with pytest.raises(ValidationError):
            parse_channels(bad)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([], "No file"),
        ([SimpleUploadedFile("notes.txt", b"hello")], "unsupported file type"),
        ([SimpleUploadedFile("empty.tif", b"")], "empty"),
    ],
)
def test_bad_requests_are_rejected_with_a_message_and_store_nothing(draw, alice, files, message):
    with pytest.raises(ValidationError, match=message):
        create_upload(draw, UploadRequest(files=files, channels=["DAPI", "CK", "AF", "CD45"]), alice)
    assert not ImagingUpload.objects.exists() and not UploadedFile.objects.exists()


def test_too_many_files_and_too_large(draw, alice, settings):
    settings.UPLOAD_MAX_FILES = 2
    with pytest.raises(ValidationError, match="Too many files"):
        create_upload(draw, UploadRequest(files=[tiff(name=f"{i}.tif") for i in range(3)], channels=["DAPI"]), alice)
    settings.UPLOAD_MAX_FILES = 100
    settings.UPLOAD_MAX_BYTES = 100
    with pytest.raises(ValidationError, match="limit"):
        create_upload(draw, UploadRequest(files=[tiff()], channels=["DAPI", "CK", "AF", "CD45"]), alice)


def test_a_missing_required_channel_is_rejected_before_queueing(draw, alice, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with pytest.raises(ValidationError, match="CD45"):
        create_upload(draw, UploadRequest(files=[tiff((3, 64, 64))], channels=["DAPI", "CK", "AF"]), alice)
    assert not ImagingUpload.objects.exists()
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "rejected files must not stay on disk"


def test_valid_upload_is_stored_with_checksums_under_media_root(draw, alice, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    f = tiff(name="../../etc/evil name.tif")
    upload = create_upload(draw, UploadRequest(files=[f], channels="DAPI,CK,AF,CD45"), alice)
    (row,) = upload.files.all()
    path = tmp_path.joinpath(row.file.name).resolve()
    assert path.is_file() and tmp_path.resolve() in path.parents
    assert row.original_name == "evil name.tif" and len(row.sha256) == 64
    assert upload.channels == ["DAPI", "CK", "AF", "CD45"] and upload.status == "queued"


def _event(seed: int, name: str) -> SimpleUploadedFile:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (4, 64, 64)).astype(np.uint8)
    tifffile.imwrite(buf, pixels, photometric="minisblack", metadata={"axes": "CYX"})
    return SimpleUploadedFile(name, buf.getvalue())


def test_a_file_sent_twice_in_one_upload_is_refused_before_its_cells_count_twice(draw, alice, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    files = [_event(1, "e1.tif"), _event(2, "e2.tif"), _event(1, "e1-again.tif")]
    with pytest.raises(ValidationError, match="'e1-again.tif' is sent twice in this upload") as err:
        create_upload(draw, UploadRequest(files=files, channels=["DAPI", "CK", "AF", "CD45"]), alice)
    assert err.value.code == "duplicate_in_request"
    assert not ImagingUpload.objects.exists() and not UploadedFile.objects.exists()
    assert not any(tmp_path.rglob("*.tif"))  # the two files stored before the repeat are gone again


def test_two_files_of_one_name_are_refused_with_how_to_send_them(draw, alice, settings, tmp_path):
    # a browser's folder upload flattens slideA/event1_DAPI.tif and slideB/event1_DAPI.tif
    settings.MEDIA_ROOT = tmp_path
    files = [_event(1, "event1.tif"), _event(2, "event1.tif")]
    with pytest.raises(ValidationError, match="both called 'event1.tif'.*Zip each folder") as err:
        create_upload(draw, UploadRequest(files=files, channels=["DAPI", "CK", "AF", "CD45"]), alice)
    assert err.value.code == "same_name"
    assert not ImagingUpload.objects.exists()
    up = create_upload(draw, UploadRequest(files=[_event(1, "event1.tif"), _event(2, "event2.tif")],
                                           channels=["DAPI", "CK", "AF", "CD45"]), alice)
    assert up.files.count() == 2
