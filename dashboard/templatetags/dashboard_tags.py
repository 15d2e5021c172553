"""Small template filters for the dashboard pages."""

from __future__ import annotations

import base64

from django import template

from dashboard.labels import category_label as _category_label

register = template.Library()


@register.filter
def category_label(code: str | None) -> str:
    """A cell category's readable name ("CK+ debris" for ``ck_debris``)."""
    return _category_label(code)


@register.filter
def png_data_uri(data: bytes | memoryview | None) -> str:
    """Inline a stored PNG (thumbnail strip or heat map) as a data: URI."""
    if not data:
        return ""
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")


@register.filter
def percent(value: float | None, digits: int = 0) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value * 100:.{int(digits)}f}%"


@register.filter
def per75(value: float | None) -> str:
    if not isinstance(value, int | float):
        return "—"
    return f"{value:.1f}"


@register.filter
def ml(value) -> str:  # noqa: ANN001 - Decimal or float
    """A volume without trailing zeros: 7.5, 10, 7.25."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def get_item(mapping: dict, key: str):  # noqa: ANN201
    return mapping.get(key) if mapping else None


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:  # noqa: ANN001
    """The current query string with ``changes`` applied (pagination keeps the filters)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


@register.simple_tag
def plotly_js_url() -> str:
    """The versioned URL of the bundled plotly.js (served by ``views.plotly_js``)."""
    import plotly
    from django.urls import reverse

    return reverse("dashboard:plotly_js", kwargs={"version": plotly.__version__})
