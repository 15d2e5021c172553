"""Filters for ``LOGGING`` (config/settings/base.py).

Django's ``django.request`` logger attaches the exception, with its traceback, to the warning
it writes for a ``PermissionDenied`` (and a ``BadRequest`` or an unreadable multipart body)
raised by a view. Those are ordinary answers to a client (a reviewer opening the audit page,
a role without the export right), not faults: a traceback per refusal buries the real errors
in the server log. Server errors (5xx) keep their traceback.
"""

from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """A 4xx record of ``django.request`` becomes one line: the message and the refusal's reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if record.exc_info and isinstance(status, int) and 400 <= status < 500:
            exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else record.exc_info
            reason = str(exc) if isinstance(exc, BaseException) else ""
            message = record.getMessage()
            if reason:
                # Escaped as Django escapes the path (no line breaks forged into the log).
                message += " (" + reason.encode("unicode_escape").decode("ascii") + ")"
            record.msg, record.args = message, ()
            record.exc_info = record.exc_text = None
        return True
