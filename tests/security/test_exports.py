"""Exports opened in a spreadsheet must not run formulas (CSV injection, OWASP).

A study id, timepoint or regimen typed by a user ends up in the CSV a statistician opens in
Excel; a cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab/CR) is a formula there.
Exports must neutralise such cells (e.g. a leading apostrophe).
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from rest_framework.authtoken.models import Token

from patients.summary import recompute_summary
from tests import factories
from tests.security.test_roles import _routes

pytestmark = pytest.mark.django_db

HOSTILE_ID = '=HYPERLINK("http://ev.il","x")'
HOSTILE_TIMEPOINT = "=cmd|' /C calc'!A0"
_FORMULA = re.compile(r"^[=+@\t\r]|^-(?![\d.])")


def _csv_text(resp) -> str:
    if getattr(resp, "streaming", False):
        return b"".join(resp.streaming_content).decode()
    return resp.content.decode()


def test_csv_exports_neutralise_formula_cells(client, alice, patient):
    from patients.models import Patient

    Patient.objects.filter(pk=patient.pk).update(study_id=HOSTILE_ID)
    draw = factories.BloodDrawFactory(patient=patient, timepoint=HOSTILE_TIMEPOINT)
    recompute_summary(draw)
    token = Token.objects.create(user=alice)
    client.force_login(alice)
    urls = []
    for fmt in _routes():
        if fmt.startswith("/admin/") or not any(w in fmt for w in ("export", ".csv", "deid")):
            continue
        url = fmt.replace("patients/%(pk)s", f"patients/{patient.pk}").replace("draws/%(pk)s", f"draws/{draw.pk}")
        if "%(" not in url:
            urls += [url, url + ("&" if "?" in url else "?") + "format=csv"]
    checked, bad = 0, []
    for url in dict.fromkeys(urls):
        resp = client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}")
        if resp.status_code != 200 or "csv" not in resp.get("Content-Type", ""):
            continue
        checked += 1
        for row in csv.reader(io.StringIO(_csv_text(resp))):
            bad += [f"{url}: {cell!r}" for cell in row if _FORMULA.match(cell)]
    if not checked:
        pytest.skip("no CSV export routes yet")
    assert not bad, "CSV cells a spreadsheet would run as formulas:\n" + "\n".join(bad)
