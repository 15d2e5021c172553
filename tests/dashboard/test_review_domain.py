"""What a new user met on the review and draw pages (new-user test):

1. the draw review page showed no domain warning and confirmed the remaining calls of a draw whose
   images differ from the validated ones with one key: the warning (the draw page's, reasons
   included) is on the review page, and the bulk confirmation of such a draw needs an explicit
   acknowledgement (page form and API); one cell's review needs none;
2. the model range of the count ("indeterminate until reviewed") was only in a hover text: it is
   visible next to the status on the draw page and the patient page, worded as the printable summary;
3. the upload form proposed the channel order of the draw's *oldest* upload (and of failed ones):
   it proposes the latest finished upload's, and the uploads table lists the newest first;
4. a 3-channel upload's thumbnails showed a black AF tile called "AF": the API's thumbnail, the
   gallery and the printout show (and name) only the channels the upload recorded.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from patients.imaging import decode_grey, encode_grey, encode_strip
from patients.models import AuditEvent, CellEvent, ImagingUpload, SummaryStatus, UploadStatus
from patients.summary import recompute_summary
from tests import factories
from tests.dashboard.test_browser import browser, page, sign_in  # noqa: F401 - fixtures of the browser test

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
WARNING = "These images differ from the validated domain: review every call."
REASON = "no AF channel: the model was validated on 4-channel images (DAPI, CK, AF, CD45) (30 of 30 images)"
CHANNEL_REASON = "channel order: the CK channel looks like a nuclear stain: check the channel order"
ACK = "I have looked at these images: they differ from the validated ones"
SHIFTED = {"status": "shifted", "score": 0.7, "reasons": [REASON, CHANNEL_REASON]}
IN_DOMAIN = {"status": "in_domain", "score": 0.05, "reasons": []}


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _api(user) -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return c


def _analysed(draw, check: dict | None, n: int = 4, **upload) -> list[CellEvent]:
    """A finished upload of ``draw`` with ``n`` sure non-CTC calls and this domain check; summary recomputed."""
    up = factories.ImagingUploadFactory(draw=draw, domain_check=check, **upload)
    cells = [factories.CellEventFactory(upload=up, draw=draw, index=i, ctc_probability=0.01, margin=0.49)
             for i in range(n)]
    recompute_summary(draw)
    return cells


def _without_titles(html: str) -> str:
    """The page as read without hovering: every title attribute dropped."""
    return re.sub(r'\stitle="[^"]*"', "", html)


# --- 1. the review page: the domain warning, and an acknowledged bulk confirmation -----------------


def test_the_review_page_shows_the_draw_pages_warning_with_its_reasons(bob, draw):
    _analysed(draw, SHIFTED)
    html = _client(bob).get(f"/draws/{draw.pk}/review/").content.decode()
    assert WARNING in html and 'data-testid="domain-warning"' in html and 'role="alert"' in html
    visible = _without_titles(html)
    assert REASON in visible and "check the channel order" in visible
    # the same include as the draw page: one wording
    draw_page = _client(bob).get(f"/draws/{draw.pk}/").content.decode()
    block = re.search(r'<div class="msg msg-warning domain-warning".*?</div>', draw_page, re.S).group(0)
    assert block in html


def test_the_confirm_form_of_a_shifted_draw_requires_the_acknowledgement(bob, draw):
    _analysed(draw, SHIFTED)
    html = _client(bob).get(f"/draws/{draw.pk}/review/").content.decode()
    form = re.search(r"<form[^>]*data-confirm-remaining.*?</form>", html, re.S).group(0)
    box = re.search(r'<input[^>]*name="acknowledge_shifted"[^>]*>', form)
    assert box and 'type="checkbox"' in box.group(0) and "required" in box.group(0)
    assert ACK in form


def test_an_in_domain_draw_has_neither_warning_nor_acknowledgement(bob, draw):
    _analysed(draw, IN_DOMAIN)
    html = _client(bob).get(f"/draws/{draw.pk}/review/").content.decode()
    assert WARNING not in html and "acknowledge_shifted" not in html
    assert 'data-testid="confirm-remaining"' in html


def test_the_page_refuses_the_bulk_confirmation_of_a_shifted_draw_without_the_acknowledgement(bob, draw):
    cells = _analysed(draw, SHIFTED)
    ids = ",".join(str(c.pk) for c in cells)
    client = _client(bob)
    url = f"/draws/{draw.pk}/review/confirm/"
    r = client.post(url, {"cells": ids}, HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and r.json()["code"] == "domain_shifted"
    assert ACK in r.json()["error"]
    r = client.post(url, {"cells": ids, "next": f"/draws/{draw.pk}/review/"}, follow=True)
    assert ACK in r.content.decode()  # the message on the page it comes back to
    assert not CellEvent.objects.filter(draw=draw).exclude(reviewed_call="").exists()
    assert not AuditEvent.objects.filter(detail__bulk_confirm=True).exists()
    r = client.post(url, {"cells": ids, "acknowledge_shifted": "1"}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and sorted(r.json()["confirmed"]) == sorted(c.pk for c in cells)
    audit = AuditEvent.objects.get(detail__bulk_confirm=True)
    assert audit.detail["acknowledged_shifted"] is True
    draw.summary.refresh_from_db()
    assert draw.summary.status == SummaryStatus.FINAL


def test_the_api_refuses_the_bulk_confirmation_of_a_shifted_draw_without_acknowledge_shifted(bob, draw):
    cells = _analysed(draw, SHIFTED)
    api = _api(bob)
    url = f"/api/draws/{draw.pk}/confirm-remaining/"
    for body in ({}, {"acknowledge_shifted": False}):
        r = api.post(url, body, format="json")
        assert r.status_code == 400, r.content
        message = r.json()["acknowledge_shifted"][0]
        assert "differ from the validated" in message and '"acknowledge_shifted": true' in message
    assert not CellEvent.objects.filter(draw=draw).exclude(reviewed_call="").exists()
    r = api.post(url, {"acknowledge_shifted": True, "cells": [c.pk for c in cells]}, format="json")
    assert r.status_code == 200 and sorted(r.json()["confirmed"]) == sorted(c.pk for c in cells)


def test_the_api_confirms_an_in_domain_draw_without_the_field(bob, draw):
    cells = _analysed(draw, IN_DOMAIN)
    _analysed(draw, SHIFTED, status=UploadStatus.WITHDRAWN)  # withdrawn: its check does not count
    r = _api(bob).post(f"/api/draws/{draw.pk}/confirm-remaining/", {}, format="json")
    assert r.status_code == 200 and sorted(r.json()["confirmed"]) == sorted(c.pk for c in cells)


def test_one_cells_review_needs_no_acknowledgement(bob, draw):
    first, second, *_ = _analysed(draw, SHIFTED)
    r = _client(bob).post(f"/events/{first.pk}/review/", {"call": first.call}, HTTP_ACCEPT="application/json")
    assert r.status_code == 200, r.content
    r = _api(bob).post(f"/api/events/{second.pk}/review/", {"call": second.call}, format="json")
    assert r.status_code == 200, r.content


def test_the_f_key_does_not_bypass_the_acknowledgement():
    """review.js: F goes to the acknowledgement while it is unticked (not to the button), and the
    fetch that confirms sends it (the browser test below presses the keys)."""
    js = (ROOT / "dashboard" / "static" / "dashboard" / "review.js").read_text(encoding="utf-8")
    handler = re.search(r'if \(\(key === "f" \|\| key === "F"\).*?\n', js).group(0)
    assert "if (ack && !ack.checked) { ack.focus();" in handler
    assert re.search(r'var ack = confirmForm && confirmForm\.querySelector\("\[data-acknowledge-shifted\]"\)', js)
    submit = js[js.index('confirmForm.addEventListener("submit"'):]
    assert "if (ack && !ack.checked) { ack.focus();" in submit and "data.acknowledge_shifted" in submit


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_browser_f_then_enter_does_not_confirm_a_shifted_draw(page, live_server, bob, draw):  # noqa: F811
    cells = _analysed(draw, SHIFTED)
    sign_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/draws/{draw.pk}/review/")
    page.wait_for_function("document.activeElement && document.activeElement.matches('[data-cell]')")
    page.keyboard.press("KeyF")
    assert page.evaluate("document.activeElement.name") == "acknowledge_shifted"
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert not CellEvent.objects.filter(pk__in=[c.pk for c in cells]).exclude(reviewed_call="").exists()
    page.keyboard.press("Space")  # ticks the box
    page.keyboard.press("KeyF")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-summary-status]').textContent.trim() === 'Final'")


# --- 2. the model range beside "indeterminate until reviewed" -------------------------------------


@pytest.fixture
def indeterminate(team):
    """Preliminary, 6 CTC calls of which 3 unsure: range 3-6 straddles the breast cut-off of 5."""
    patient = factories.PatientFactory(care_team=team)
    draw = factories.BloodDrawFactory(patient=patient)
    up = factories.ImagingUploadFactory(draw=draw)
    for p, call, category in ([(0.95, "ctc", "ctc")] * 3 + [(0.2, "ctc", "ctc")] * 3
                              + [(0.01, "non_ctc", "leukocyte")] * 3):
        factories.CellEventFactory(upload=up, ctc_probability=p, margin=abs(p - 0.163), call=call,
                                   category=category)
    recompute_summary(draw)
    draw.refresh_from_db()
    assert (draw.summary.ctc_count_min, draw.summary.ctc_count_max) == (3, 6)
    return draw


def test_the_draw_page_shows_the_model_range_beside_the_status(alice, indeterminate):
    html = _without_titles(_client(alice).get(f"/draws/{indeterminate.pk}/").content.decode())
    status = re.search(r'data-testid="draw-status">(.*?)</span>\s*<span class="sub" data-testid="draw-ci"',
                       html, re.S).group(1)
    assert "indeterminate until reviewed" in status and "(3–6 cells)" in status


def test_the_patient_page_table_shows_the_model_range_beside_the_status(alice, indeterminate):
    html = _without_titles(_client(alice).get(f"/patients/{indeterminate.patient_id}/").content.decode())
    status = re.search(r'data-testid="draw-status">(.*?)</td>', html, re.S).group(1)
    assert "indeterminate until reviewed" in status and "(3–6 cells)" in status
    report = _client(alice).get(f"/patients/{indeterminate.patient_id}/summary/").content.decode()
    assert "(3–6 cells)" in report  # the printable summary's wording, unchanged


def test_the_patient_list_shows_the_model_range_beside_the_status(alice, indeterminate):
    html = _without_titles(_client(alice).get("/").content.decode())
    row = re.search(rf'>{re.escape(indeterminate.patient.study_id)}</a>(.*?)</tr>', html, re.S).group(1)
    assert "indeterminate until reviewed" in row and "(3–6 cells)" in row, row


# --- 3. the channel order the upload form proposes, the uploads table's order --------------------


def _upload(draw, channels: list[str], status: str, days_ago: int) -> ImagingUpload:
    up = factories.ImagingUploadFactory(draw=draw, channels=channels, status=status)
    ImagingUpload.objects.filter(pk=up.pk).update(created_at=timezone.now() - dt.timedelta(days=days_ago))
    return up


def test_the_upload_form_proposes_the_latest_finished_uploads_channels(alice, draw):
    oldest = _upload(draw, ["DAPI", "CK", "AF", "CD45"], UploadStatus.DONE, 5)
    latest = _upload(draw, ["Hoechst", "pan-CK", "CD45"], UploadStatus.DONE, 3)
    failed = _upload(draw, ["CK", "DAPI", "CD45"], UploadStatus.FAILED, 2)
    withdrawn = _upload(draw, ["CD45", "CK", "DAPI"], UploadStatus.WITHDRAWN, 1)
    r = _client(alice).get(f"/draws/{draw.pk}/")
    assert r.context["upload_form"].initial["channels"] == "Hoechst,pan-CK,CD45"
    # the uploads table, newest first (ImagingUpload.Meta.ordering), with the file counts
    assert [u.pk for u in r.context["uploads"]] == [withdrawn.pk, failed.pk, latest.pk, oldest.pk]
    assert all(hasattr(u, "n_files") for u in r.context["uploads"])


def test_a_new_draw_proposes_the_patients_latest_finished_uploads_channels(alice, patient, draw):
    _upload(draw, ["DAPI", "CK", "AF", "CD45"], UploadStatus.DONE, 9)
    _upload(draw, ["DAPI", "CK", "CD45"], UploadStatus.DONE, 8)
    _upload(draw, ["CK", "DAPI", "CD45"], UploadStatus.FAILED, 7)
    new = factories.BloodDrawFactory(patient=patient, timepoint="C2D1")
    r = _client(alice).get(f"/draws/{new.pk}/")
    assert r.context["upload_form"].initial["channels"] == "DAPI,CK,CD45"


# --- 4. thumbnails of a 3-channel upload (no AF): only the recorded channels -------------------------


def _three_channel_cell(draw) -> tuple[CellEvent, np.ndarray]:
    """A CTC of a DAPI/CK/CD45 upload whose stored strip has the model's four tiles (AF all zero)."""
    strip = np.full((4, 8, 8), 200, np.uint8)
    strip[3] = 0
    up = factories.ImagingUploadFactory(draw=draw, channels=["dapi", "CK-FITC", "CD45"],
                                        result_channels=["DAPI", "CK", "CD45", "AF"])
    cell = factories.CellEventFactory(upload=up, draw=draw, call="ctc", category="ctc", ctc_probability=0.97,
                                      margin=0.47, thumbnail=encode_strip(strip),
                                      heatmap=encode_grey(np.zeros((8, 8), np.uint8)))
    recompute_summary(draw)
    return cell, strip


