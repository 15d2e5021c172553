"""Fixtures for the security tests: hostile files, a classifier for worker processes, one shared worker."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import WorkerProcess

CHANNELS = "DAPI,CK,CD45"


@pytest.fixture(autouse=True)
def _reference_data_after_flush(request):
    """Transactional tests flush every table afterwards, the data migration's cancer types
    included; put them back before a test that needs a real commit (and so a worker) runs."""
    marker = request.node.get_closest_marker("django_db")
    if not ((marker and marker.kwargs.get("transaction")) or "transactional_db" in request.fixturenames):
        return
    import importlib

    request.getfixturevalue("transactional_db")
    from patients.models import CancerType

    migration = importlib.import_module("patients.migrations.0002_cancer_types")
    for code, name, cutoff, ref in migration.CANCER_TYPES:
        CancerType.objects.update_or_create(code=code, defaults={"name": name, "ctc_cutoff": cutoff,
                                                                 "cutoff_reference": ref})


@pytest.fixture(scope="session")
def classifier_env(tmp_path_factory) -> dict[str, str]:
    """Environment for worker processes: the shipped weights, or (until they ship) a
    randomly initialised bundle of the real architecture. These tests check the plumbing,
    not the calls, so untrained weights do as well."""
    from classifier.weights import DEFAULT_WEIGHTS, load_bundle

    try:
        load_bundle(DEFAULT_WEIGHTS)
        return {}
    except Exception:  # noqa: BLE001 - missing, or not matching the code (while the model is retrained)
        pass
    from classifier import features
    from classifier.model import ctc_dual
    from classifier.weights import default_contract, save_bundle

    path = tmp_path_factory.mktemp("weights") / "random-test.pt"
    model = ctc_dual(len(features.feature_names()))
    model.eval()
    save_bundle(model, default_contract(), path, {"name": "random-test", "base_version": "0.0.0-test"})
    return {"CLASSIFIER_WEIGHTS": str(path)}


@pytest.fixture(scope="module")
def shared_worker(django_db_setup, django_db_blocker, classifier_env) -> Iterator[WorkerProcess]:
    """One real worker process for a whole module (starting one costs seconds of CPU)."""
    w = WorkerProcess(extra_env=classifier_env).start()
    yield w
    w.stop()


# --- images -------------------------------------------------------------------------------------


def event_array(channels: int = 3, size: int = 64, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """A plausible event thumbnail: dim background, a round cell in the centre (DAPI + CK)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    img = rng.normal(200, 20, (channels, size, size))
    img[0] += 3000 * (r2 < 16)  # nucleus
    if channels > 1:
        img[1] += 2000 * (r2 < 49)  # cytokeratin around it
    return np.clip(img, 0, np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else None).astype(dtype)


def tiff_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", metadata={"axes": "CYX"} if arr.ndim == 3 else None)
    return buf.getvalue()


def valid_tiff() -> bytes:
    return tiff_bytes(event_array())


def huge_declared_tiff(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 300-byte TIFF whose header declares width x height x 3 planes of 8-bit pixels."""
    entries = []
    n_planes = 3
    offsets_at = 8 + 2 + 12 * 10 + 4
    counts_at = offsets_at + 4 * n_planes
    bits_at = counts_at + 4 * n_planes
    data_at = bits_at + 2 * n_planes

    def entry(tag: int, typ: int, count: int, value: int) -> bytes:
        if typ == 3 and count == 1:
            return struct.pack("<HHIHH", tag, typ, count, value, 0)
        return struct.pack("<HHII", tag, typ, count, value)

    entries = [
        entry(256, 4, 1, width), entry(257, 4, 1, height), entry(258, 3, n_planes, bits_at),
        entry(259, 3, 1, 1), entry(262, 3, 1, 1), entry(273, 4, n_planes, offsets_at),
        entry(277, 3, 1, n_planes), entry(278, 4, 1, height), entry(279, 4, n_planes, counts_at),
        entry(284, 3, 1, 2),  # planar: one plane per channel
    ]
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    out += struct.pack("<3I", *([data_at] * n_planes))
    out += struct.pack("<3I", *([0xFFFFFFF0] * n_planes))
    out += struct.pack("<3H", 8, 8, 8)
    out += b"\0" * 64
    return out


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_bomb(mib: int = 64) -> bytes:
    """One member that inflates to ``mib`` MiB of zeros (~1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("bomb.tif", "w") as fh:
        block = b"\0" * (1 << 20)
        for _ in range(mib):
            fh.write(block)
    return buf.getvalue()


def upload_file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def files_under(root: Path) -> set[Path]:
    return {p for p in Path(root).rglob("*") if p.is_file()}
