"""What every dashboard page shares: the page chrome's context and the CSV download."""

from __future__ import annotations

import csv

from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header

from dashboard.access import actions_for
from patients.roles import Action


def base_context(request: HttpRequest, **extra) -> dict:
    """The context of every page: ``can`` (the actions the user may take in at least one team: the
    navigation, and the buttons of multi-patient pages whose action applies to the patients it is
    allowed on) and ``extra``. A page about one record passes ``rights=dashboard.access.rights_on(...)``
    and draws that record's controls from it (rights are per care team)."""
    actions = actions_for(request)
    ctx = {"can": {a.value: (a in actions) for a in Action}}
    ctx.update(extra)
    return ctx


def csv_response(filename: str, rows) -> StreamingHttpResponse:  # noqa: ANN001 - iterable of lists
    """``rows`` streamed as a CSV download named ``filename``, not cached."""

    class Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(Echo())
    response = StreamingHttpResponse((writer.writerow(r) for r in rows), content_type="text/csv; charset=utf-8")
    # Django's RFC 6266 helper: quotes and backslashes escaped, anything else non-printable (a CR/LF
    # in a study ID stored before identifiers were checked) as filename*=utf-8''..., never raw.
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "no-store"
    return response
