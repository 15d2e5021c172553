"""CSV cells that a spreadsheet will not run as formulas (CSV injection, OWASP).

A study id, timepoint or regimen typed by a user ends up in an export that a statistician
opens in Excel or LibreOffice; a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is a formula there (``=HYPERLINK(...)`` exfiltrates, DDE runs commands).
Such text cells get a leading apostrophe, which spreadsheets show as text. Numbers
(including negative ones) are left alone.
"""

from __future__ import annotations

from typing import Any

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(_TRIGGERS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value  # "-1.5" is a number, not a formula


def safe_row(row: list[Any]) -> list[Any]:
    return [safe_cell(v) for v in row]
