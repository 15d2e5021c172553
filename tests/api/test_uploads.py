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


def _ome(arrays: list, names: list[str]) -> bytes:
    import io

    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf, ome=True) as tw:
        for a in arrays:
            tw.write(a, photometric="minisblack", metadata={"axes": "CYX", "Channel": {"Name": names}})
    return buf.getvalue()


@pytest.mark.parametrize(("n_images", "names", "text"), [
    (1, ["CD45", "DAPI", "CK", "AF"], "the file names its channels CD45, DAPI, CK, AF"),  # would swap markers
    (3, ["DAPI", "CK", "AF", "CD45"], "holds 3 images"),  # would count one event of three
])
def test_an_ome_tiff_the_upload_would_misread_is_a_400(as_alice, draw, n_images, names, text):
    import numpy as np

    arrays = [np.random.default_rng(k).integers(0, 255, (4, 64, 64), dtype=np.uint8) for k in range(n_images)]
    f = SimpleUploadedFile("ev.ome.tif", _ome(arrays, names), content_type="image/tiff")
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", {"file": f, "channels": CHANNELS}, format="multipart")
    assert r.status_code == 400, r.content
    assert text in " ".join(r.json()["file"]), r.json()
    assert not ImagingUpload.objects.exists()


def test_upload_needs_the_upload_right_and_scope(as_bob, as_charlie, draw):
    assert as_bob.post(f"/api/draws/{draw.pk}/uploads/", {"file": _tiff("x.tif"), "channels": CHANNELS},
                       format="multipart").status_code == 403
    assert as_charlie.post(f"/api/draws/{draw.pk}/uploads/", {"file": _tiff("x.tif"), "channels": CHANNELS},
                           format="multipart").status_code == 404


def _done_upload(draw, calls):  # noqa: ANN001, ANN202
    from patients.summary import recompute_summary
    from tests import factories

    upload = factories.ImagingUploadFactory(draw=draw)
    for i, c in enumerate(calls):
        factories.CellEventFactory(upload=upload, index=i, call=c)
    recompute_summary(draw)
    return upload


