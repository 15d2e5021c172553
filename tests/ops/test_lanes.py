"""Priority lanes (issue 15.2): the clinic's upload goes ahead of queued bulk work, and one
worker started as `make worker` starts it (``-Q <queue>``) serves both lanes.

Real Redis, PostgreSQL and a real worker process; the worker starts only after everything is
queued, so the order it takes the jobs in is the order of the lanes, not of arrival.
"""

from __future__ import annotations

import pytest

from patients.models import ImagingUpload, Lane, UploadStatus
from patients.uploads import UploadRequest, create_upload
from tests.conftest import wait_for
from tests.security.conftest import CHANNELS, event_array, tiff_bytes, upload_file, zip_bytes

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _gallery(n: int, seed: int) -> bytes:
    return zip_bytes({f"event{i:03d}.tif": tiff_bytes(event_array(seed=seed + i)) for i in range(n)})


def test_an_interactive_upload_queued_after_bulk_work_is_done_first_and_the_bulk_work_still_finishes(
        worker_factory, classifier_env, alice, draw):
    def bulk_upload(i: int) -> ImagingUpload:
        return create_upload(draw, UploadRequest([upload_file(f"bulk{i}.zip", _gallery(2, 10 * i))], CHANNELS,
                                                 lane=Lane.BULK), alice)

    def clinic_upload(i: int) -> ImagingUpload:
        return create_upload(draw, UploadRequest([upload_file(f"clinic{i}.zip", _gallery(2, 90 + i))], CHANNELS),
                             alice)

    # Two clinic uploads among the bulk ones: a worker that merely alternated between the two
    # queues (round robin) would take a bulk job between them.
    uploads = [bulk_upload(0), bulk_upload(1), clinic_upload(0), bulk_upload(2), clinic_upload(1), bulk_upload(3)]
    clinic = [u for u in uploads if u.lane == Lane.INTERACTIVE]
    bulk = [u for u in uploads if u.lane == Lane.BULK]
    assert len(clinic) == 2 and len(bulk) == 4

    worker_factory(extra_env=classifier_env)  # -Q <session queue>: consumes <queue>-bulk as well
    ids = [u.pk for u in uploads]
    wait_for(lambda: ImagingUpload.objects.filter(pk__in=ids, status=UploadStatus.DONE).count() == len(ids),
             timeout=180, what="every upload to be done (neither lane starved)")
    rows = {u.pk: u for u in ImagingUpload.objects.filter(pk__in=ids)}
    last_clinic_done = max(rows[c.pk].finished_at for c in clinic)
    first_bulk_start = min(rows[b.pk].started_at for b in bulk)
    assert last_clinic_done < first_bulk_start, (
        "an interactive upload waited behind bulk work: "
        f"{sorted((r.started_at, r.lane) for r in rows.values())}")
