"""CSV output for exports: a list of flat dicts -> one header row and one row per dict."""

from __future__ import annotations

import csv
import io
from typing import Any

from rest_framework.renderers import BaseRenderer


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        # {"fields": [...], "rows": [...]} (header even without rows), a list of dicts, or an error body.
        fields = None
        if isinstance(data, dict) and "rows" in data:
            rows, fields = data["rows"], data.get("fields")
        elif isinstance(data, list):
            rows = data
        else:
            rows = [data] if isinstance(data, dict) else []
        buf = io.StringIO()
        fields = fields or (list(rows[0].keys()) if rows else None)
        if fields:
            writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue().encode(self.charset)


class PNGRenderer(BaseRenderer):
    """Stored PNG bytes as they are (event thumbnails and heat maps); errors as JSON text."""

    media_type = "image/png"
    format = "png"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            return bytes(data)
        import json

        return json.dumps(data).encode()
