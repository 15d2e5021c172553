"""Media in an S3-compatible bucket (issue 15.3), against a real S3-protocol server process.

The server is moto's (``moto_server``, from PyPI: pure Python, starts in about a second, speaks
the S3 REST protocol over HTTP; docs/operations.md says why it and not MinIO). The web side and
the worker run as separate processes configured only through the environment, as a second
worker host would be: the image must reach the bucket and never the local media folder, and the
worker must stream it from there and store the results (thumbnails included) as usual.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patients.models import CellEvent, ImagingUpload, UploadStatus
from tests.conftest import ROOT, wait_for
from tests.security.conftest import event_array, tiff_bytes, zip_bytes
from tests.security.test_faults import _WEB_UPLOAD

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BUCKET = "ctc-media-test"


class MotoS3:
    """A moto S3 server on a free port, with one bucket."""

    def __init__(self, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        server = Path(sys.executable).parent / "moto_server"
        if not server.exists():
            pytest.skip("moto[server] is not installed (requirements/dev.in)")
        self.log = log.open("wb")
        self.proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, timeout=30, interval=0.2, what="moto_server to answer")
        self.client().create_bucket(Bucket=BUCKET)

    def _answers(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def client(self):  # noqa: ANN201 - boto3 S3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test",
                            region_name="us-east-1")

    def env(self) -> dict[str, str]:
        return {"S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": self.url, "S3_ACCESS_KEY_ID": "test",
                "S3_SECRET_ACCESS_KEY": "test", "S3_REGION": "us-east-1", "S3_PREFIX": "media"}

    def objects(self) -> dict[str, bytes]:
        c = self.client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        return {k: c.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def moto_s3(tmp_path) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path / "moto.log")
    yield server
    server.stop()


def test_an_upload_goes_to_the_bucket_and_a_worker_elsewhere_streams_it_from_there(
        worker_factory, classifier_env, moto_s3, alice, draw, tmp_path):
    media, scratch = tmp_path / "media", tmp_path / "tmp"
    media.mkdir()
    scratch.mkdir()
    # Nothing shared on disk: an empty media folder of its own, a temporary folder we can watch.
    env = {**classifier_env, **moto_s3.env(), "MEDIA_ROOT": str(media), "TMPDIR": str(scratch)}
    worker = worker_factory(extra_env=env)

    n = 3
    data = zip_bytes({f"event{i}.tif": tiff_bytes(event_array(seed=i)) for i in range(n)})
    archive = tmp_path / "gallery.zip"
    archive.write_bytes(data)
    web = subprocess.run([sys.executable, "-c", _WEB_UPLOAD, str(archive), str(draw.pk)], cwd=ROOT, timeout=120,
                         capture_output=True, text=True, env=worker.env())  # the web side: same environment
    assert web.returncode == 0, web.stderr[-3000:]
    upload_id = int(next(x for x in web.stdout.splitlines() if x.startswith("ACCEPTED")).split()[1])

    stored = moto_s3.objects()
    assert [k for k in stored if k.startswith("media/") and k.endswith(".zip")], list(stored)
    assert data in stored.values(), "the bucket does not hold the uploaded bytes"

    wait_for(lambda: ImagingUpload.objects.get(pk=upload_id).status in (UploadStatus.DONE, UploadStatus.FAILED),
             timeout=120, what="the worker to finish the upload")
    up = ImagingUpload.objects.get(pk=upload_id)
    assert up.status == UploadStatus.DONE, up.error
    events = CellEvent.objects.filter(upload=up)
    assert events.count() == n
    assert all(e.thumbnail and e.heatmap for e in events), "thumbnails and heat maps stored as with local media"
    time.sleep(0.5)
    assert list(media.rglob("*")) == [], "an image landed in the local media folder"
    assert [p for p in scratch.iterdir() if p.name.startswith("ctc-media-")] == [], "the streamed copy was kept"