def test_the_api_thumbnail_has_only_the_recorded_channels(alice, draw):
    cell, strip = _three_channel_cell(draw)
    r = _api(alice).get(f"/api/events/{cell.pk}/thumbnail/")
    assert r.status_code == 200 and r["X-Channels"] == "DAPI,CK,CD45"
    assert r["X-Channels-Not-Recorded"] == "AF"
    grey = decode_grey(r.content)
    assert grey.shape == (8, 24) and (grey == 200).all()
    # a 4-channel upload keeps its four tiles and says nothing is missing
    four = factories.CellEventFactory(upload=factories.ImagingUploadFactory(
        draw=draw, channels=["DAPI", "CK", "AF", "CD45"], result_channels=["DAPI", "CK", "CD45", "AF"]),
        thumbnail=encode_strip(strip))
    r = _api(alice).get(f"/api/events/{four.pk}/thumbnail/")
    assert r["X-Channels"] == "DAPI,CK,CD45,AF" and "X-Channels-Not-Recorded" not in r
    assert decode_grey(r.content).shape == (8, 32)


def test_the_gallery_and_review_tiles_say_af_was_not_recorded(alice, bob, draw):
    cell, _ = _three_channel_cell(draw)
    for client, url in ((_client(alice), f"/draws/{draw.pk}/"), (_client(bob), f"/draws/{draw.pk}/review/")):
        html = client.get(url).content.decode()
        canvas = re.search(r"<canvas[^>]*data-strip=[^>]*>", html, re.S).group(0)
        assert 'data-missing="AF"' in canvas, url
        assert "AF not recorded" in _without_titles(html), url
    js = (ROOT / "dashboard" / "static" / "dashboard" / "app.js").read_text(encoding="utf-8")
    assert "dataset.missing" in js  # the toggles and the false colour leave the unrecorded tile out


def test_the_printout_shows_and_names_only_the_recorded_channels(alice, draw):
    _three_channel_cell(draw)
    html = _client(alice).get(f"/patients/{draw.patient_id}/summary/").content.decode()
    cells = re.search(r'data-testid="report-cells".*?</div>\s*<p class="small muted">.*?</p>', html, re.S).group(0)
    assert "DAPI, CK, CD45" in cells and "DAPI, CK, CD45, AF" not in cells and "AF not recorded" in cells
    import base64

    src = re.search(r'<img src="data:image/png;base64,([^"]+)"', cells).group(1)
    assert decode_grey(base64.b64decode(src)).shape == (8, 24)
