"""store_results writes its rows with COPY on PostgreSQL: the same rows bulk_create wrote."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import IntegrityError, connection

from classifier.results import CATEGORIES, AnalysisResult, Attribute, EventResult
from patients import pipeline
from patients.imaging import decode_grey, decode_strip
from patients.models import CellEvent, DrawSummary, ImagingUpload, UploadStatus
from tests import factories

CHANNELS = ["DAPI", "CK", "CD45", "AF"]
#: names COPY's text format must escape (tab, newline, backslash), and more than 300 characters
AWKWARD = ["plain.tif", "tab\there.tif", "new\nline.tif", "back\\slash\\N.tif", "quote'\"s.tif",
           "ünïcødé µm.tif", "x" * 320 + ".tif", "\\.", ""]


def _result(n: int, seed: int = 0) -> AnalysisResult:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        p = float(rng.random())
        cat = rng.dirichlet(np.ones(len(CATEGORIES)))
        events.append(EventResult(
            source=AWKWARD[i % len(AWKWARD)] + ("" if i < len(AWKWARD) else f"#{i}"),
            index=i,
            x=float(rng.random() * 100),
            y=float(rng.random() * 100),
            call="ctc" if p >= 0.5 else "non_ctc",
            ctc_probability=p,
            category=CATEGORIES[int(cat.argmax())],
            category_probabilities={c: float(v) for c, v in zip(CATEGORIES, cat, strict=True)},
            embedding=[float(v) for v in rng.normal(size=8)],
            branch_contributions={"spatial": 0.3 + 0.1 * p, "texture": 0.7 - 0.1 * p},
            top_attributes=[Attribute(f"attr_{k}\t\\'\"", float(rng.normal()), float(rng.normal())) for k in range(3)],
            thumbnail=None if i == 5 else rng.integers(0, 256, (4, 48, 48), dtype=np.uint8),
            heatmap=None if i == 6 else rng.integers(0, 256, (48, 48), dtype=np.uint8),
        ))
    return AnalysisResult(events=events, model_version="test-model", channels=CHANNELS)


def _rows(upload: ImagingUpload) -> list[dict]:
    rows = list(CellEvent.objects.filter(upload=upload).order_by("index").values())
    for r in rows:
        del r["id"], r["upload_id"]
        r["thumbnail"], r["heatmap"] = bytes(r["thumbnail"]), bytes(r["heatmap"])
    return rows


def _claimed(draw) -> tuple[ImagingUpload, int]:  # noqa: ANN001
    upload = factories.ImagingUploadFactory(draw=draw, status=UploadStatus.QUEUED)
    attempt = pipeline.claim(upload.pk)
    assert attempt is not None
    return upload, attempt


@pytest.mark.django_db
@pytest.mark.parametrize("n", [1, 9, 70])  # 70: the two-thread image encoding
def test_copy_stores_exactly_what_bulk_create_stored(draw, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    assert connection.vendor == "postgresql"
    result = _result(n, seed=n)
    copied, attempt = _claimed(draw)
    assert pipeline.store_results(copied, attempt, result) == "done"

    def bulk(events: list[CellEvent]) -> None:
        CellEvent.objects.bulk_create(events, batch_size=500)

    monkeypatch.setattr(pipeline, "_insert_events", bulk)
    other_draw = factories.BloodDrawFactory(patient=draw.patient)
    inserted, attempt = _claimed(other_draw)
    assert pipeline.store_results(inserted, attempt, result) == "done"

    got, want = _rows(copied), _rows(inserted)
    assert len(got) == n
    for g, w in zip(got, want, strict=True):
        assert g.pop("draw_id") == draw.pk and w.pop("draw_id") == other_draw.pk
        assert g == w
    # the values themselves, read back through the ORM
    for row, e in zip(got, result.events, strict=True):
        assert row["source"] == e.source[:300] and row["index"] == e.index
        assert row["x"] == e.x and row["ctc_probability"] == e.ctc_probability
        assert row["reviewed_call"] == "" and row["reviewed_by_id"] is None and row["reviewed_at"] is None
        assert row["explanation"]["top_attributes"][0]["name"] == e.top_attributes[0].name
        if e.thumbnail is None:
            assert row["thumbnail"] == b""
        else:
            np.testing.assert_array_equal(decode_strip(row["thumbnail"], 4), e.thumbnail)
        if e.heatmap is None:
            assert row["heatmap"] == b""
        else:
            np.testing.assert_array_equal(decode_grey(row["heatmap"]), e.heatmap)
    copied.refresh_from_db()
    assert copied.status == UploadStatus.DONE and copied.progress == 100
    assert DrawSummary.objects.get(draw=draw).events_analysed == n


@pytest.mark.django_db
def test_a_second_attempt_replaces_the_events(draw) -> None:
    upload, first = _claimed(draw)
    assert pipeline.store_results(upload, first, _result(9, seed=1)) == "done"
    ImagingUpload.objects.filter(pk=upload.pk).update(status=UploadStatus.RUNNING, attempts=first + 1)
    assert pipeline.store_results(upload, first + 1, _result(12, seed=2)) == "done"
    assert CellEvent.objects.filter(upload=upload).count() == 12


@pytest.mark.django_db
def test_a_failed_copy_leaves_nothing_behind(draw) -> None:
    """A row the database rejects aborts the whole transaction, as with bulk_create."""
    upload, attempt = _claimed(draw)
    result = _result(9, seed=3)
    result.events[4].index = result.events[3].index  # violates unique (upload, index)
    with pytest.raises(IntegrityError, match="unique_event_index"):
        pipeline.store_results(upload, attempt, result)
    assert not CellEvent.objects.filter(upload=upload).exists()
    upload.refresh_from_db()
    assert upload.status == UploadStatus.RUNNING


@pytest.mark.django_db
def test_an_upload_is_never_done_without_its_timings(draw) -> None:
    """The timings were written after the commit that marked the upload done: a reader in between
    (the worker test, under load) saw status DONE with timings {}. Now they are one write."""
    upload, attempt = _claimed(draw)
    assert pipeline.store_results(upload, attempt, _result(3), timings={"model": 0.5, "analyse_total": 1.0}) == "done"
    upload.refresh_from_db()
    assert upload.status == UploadStatus.DONE
    assert upload.timings["model"] == 0.5 and upload.timings["database"] >= 0
