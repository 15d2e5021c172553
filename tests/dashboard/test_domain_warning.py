"""The draw page warns, with the reasons, when an analysed upload's images differ from the
validated domain (ImagingUpload.domain_check, filled by the worker), and only then."""

from __future__ import annotations

import pytest

from patients.models import UploadStatus
from tests import factories

pytestmark = pytest.mark.django_db

WARNING = "These images differ from the validated domain: review every call."


def _page(client, user, draw) -> str:
    client.force_login(user)
    r = client.get(f"/draws/{draw.pk}/")
    assert r.status_code == 200
    return r.content.decode()


def test_warning_with_reasons_for_a_shifted_upload(client, alice, draw):
    reason = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45) (50 of 50 images)"
    up = factories.ImagingUploadFactory(draw=draw, domain_check={"status": "shifted", "score": 0.6,
                                                                 "reasons": [reason]})
    factories.ImagingUploadFactory(draw=draw, domain_check={"status": "in_domain", "score": 0.0, "reasons": []})
    html = _page(client, alice, draw)
    assert WARNING in html and 'data-testid="domain-warning"' in html and 'role="alert"' in html
    assert "no AF channel: the model was validated on 4-channel images" in html
    assert f"Upload {up.pk} " in html


@pytest.mark.parametrize("check", [
    {"status": "in_domain", "score": 0.15, "reasons": ["pixel size 0.22 µm (inferred from nuclei) outside ..."]},
    None,  # analysed before the check existed
])
def test_no_warning_for_in_domain_or_unchecked_uploads(client, alice, draw, check):
    factories.ImagingUploadFactory(draw=draw, domain_check=check)
    html = _page(client, alice, draw)
    assert WARNING not in html and "domain-warning" not in html


def test_no_warning_for_a_withdrawn_or_failed_shifted_upload(client, alice, draw):
    for status in (UploadStatus.WITHDRAWN, UploadStatus.FAILED):
        factories.ImagingUploadFactory(draw=draw, status=status,
                                       domain_check={"status": "shifted", "score": 1.0, "reasons": ["x"]})
    assert WARNING not in _page(client, alice, draw)
