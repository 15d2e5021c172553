"""User text for Plotly figures: the one place it is made plain.

Plotly draws its own pseudo-HTML in every text it renders in SVG (tick labels, legend
entries, annotations, hover labels, hover templates after substitution): ``<a href>``
becomes a clickable link that opens in a new tab, ``<b>``/``<i>``/``<br>``/``<sup>``/``<sub>``
and ``<span style>`` change the look. That happens *inside* the figure, after the page's
HTML escaping, so a study ID, timepoint, regimen, note or file name written as
``<a href="https://evil.example">…</a>`` was a working outside link on the cohort page.

:func:`plain` is what every figure builder in :mod:`dashboard.figures` passes user text
through. It removes Plotly's tags (keeping the words between them), turns line breaks
and other control characters into spaces (Plotly reads a newline as ``<br>``), and
escapes what is left of ``&``, ``<`` and ``>`` as entities, which Plotly shows as the
characters themselves and never parses as markup. The builders' own markup (``<b>`` in
fixed templates, ``<extra>``) is written by the code around the cleaned text.
"""

from __future__ import annotations

import re

#: The tags Plotly's text renderer understands (plotly.js ``svg_text_utils``), opening or closing,
#: with or without attributes; anything else with angle brackets is escaped, not removed.
_PLOTLY_TAG = re.compile(r"</?\s*(?:a|b|i|em|s|u|sub|sup|span|br|extra)\b[^<>]*>", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def plain(text: object, limit: int | None = None) -> str:
    """``text`` as Plotly shows it literally: no tags, no line breaks, ``&<>`` escaped.

    ``limit`` cuts the cleaned text (before escaping, so that no tag or entity is cut in
    half) to at most that many characters, the last one an ellipsis when it was longer.
    ``None`` becomes ``""``; other values are converted with ``str`` first.
    """
    s = strip_markup(text)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)].rstrip() + "…"
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def strip_markup(text: object) -> str:
    """``text`` without Plotly's tags and control characters, not yet escaped."""
    if text is None:
        return ""
    s = _CONTROL.sub(" ", str(text))
    previous = None
    while previous != s:  # "<<b>a href=...>" must not leave a tag behind once the inner one goes
        previous, s = s, _PLOTLY_TAG.sub("", s)
    return s


def plain_list(values: object) -> list[str]:
    """:func:`plain` of each value (tick arrays, category lists)."""
    return [plain(v) for v in values]  # type: ignore[union-attr]
