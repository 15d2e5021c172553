"""Request parsers: JSON with a depth limit.

Python's JSON decoder recurses once per ``[`` or ``{``: a body of 1,000 nested arrays hit
the interpreter's recursion limit and DRF's parser, which only catches ``ValueError``,
let the ``RecursionError`` become a 500 (anonymously, on ``/api/auth/token/`` too). No
document this API reads is more than a few levels deep, so anything past
:data:`MAX_DEPTH` is refused with a 400 before a serializer sees it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

#: Deepest nesting accepted in a JSON body (the API's own documents need 3).
MAX_DEPTH = 32
_TOO_DEEP = f"JSON parse error - the document is nested too deeply (at most {MAX_DEPTH} levels)."


def depth_exceeds(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``data`` nests lists/dicts more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; a body nested past :data:`MAX_DEPTH` (or past the decoder's recursion) is a 400."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as err:
            raise ParseError(_TOO_DEEP) from err
        if depth_exceeds(data):
            raise ParseError(_TOO_DEEP)
        return data
