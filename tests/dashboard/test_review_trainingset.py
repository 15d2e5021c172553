"""A lab's training set from its reviews (issue 13, point 3): scoped, labelled as reviewed, and
readable by the classifier's own labelled-folder reader."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from patients.models import AuditEvent, CellEvent
from patients.uploads import UploadRequest, create_upload
from tests import factories
from tests.api.synthetic import CHANNELS, event_tiff
from tests.dashboard.builders import add_cells

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed(alice, bob, charlie, team, other_team, draw):
    """alice's team: 6 cells, 4 reviewed (one overridden with a category correction), one of them
    the original TIFF of an event gallery; charlie's team: reviewed cells alice must never get."""
    upload = add_cells(draw, 2, 3, seed=5)
    cells = list(CellEvent.objects.filter(upload=upload).order_by("index"))
    for c in cells[:3]:
        c.reviewed_call, c.reviewed_by = c.call, bob
        c.save()
    flip = cells[3]
    flip.reviewed_call, flip.reviewed_by, flip.reviewed_category = "ctc", bob, "ctc"
    flip.review_reason = "CK+ CD45- with a nucleus"
    flip.save()
    data = event_tiff("ctc", 9)
    original = create_upload(draw, UploadRequest([SimpleUploadedFile("orig.tif", data, content_type="image/tiff")],
                                                 CHANNELS), alice)
    original.status, original.result_channels = "done", CHANNELS.split(",")
    original.save()
    factories.CellEventFactory(upload=original, draw=draw, index=0, source="orig.tif", call="non_ctc",
                               reviewed_call="non_ctc", reviewed_by=bob, category="leukocyte")
    theirs = factories.BloodDrawFactory(patient=factories.PatientFactory(care_team=other_team))
    add_cells(theirs, 2, 2, seed=6)
    CellEvent.objects.filter(draw=theirs).update(reviewed_call="ctc", reviewed_by=charlie)
    return draw, flip, data


def test_the_export_holds_only_the_labs_reviewed_cells_with_final_labels_and_reads_back(alice, reviewed, tmp_path):
    from classifier import data as cdata

    draw, flip, original_bytes = reviewed
    out = tmp_path / "set"
    stdout = io.StringIO()
    call_command("export_training_set", "--user", "alice", "--team", "Breast unit", "--out", str(out), stdout=stdout)
    assert "5 reviewed cells (3 CTC) from 1 draws" in stdout.getvalue()
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and {r["draw"] for r in rows} == {str(draw.pk)}  # no other team, no unreviewed cell
    by_source = {r["source"]: r for r in rows}
    assert by_source[flip.source]["is_ctc"] == "1" and by_source[flip.source]["category"] == "ctc"
    assert by_source["orig.tif"]["image"] == "original"
    assert (out / by_source["orig.tif"]["file"]).read_bytes() == original_bytes
    # The classifier's own reader: labels and every image, four channels each.
    items = cdata.read_labels(out)
    assert [it.is_ctc for it in items] == [int(r["is_ctc"]) for r in rows]
    assert {it.category for it in items} <= {"ctc", "apoptotic_ctc", "leukocyte", "ck_debris", "artifact"}
    for it in items:
        image, chans, _ = cdata.load_image(out / it.file, CHANNELS.split(","))
        assert image.shape[0] == 4 and chans == CHANNELS.split(",")
    assert AuditEvent.objects.filter(action="export", object_type="TrainingSet", user=alice).exists()


def test_the_dashboard_download_is_scoped_audited_and_needs_the_export_right(alice, charlie, bob, reviewed):
    as_alice = Client()
    as_alice.force_login(alice)
    r = as_alice.get("/review/training-set.zip")
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = zf.namelist()
    assert "labels.csv" in names and sum(n.startswith("events/") for n in names) == 5
    as_charlie = Client()
    as_charlie.force_login(charlie)
    theirs = list(csv.DictReader(io.StringIO(zipfile.ZipFile(io.BytesIO(
        as_charlie.get("/review/training-set.zip").content)).read("labels.csv").decode())))
    assert len(theirs) == 4 and str(reviewed[0].pk) not in {t["draw"] for t in theirs}
    other_team_id = factories.CareTeamFactory().pk
    assert as_alice.get(f"/review/training-set.zip?team={other_team_id}").status_code == 404
    as_bob = Client()
    as_bob.force_login(bob)
    from patients.roles import Action, can

    expected = 200 if can(bob, Action.EXPORT) else 403
    assert as_bob.get("/review/training-set.zip").status_code == expected
