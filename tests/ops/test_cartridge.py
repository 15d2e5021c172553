"""A whole cartridge, a few fields at a time (issue 15.4): a small cartridge (a zip of per-field
4-channel TIFFs, as instruments export) is analysed a group of fields per classifier call (the
classifier's processes take a field each), each field streamed out of the zip and removed, with
the same events as analysing the upload at once; any other layout keeps the whole-upload path.
The big one (175 fields) is `python -m bench.pipeline`'s."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile

from patients import pipeline
from patients.cartridge import analyse_fields, field_sources
from patients.models import CellEvent, ImagingUpload, UploadStatus
from patients.uploads import UploadRequest, create_upload

CHANNELS = ["DAPI", "CK", "AF", "CD45"]


def _field(seed: int, h: int = 208, w: int = 272, cells: int = 6) -> np.ndarray:
    from classifier.synth.field import make_field

    img, _ = make_field(np.random.default_rng(seed), h, w, cells, pixel_size_um=0.65)
    arr = np.clip(img, 0, None)
    arr = arr * 65535.0 if arr.max() <= 1.0 else arr
    return np.clip(arr, 0, 65535).astype(np.uint16)


def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", metadata={"axes": "CYX"})
    return buf.getvalue()


@pytest.fixture(scope="module")
def cartridge(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cartridge") / "cartridge.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"field_{i + 1:03d}.tif", _tiff(_field(i)))
    return path


class Recording:
    """The real classifier, noting what each call was given and whether that file is gone after."""

    def __init__(self, clf) -> None:  # noqa: ANN001
        self.clf, self.calls = clf, []

    def analyse_files(self, paths, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self.calls.append([Path(p) for p in paths])
        return self.clf.analyse_files(paths, *args, **kwargs)


@pytest.mark.parametrize("per_call", [1, 2])
def test_a_cartridge_is_analysed_a_few_streamed_fields_at_a_time_with_the_same_events(cartridge, per_call):
    clf = pipeline.get_classifier("")
    sources = field_sources([cartridge], ["cartridge.zip"], len(CHANNELS))
    assert [s.name for s in sources] == [f"cartridge.zip/field_{i:03d}.tif" for i in (1, 2, 3)]

    rec = Recording(clf)
    seen: list[float] = []
    streamed = analyse_fields(rec, sources, CHANNELS, 0.65, progress=lambda f, _stage: seen.append(f),
                              per_call=per_call)
    assert [len(c) for c in rec.calls] == ([1, 1, 1] if per_call == 1 else [2, 1]), "fields per classifier call"
    assert all(not p.exists() for c in rec.calls for p in c), "a field's temporary copy outlived its analysis"
    assert seen == sorted(seen) and seen[-1] == 1.0  # progress over the whole cartridge, never backwards

    whole = clf.analyse_files([cartridge], CHANNELS, kind="field", pixel_size_um=0.65, names=["cartridge.zip"])
    assert len(whole.events) > 3
    assert [e.source for e in streamed.events] == [e.source for e in whole.events]
    assert [e.index for e in streamed.events] == list(range(len(whole.events)))
    np.testing.assert_allclose([e.ctc_probability for e in streamed.events],
                               [e.ctc_probability for e in whole.events], atol=0.02)
    assert streamed.timings["fields"] == 3 and streamed.domain_check["fields"] == 3
    assert streamed.domain_check["groups"] == len(rec.calls)


def test_other_layouts_keep_the_whole_upload_path(tmp_path):
    one = tmp_path / "one.zip"
    with zipfile.ZipFile(one, "w") as zf:
        zf.writestr("field.tif", _tiff(_field(5)))
    assert field_sources([one], ["one.zip"], 4) is None  # a single field: nothing to stream
    per_channel = tmp_path / "channels.zip"
    with zipfile.ZipFile(per_channel, "w") as zf:
        for c, plane in zip(CHANNELS, _field(6), strict=True):
            zf.writestr(f"{c}.tif", _tiff(plane))
    assert field_sources([per_channel], ["channels.zip"], 4) is None  # one file per channel


@pytest.mark.django_db
def test_the_worker_stores_a_cartridge_upload_as_one_result_set(cartridge, alice, draw):
    upload = create_upload(draw, UploadRequest(
        [SimpleUploadedFile("cartridge.zip", cartridge.read_bytes(), content_type="application/zip")],
        CHANNELS, kind="field", pixel_size_um=0.65), alice)
    assert pipeline.run_upload(upload.pk) == "done"
    upload = ImagingUpload.objects.get(pk=upload.pk)
    assert upload.status == UploadStatus.DONE and upload.timings["fields"] == 3
    events = CellEvent.objects.filter(upload=upload)
    assert events.count() > 3
    assert {s.split("#")[0] for s in events.values_list("source", flat=True)} == {
        f"cartridge.zip/field_{i:03d}.tif" for i in (1, 2, 3)}


# --- one multi-page TIFF of whole fields (a stack) ---------------------------------------------


def _stack(tmp_path: Path, axes: str = "TCYX") -> tuple[Path, list[np.ndarray]]:
    fields = [_field(i) for i in range(3)]
    arr = np.stack(fields)  # (F, C, Y, X)
    if axes == "CTYX":
        arr = arr.transpose(1, 0, 2, 3)
    path = tmp_path / f"stack-{axes}.tif"
    tifffile.imwrite(path, arr, photometric="minisblack", metadata={"axes": axes})
    return path, fields


@pytest.mark.parametrize("axes", ["TCYX", "CTYX"])
def test_a_stack_of_fields_is_streamed_a_field_at_a_time_with_each_fields_events(tmp_path, axes):
    clf = pipeline.get_classifier("")
    path, fields = _stack(tmp_path, axes)
    sources = field_sources([path], ["stack.tif"], len(CHANNELS))
    assert [s.name for s in sources] == [f"stack.tif#field{k}" for k in (1, 2, 3)]
    rec = Recording(clf)
    streamed = analyse_fields(rec, sources, CHANNELS, 0.65, per_call=2)
    assert [len(c) for c in rec.calls] == [2, 1]
    assert all(not p.exists() for c in rec.calls for p in c)
    # the same as the three fields uploaded as separate TIFFs
    singles = []
    for k, f in enumerate(fields):
        p = tmp_path / f"single-{k}.tif"
        tifffile.imwrite(p, f, photometric="minisblack", metadata={"axes": "CYX"})
        singles.append(p)
    separate = clf.analyse_files(singles, CHANNELS, kind="field", pixel_size_um=0.65,
                                 names=[f"stack.tif#field{k}" for k in (1, 2, 3)])
    assert [e.source for e in streamed.events] == [e.source for e in separate.events]
    np.testing.assert_allclose([e.ctc_probability for e in streamed.events],
                               [e.ctc_probability for e in separate.events], atol=1e-6)


@pytest.mark.django_db
def test_a_stack_upload_is_accepted_and_stored_field_by_field(tmp_path, alice, draw):
    path, _ = _stack(tmp_path)
    upload = create_upload(draw, UploadRequest(
        [SimpleUploadedFile("stack.tif", path.read_bytes(), content_type="image/tiff")],
        CHANNELS, kind="field", pixel_size_um=0.65), alice)
    assert pipeline.run_upload(upload.pk) == "done"
    upload = ImagingUpload.objects.get(pk=upload.pk)
    assert upload.timings["fields"] == 3
    fields = {s.split("#")[1] for s in CellEvent.objects.filter(upload=upload).values_list("source", flat=True)}
    assert fields == {"field1", "field2", "field3"}


@pytest.mark.django_db
def test_a_truncated_stack_is_refused_at_upload_with_a_clear_message(tmp_path, alice, draw):
    from django.core.exceptions import ValidationError

    path, _ = _stack(tmp_path)
    data = path.read_bytes()
    with pytest.raises(ValidationError, match="truncated"):
        create_upload(draw, UploadRequest(
            [SimpleUploadedFile("stack.tif", data[: len(data) // 2], content_type="image/tiff")],
            CHANNELS, kind="field", pixel_size_um=0.65), alice)
    assert not ImagingUpload.objects.filter(draw=draw).exists()