def test_withdrawing_an_upload_takes_its_events_out_of_the_count(as_alice, as_bob, draw):
    from patients.models import AuditEvent, UploadStatus
    from patients.pipeline import stale_uploads

    keep = _done_upload(draw, ["ctc", "non_ctc"])
    wrong = _done_upload(draw, ["ctc", "ctc", "ctc"])
    assert as_alice.get(f"/api/draws/{draw.pk}/").json()["ctc_count"] == 4
    r = as_alice.post(f"/api/uploads/{wrong.pk}/withdraw/", {}, format="json")
    assert r.status_code == 400 and "reason" in r.json()
    assert as_bob.post(f"/api/uploads/{wrong.pk}/withdraw/", {"reason": "x"}, format="json").status_code == 403
    r = as_alice.post(f"/api/uploads/{wrong.pk}/withdraw/", {"reason": "channels in the wrong order"}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["status"] == "withdrawn" and r.json()["withdraw_reason"] == "channels in the wrong order"
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert (body["ctc_count"], body["events_analysed"]) == (1, 2)
    wrong.refresh_from_db()
    assert wrong.status == UploadStatus.WITHDRAWN and wrong.events.count() == 3  # kept for the audit trail
    assert wrong.history.first().history_change_reason.startswith("withdrawn:")
    audit = AuditEvent.objects.get(action="withdraw")
    assert audit.object_id == str(wrong.pk) and audit.detail["reason"] == "channels in the wrong order"
    # written by patients.audit.record: who, which patient, from where
    assert (audit.object_type, audit.user.username, audit.patient_id) == ("ImagingUpload", "alice", draw.patient_id)
    assert audit.path == f"/api/uploads/{wrong.pk}/withdraw/" and audit.ip_address == "127.0.0.1"
    assert as_alice.post(f"/api/uploads/{wrong.pk}/withdraw/", {"reason": "again"}, format="json").status_code == 409
    # The stale sweep never re-queues it, whatever its age.
    assert wrong.pk not in stale_uploads().values_list("pk", flat=True)
    assert keep.pk  # untouched


def test_nothing_analysed_is_no_count_not_a_favorable_zero(as_alice, client, alice, draw):
    """A field in which no cell was found (blank DAPI, an empty frame), or a draw whose only upload
    was withdrawn, has no summary: the API, the draw page and FHIR read 'not analysed', never
    '0 CTC, favorable' (which the web probe saw on all three)."""
    from patients.models import DrawSummary
    from patients.summary import recompute_summary
    from tests import factories

    empty = factories.ImagingUploadFactory(draw=draw)  # finished, no cell found
    assert recompute_summary(draw) is None and not DrawSummary.objects.filter(draw=draw).exists()
    body = as_alice.get(f"/api/draws/{draw.pk}/").json()
    assert body["summary"] is None and body["ctc_count"] is None, body
    client.force_login(alice)
    html = client.get(f"/draws/{draw.pk}/").content.decode()
    assert 'data-testid="no-cells"' in html and "Not analysed" in html and "favorable" not in html
    fhir = as_alice.get(f"/api/draws/{draw.pk}/fhir/").json()
    kinds = [e["resource"]["resourceType"] for e in fhir["entry"]]
    assert "Observation" not in kinds  # no count, no interpretation
    (report,) = [e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert report["status"] == "registered" and "conclusion" not in report

    only = _done_upload(draw, ["ctc", "non_ctc"])
    assert as_alice.get(f"/api/draws/{draw.pk}/").json()["ctc_count"] == 1
    r = as_alice.post(f"/api/uploads/{only.pk}/withdraw/", {"reason": "wrong patient"}, format="json")
    assert r.status_code == 200, r.json()
    assert as_alice.get(f"/api/draws/{draw.pk}/").json()["summary"] is None
    assert DrawSummary.history.filter(draw_id=draw.pk, history_type="-").exists()  # the removal is on record
    assert empty.pk


def test_a_queued_upload_withdrawn_is_not_swept_or_claimed(as_alice, draw):
    import datetime as dt

    from django.utils import timezone

    from patients.models import ImagingUpload
    from patients.pipeline import claim, stale_uploads
    from tests import factories

    upload = factories.ImagingUploadFactory(draw=draw, status="queued")
    ImagingUpload.objects.filter(pk=upload.pk).update(created_at=timezone.now() - dt.timedelta(days=1))
    assert upload.pk in stale_uploads().values_list("pk", flat=True)
    assert as_alice.post(f"/api/uploads/{upload.pk}/withdraw/", {"reason": "duplicate"},
                         format="json").status_code == 200
    assert upload.pk not in stale_uploads().values_list("pk", flat=True)
    assert claim(upload.pk) is None


def test_upload_to_a_final_draw_and_duplicate_files_warn_once_confirmed(as_alice, draw):
    from patients.models import SummaryStatus
    from patients.summary import recompute_summary

    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", {"file": [_tiff("a.tif", 1)], "channels": CHANNELS},
                      format="multipart")
    assert r.status_code == 202 and r.json()["warnings"] == []
    # The same file again (another name): refused (issue 13), then accepted once confirmed
    # (``allow_duplicates``), with a warning naming the earlier one.
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", {"file": [_tiff("copy.tif", 1), _tiff("b.tif", 2)],
                                                         "channels": CHANNELS}, format="multipart")
    assert r.status_code == 409 and r.json()["code"] == "duplicate"
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", {"file": [_tiff("copy.tif", 1), _tiff("b.tif", 2)],
                                                         "channels": CHANNELS, "allow_duplicates": "true"},
                      format="multipart")
    assert r.status_code == 202
    (warning,) = r.json()["warnings"]
    assert "'copy.tif' is identical to 'a.tif'" in warning
    done = _done_upload(draw, ["ctc"])
    done.events.update(reviewed_call="ctc")
    assert recompute_summary(draw).status == SummaryStatus.FINAL
    r = as_alice.post(f"/api/draws/{draw.pk}/uploads/", {"file": [_tiff("c.tif", 3)], "channels": CHANNELS},
                      format="multipart")
    assert r.status_code == 202
    assert any("This draw is final" in w for w in r.json()["warnings"])
