"""Through a real Celery worker: every upload's resource carries the domain check
(``/api/uploads/{id}/`` -> ``domain_check``), and the draw page warns when an upload is shifted."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier import domain
from tests.api.test_upload_worker import _wait_done, _weights_present

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(not _weights_present(), reason="the classifier's shipped weights are not built yet")]


def _files(name: str, n: int) -> tuple[list[SimpleUploadedFile], str]:
    imgs, chans, names, _y = domain.synthetic_set(name, n, 21)
    files = []
    for img, nm in zip(imgs, names, strict=True):
        buf = io.BytesIO()
        tifffile.imwrite(buf, img.astype(np.uint8), photometric="minisblack", metadata={"axes": "CYX"})
        files.append(SimpleUploadedFile(nm.rsplit(".", 1)[0] + ".tif", buf.getvalue(), content_type="image/tiff"))
    return files, ",".join(chans[0])


def test_upload_resource_carries_domain_check_and_the_draw_page_warns(worker, client_for, alice, draw, client):
    api = client_for(alice)
    results = {}
    for name in ("in_domain", "no_af"):
        files, channels = _files(name, 3)
        r = api.post(f"/api/draws/{draw.pk}/uploads/", {"file": files, "channels": channels}, format="multipart")
        assert r.status_code == 202, r.content
        assert r.json()["domain_check"] is None  # not analysed yet
        results[name] = _wait_done(api, r.json()["url"])
    ok, shifted = results["in_domain"]["domain_check"], results["no_af"]["domain_check"]
    assert set(ok) == {"status", "score", "reasons"} and ok["status"] == "in_domain", ok
    assert shifted["status"] == "shifted" and shifted["score"] >= domain.THRESHOLD
    assert any(r.startswith("no AF channel") for r in shifted["reasons"]), shifted
    # the same object on a re-read (what the worker stored)
    assert api.get(f"/api/uploads/{results['no_af']['id']}/").json()["domain_check"] == shifted

    client.force_login(alice)
    page = client.get(f"/draws/{draw.pk}/").content.decode()
    assert "These images differ from the validated domain: review every call." in page
    assert f"Upload {results['no_af']['id']} " in page and f"Upload {results['in_domain']['id']} " not in page
