"""Plotly figure builders: plain data in, a Plotly figure (``{"data", "layout"}``) out.

The figures are built as plain dicts in Plotly's JSON schema rather than with
``plotly.graph_objects``: the object layer validates every element of every list,
which for a cohort of 1,000 patients cost more than the database. Views pass
:func:`to_json` of a figure to ``json_script`` and the page draws it with
``Plotly.newPlot`` (``static/dashboard/app.js``). The builders know nothing about
requests; points that open a page carry its URL in ``customdata``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dashboard.plotly_text import plain, plain_list, strip_markup
from patients.drawdomain import FLAG as DOMAIN_FLAG
from patients.schedule import at_or_above_cutoff

# A calm palette with enough contrast on white (WCAG AA for the text colours).
INK = "#1d2733"
MUTED = "#5b6775"
BLUE = "#1f5f8b"
RED = "#b03a2e"
GREEN = "#2e7d5b"
PURPLE = "#6a4c93"
GREY = "#8a96a3"
AMBER = "#b36b00"  # images unlike the validated ones (the pages' amber flag)
BANDS = ["rgba(31,95,139,0.09)", "rgba(176,124,46,0.11)", "rgba(46,125,91,0.10)", "rgba(106,76,147,0.10)"]
LINE_SOLID = ["#8fb3cf", "#dcb886", "#9cc9b3", "#bba9d6"]
BAND_TEXT = ["#1f5f8b", "#8a5a13", "#2e6b4f", "#5a3f80"]
ARM_COLOURS = ["#1f5f8b", "#c0792b", "#2e7d5b", "#6a4c93", "#8c564b", "#4f6d7a"]
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

EVENT_SYMBOLS = {"imaging": "diamond", "surgery": "triangle-down", "progression": "x", "other": "circle"}


def base_layout(height: int, **extra) -> dict:
    layout = {
        "height": height,
        "margin": {"l": 60, "r": 60, "t": 40, "b": 50},
        "font": {"family": FONT, "size": 13, "color": INK},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hoverlabel": {"font": {"family": FONT}},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    }
    layout.update(extra)
    return layout


class Figure:
    """The little of ``plotly.graph_objects.Figure`` the builders use: traces, a layout, a dict."""

    def __init__(self, *traces: dict) -> None:
        self.data: list[dict] = list(traces)
        self.layout: dict = {}

    def add_trace(self, trace: dict) -> None:
        self.data.append(trace)

    def update_layout(self, **layout) -> None:
        self.layout.update(layout)

    def to_dict(self) -> dict:
        return {"data": self.data, "layout": self.layout}


def trace(kind: str, **props) -> dict:
    """One trace of type ``kind`` (scatter, bar, heatmap) with Plotly's attribute names."""
    return {"type": kind, **props}


def to_json(fig: Figure) -> dict:
    """A plain, JSON-safe dict ({data, layout}) ready for ``json_script``."""
    return json.loads(json.dumps(fig.to_dict(), default=_default))


def _default(value):  # noqa: ANN001, ANN202
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- Patient timeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineDraw:
    draw_id: int
    url: str
    drawn_at: dt.datetime
    timepoint: str
    volume_ml: float
    ctc_count: int | None
    per_7_5ml: float | None  # None: not analysed yet
    malignant_fraction: float | None
    status: str  # preliminary | final | amended | "" (not analysed)
    #: the model's range of the count (issue 14; patients/summary.py); None: not known
    count_min: int | None = None
    count_max: int | None = None
    #: the count came from images unlike the validated ones (patients.drawdomain), and why
    shifted: bool = False
    domain_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimelineLine:
    number: int
    regimen: str
    start: dt.date
    end: dt.date | None
    stop_reason: str


@dataclass(frozen=True)
class TimelineEvent:
    date: dt.date
    kind: str
    kind_label: str
    recist: str
    note: str


def spread_same_day(dates: Sequence[dt.date], span_days: float) -> list[float]:
    """An offset in days for each draw so that draws on one day sit side by side.

    The gap is a fraction of the visible span (about 1/70 of it, at least 0.3 day), so
    two points stay visibly apart at any zoom a page opens with.
    """
    gap = max(0.3, span_days / 70.0)
    groups: dict[dt.date, list[int]] = defaultdict(list)
    for i, d in enumerate(dates):
        groups[d].append(i)
    offsets = [0.0] * len(dates)
    for members in groups.values():
        k = len(members)
        for j, i in enumerate(members):
            offsets[i] = (j - (k - 1) / 2) * gap
    return offsets


#: characters of a 12 px band label across the whole plot at the narrowest page the timeline is
#: drawn at (about 600 px of plot area in an 820 px window, ~7 px a character, kept on the safe side).
LABEL_CHARS_ACROSS = 80


def band_label(number: int, regimen: str, share: float) -> tuple[str, str]:
    """``(label, full text)`` of a treatment-line band spanning ``share`` of the x-axis.

    The label is cut to the band's width ("L1 Paclitaxel + bev…", or just "L1") so that the
    next line's label never runs into it; the full text goes to the hover text. The regimen
    is user text: it is cut first, then made plain (``plotly_text.plain``), so that a cut
    never splits an escaped character.
    """
    regimen = strip_markup(regimen)
    full = plain(f"L{number} {regimen}".strip())
    room = int(share * LABEL_CHARS_ACROSS) - 1  # a little space before the next band's label
    head = f"L{number}"
    if len(f"{head} {regimen}".strip()) <= room:
        return f"<b>{head}</b> {plain(regimen)}".strip(), full
    rest = room - len(head) - 2  # a space and the ellipsis
    if rest < 3:
        return f"<b>{head}</b>", full
    return f"<b>{head}</b> {plain(regimen[:rest].rstrip())}…", full


def timeline_figure(
    draws: Sequence[TimelineDraw],
    lines: Sequence[TimelineLine],
    events: Sequence[TimelineEvent],
    cutoff: float,
    day0: dt.date | None,
    relative: bool,
    today: dt.date | None = None,
) -> Figure:
    """CTC/7.5 mL per draw over treatment-line bands, with the cut-off and clinical events.

    ``relative`` plots days since ``day0`` (falls back to calendar dates without one).
    """
    today = today or dt.date.today()
    relative = relative and day0 is not None
    all_dates = [d.drawn_at.date() for d in draws] + [ln.start for ln in lines] + [e.date for e in events]
    all_dates += [ln.end for ln in lines if ln.end]
    lo, hi = (min(all_dates), max(all_dates)) if all_dates else (today, today)
    span = max(1.0, (hi - lo).days)

    def x_of(date: dt.date | dt.datetime, offset_days: float = 0.0):  # noqa: ANN202 - float or ISO string
        day = date.date() if isinstance(date, dt.datetime) else date
        if relative:
            return round((day - day0).days + offset_days, 2)
        moment = dt.datetime.combine(day, dt.time(12)) + dt.timedelta(days=offset_days)
        return moment.isoformat(timespec="minutes")

    offsets = spread_same_day([d.drawn_at.date() for d in draws], span)
    analysed = [(d, o) for d, o in zip(draws, offsets, strict=True) if d.per_7_5ml is not None]
    pending = [(d, o) for d, o in zip(draws, offsets, strict=True) if d.per_7_5ml is None]
    bars = _count_intervals([d for d, _ in analysed])
    ymax = max([cutoff * 1.6, 4.0] + [d.per_7_5ml * 1.15 for d, _ in analysed] + [hi * 1.05 for _, hi in bars])
    event_y = ymax * 0.97

    fig = Figure()
    shapes, annotations = [], []
    axis_days = max(1.0, (max(today, hi) - lo).days + 1)
    for i, ln in enumerate(lines):
        end = ln.end or max(today, hi)
        text, full = band_label(ln.number, ln.regimen, ((end - ln.start).days + 1) / axis_days)
        shapes.append({
            "type": "rect", "xref": "x", "yref": "paper", "x0": x_of(ln.start, -0.5), "x1": x_of(end, 0.5),
            "y0": 0, "y1": 1, "fillcolor": BANDS[i % len(BANDS)], "line": {"width": 0}, "layer": "below",
            "name": f"line-{ln.number}",
        })
        annotations.append({
            "x": x_of(ln.start, -0.5), "y": 1.0, "xref": "x", "yref": "paper", "xanchor": "left",
            "yanchor": "bottom", "showarrow": False, "text": text, "hovertext": full,
            "font": {"size": 12, "color": BAND_TEXT[i % len(BAND_TEXT)]}, "name": f"line-label-{ln.number}",
        })
    shapes.append({
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": cutoff, "y1": cutoff,
        "line": {"color": RED, "width": 1.5, "dash": "dash"}, "name": "cutoff",
    })
    annotations.append({
        "x": 1, "xref": "paper", "xanchor": "right", "y": cutoff, "yref": "y", "yanchor": "bottom",
        "showarrow": False, "text": f"cut-off ≥{cutoff:g} / 7.5 mL", "font": {"size": 11, "color": RED},
    })

    hover = (
        "<b>%{text}</b><br>%{customdata[1]}<br>CTC %{customdata[2]} in %{customdata[3]} mL"
        "<br><b>%{y:.1f} per 7.5 mL</b> (%{customdata[4]})<br>%{customdata[5]}<extra></extra>"
    )
    if analysed:
        fig.add_trace(trace("scatter",
            name="CTC per 7.5 mL", x=[x_of(d.drawn_at, o) for d, o in analysed], y=[d.per_7_5ml for d, _ in analysed],
            mode="lines+markers", text=[plain(d.timepoint) for d, _ in analysed],
            customdata=[[d.url, f"{d.drawn_at:%d %b %Y}", d.ctc_count, f"{d.volume_ml:g}", plain(d.status),
                         _uncertainty_words(d, b, cutoff) + _domain_words(d)]
                        for (d, _), b in zip(analysed, bars, strict=True)],
            line={"color": BLUE, "width": 2},
            # Exact 95 % Poisson interval of each count, through its volume (issue 14).
            error_y={"type": "data", "symmetric": False, "color": BLUE, "thickness": 1.2, "width": 4,
                     "array": [round(hi - d.per_7_5ml, 2) for (d, _), (_, hi) in zip(analysed, bars, strict=True)],
                     "arrayminus": [round(max(0.0, d.per_7_5ml - lo), 2)
                                    for (d, _), (lo, _) in zip(analysed, bars, strict=True)]},
            marker={
                "size": 11,
                "line": {"width": 2, "color": [_status_colour(d.per_7_5ml, cutoff) for d, _ in analysed]},
                "color": ["#ffffff" if d.status == "preliminary" else _status_colour(d.per_7_5ml, cutoff)
                          for d, _ in analysed],
            },
            hovertemplate=hover,
        ))
        fig.add_trace(trace("scatter",
            name="Malignant fraction (%)", x=[x_of(d.drawn_at, o) for d, o in analysed],
            y=[round((d.malignant_fraction or 0) * 100, 2) for d, _ in analysed], yaxis="y2",
            mode="lines+markers", line={"color": PURPLE, "width": 1.5, "dash": "dot"},
            marker={"size": 6, "symbol": "square"}, text=[plain(d.timepoint) for d, _ in analysed],
            customdata=[[d.url] for d, _ in analysed],
            hovertemplate="<b>%{text}</b><br>Malignant fraction %{y:.1f}%<extra></extra>",
        ))
        for t in _significance_traces(analysed, x_of, ymax, cutoff):
            fig.add_trace(t)
        shifted = [(d, o) for d, o in analysed if d.shifted]
        if shifted:
            fig.add_trace(_domain_trace(shifted, x_of))
    if pending:
        fig.add_trace(trace("scatter",
            name="Draw not analysed yet", x=[x_of(d.drawn_at, o) for d, o in pending], y=[0] * len(pending),
            mode="markers", marker={"size": 11, "symbol": "circle-open-dot", "color": GREY, "line": {"width": 2}},
            text=[plain(d.timepoint) for d, _ in pending],
            customdata=[[d.url, f"{d.drawn_at:%d %b %Y}"] for d, _ in pending],
            hovertemplate="<b>%{text}</b><br>%{customdata[1]}<br>not analysed yet<extra></extra>",
        ))
    # One trace per kind of clinical event, so that the legend shows each marker (◆ imaging
    # response, ✖ progression, ▼ surgery) instead of the first event's symbol for all of them.
    kinds: dict[str, list[TimelineEvent]] = {}
    for e in events:
        kinds.setdefault(e.kind, []).append(e)
    for kind, mine in kinds.items():
        fig.add_trace(trace("scatter",
            name=plain(mine[0].kind_label), x=[x_of(e.date) for e in mine], y=[event_y] * len(mine),
            mode="markers+text", text=[plain(e.recist or (e.kind_label.split() or [""])[0]) for e in mine],
            textposition="bottom center",
            textfont={"size": 11, "color": INK}, legendgroup="events",
            marker={"size": 12, "color": INK, "symbol": EVENT_SYMBOLS.get(kind, "circle")},
            customdata=[[plain(e.kind_label), f"{e.date:%d %b %Y}", plain(e.note, limit=120)] for e in mine],
            hovertemplate="<b>%{customdata[0]}</b> %{text}<br>%{customdata[1]}<br>%{customdata[2]}<extra></extra>",
        ))
    x_title = f"Days since {day0:%d %b %Y}" if relative else ""
    fig.update_layout(**base_layout(
        440, shapes=shapes, annotations=annotations, hovermode="closest", dragmode="zoom",
        xaxis={"title": {"text": x_title}, "type": "linear" if relative else "date", "showgrid": True,
               "gridcolor": "#eef1f4", "zeroline": relative, "zerolinecolor": "#c7ced6"},
        yaxis={"title": {"text": "CTC per 7.5 mL"}, "range": [0, ymax], "gridcolor": "#eef1f4", "zeroline": False},
        yaxis2={"title": {"text": "Malignant fraction (%)"}, "overlaying": "y", "side": "right", "range": [0, 100],
                "showgrid": False, "tickmode": "linear", "tick0": 0, "dtick": 20, "ticksuffix": "%"},
        margin={"l": 60, "r": 60, "t": 36, "b": 84},
        legend={"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0},
    ))
    return fig


def _count_intervals(draws: Sequence[TimelineDraw]) -> list[tuple[float, float]]:
    """The 95 % Poisson interval per 7.5 mL of each analysed draw (the value itself without a count)."""
    from patients.stats import per_7_5ml_ci

    return [per_7_5ml_ci(d.ctc_count, d.volume_ml) if d.ctc_count is not None and d.volume_ml > 0
            else (d.per_7_5ml, d.per_7_5ml) for d in draws]


def _status_colour(per_7_5ml: float, cutoff: float) -> str:
    """Red for a count at or above the cut-off, green below it (``patients.schedule.at_or_above_cutoff``)."""
    return RED if at_or_above_cutoff(per_7_5ml, cutoff) else GREEN


def _uncertainty_words(d: TimelineDraw, bar: tuple[float, float], cutoff: float) -> str:
    """Hover line: the interval and, when it applies, "indeterminate until reviewed / at this volume"."""
    from patients.summary import draw_status

    status, note = draw_status(d.per_7_5ml, cutoff, preliminary=d.status == "preliminary", count=d.ctc_count,
                               count_min=d.count_min, count_max=d.count_max, volume_ml=d.volume_ml)
    words = f"95% CI {bar[0]:g}–{bar[1]:g}"
    if status and status not in ("favorable", "unfavorable"):
        words += f"; <b>{status}</b>"
    if note:
        words += f"; {note}"
    return words


#: reasons a hover box lists (each cut to a line); the draw page has them all
HOVER_REASONS = 3


def _domain_words(d: TimelineDraw) -> str:
    """Hover lines of a draw whose images differ from the validated ones: the flag and its first reasons."""
    if not d.shifted:
        return ""
    lines = [f"<b>{DOMAIN_FLAG}</b>"] + [plain(r, limit=100) for r in d.domain_reasons[:HOVER_REASONS]]
    if len(d.domain_reasons) > HOVER_REASONS:
        lines.append(f"and {len(d.domain_reasons) - HOVER_REASONS} more on the draw page")
    return "<br>" + "<br>".join(lines)


def _domain_trace(shifted: Sequence[tuple[TimelineDraw, float]], x_of) -> dict:  # noqa: ANN001
    """An amber ring around each count from images unlike the validated ones, with its own legend
    entry (the marker's colour and fill already say favorable/unfavorable and final/preliminary)."""
    return trace("scatter",
        name=DOMAIN_FLAG[0].upper() + DOMAIN_FLAG[1:], x=[x_of(d.drawn_at, o) for d, o in shifted],
        y=[d.per_7_5ml for d, _ in shifted], mode="markers",
        marker={"size": 21, "symbol": "circle-open", "color": AMBER, "line": {"width": 2.5, "color": AMBER}},
        # the count's own hover box carries the flag and reasons; a ring that took the hover (or the
        # click) would hide the count it surrounds
        hoverinfo="skip",
    )


def _reading(d: TimelineDraw):  # noqa: ANN202 - patients.summary.Reading, imported lazily as above
    from patients.summary import Reading

    return Reading(d.timepoint, d.per_7_5ml, d.ctc_count, d.volume_ml, d.status, d.count_min, d.count_max,
                   d.shifted)


def _significance_traces(analysed: Sequence[tuple[TimelineDraw, float]], x_of, ymax: float,  # noqa: ANN001
                         cutoff: float) -> list[dict]:
    """Marks at draws that differ from the previous one beyond counting noise (exact test, alpha 0.05);
    none where the change rests on a count the test cannot take (``patients.summary.untested_reason``:
    indeterminate until reviewed, or from images unlike the validated ones)."""
    from patients.stats import ALPHA, p_words, rate_change
    from patients.summary import untested_reason

    marks: dict[str, list] = {"rise": [], "fall": []}
    for (prev, _), (d, o) in zip(analysed, analysed[1:], strict=False):
        if prev.ctc_count is None or d.ctc_count is None or prev.volume_ml <= 0 or d.volume_ml <= 0:
            continue
        if untested_reason(_reading(prev), _reading(d), cutoff):
            continue
        test = rate_change(prev.ctc_count, prev.volume_ml, d.ctc_count, d.volume_ml)
        if test.significant:
            marks[test.direction].append((d, o, prev, test.p_value))
    out = []
    for direction, rows in marks.items():
        if not rows:
            continue
        out.append(trace("scatter",
            name=f"Significant {direction} (p < {ALPHA:g})", x=[x_of(d.drawn_at, o) for d, o, _, _ in rows],
            y=[min(ymax * 0.9, d.per_7_5ml + ymax * 0.07) for d, _, _, _ in rows], mode="markers+text",
            marker={"size": 12, "symbol": "triangle-up" if direction == "rise" else "triangle-down",
                    "color": RED if direction == "rise" else GREEN},
            text=[p_words(p).replace(" ", "") for _, _, _, p in rows], textposition="top center",
            textfont={"size": 10, "color": INK},
            customdata=[[d.url, plain(prev.timepoint), p_words(p)] for d, _, prev, p in rows],
            hovertemplate=f"<b>Significant {direction}</b> since %{{customdata[1]}}"
                          "<br>exact test, %{customdata[2]}<extra></extra>",
        ))
    return out


# --- Draw page -----------------------------------------------------------------------------


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (zeros pad a short basis)."""
    x = np.asarray(embeddings, dtype=float)
    if x.ndim != 2 or len(x) == 0:
        return np.zeros((0, 2))
    x = x - x.mean(axis=0)
    if len(x) < 2 or not np.any(x):
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return coords


def embedding_figure(points: Sequence[tuple[int, str, str, float, list[float]]]) -> Figure:
    """PCA map of the events' embeddings coloured by final call.

    ``points``: ``(event id, final call, source, ctc probability, embedding)``.
    """
    usable = [p for p in points if p[4]]
    fig = Figure()
    if usable:
        width = min(len(p[4]) for p in usable)
        coords = pca_2d(np.array([p[4][:width] for p in usable]))
        for call, name, colour in (("ctc", "CTC", RED), ("non_ctc", "Not CTC", BLUE)):
            idx = [i for i, p in enumerate(usable) if p[1] == call]
            if not idx:
                continue
            fig.add_trace(trace("scatter",
                name=name, x=coords[idx, 0].round(3).tolist(), y=coords[idx, 1].round(3).tolist(), mode="markers",
                marker={"size": 7, "color": colour, "opacity": 0.75, "line": {"width": 0.5, "color": "#ffffff"}},
                customdata=[[usable[i][0], plain(usable[i][2]), round(usable[i][3], 3)] for i in idx],
                hovertemplate="<b>%{customdata[1]}</b><br>P(CTC) %{customdata[2]}<extra>" + name + "</extra>",
            ))
    fig.update_layout(**base_layout(
        360, xaxis={"title": {"text": "PC 1"}, "zeroline": False, "gridcolor": "#eef1f4"},
        yaxis={"title": {"text": "PC 2"}, "zeroline": False, "gridcolor": "#eef1f4"},
        margin={"l": 50, "r": 20, "t": 40, "b": 50},
    ))
    return fig


# --- Cohort page ----------------------------------------------------------------------------


def _arm_colours(labels: Sequence[str]) -> dict[str, str]:
    return {label: ARM_COLOURS[i % len(ARM_COLOURS)] for i, label in enumerate(sorted(set(labels)))}


def waterfall_figure(bars: Sequence[tuple[str, str, float, str]], cap: float) -> Figure:
    """Change of CTC/7.5 mL from baseline per patient, largest rise first, coloured by arm."""
    fig = Figure()
    colours = _arm_colours([b[1] for b in bars])
    order = [plain(b[0]) for b in bars]
    for arm, colour in colours.items():
        mine = [b for b in bars if b[1] == arm]
        fig.add_trace(trace("bar",
            name=plain(arm), x=[plain(b[0]) for b in mine], y=[b[2] for b in mine], marker={"color": colour},
            customdata=[[plain(b[3].replace("_", " "))] for b in mine],
            hovertemplate="<b>%{x}</b><br>%{y:+.0f}% from baseline<br>%{customdata[0]}"
                          "<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(**base_layout(
        360, barmode="overlay", bargap=0.15,
        xaxis={"categoryorder": "array", "categoryarray": order, "showticklabels": len(order) <= 40,
               "tickangle": -45, "automargin": True},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        margin={"l": 60, "r": 20, "t": 40, "b": 20},
        yaxis={"title": {"text": "Change from baseline (%)"}, "range": [-105, cap + 10], "zeroline": True,
               "zerolinecolor": "#9aa5b1", "gridcolor": "#eef1f4"},
    ))
    return fig


def conversion_figure(by_arm: dict[str, dict[str, int]], labels: dict[str, str]) -> Figure:
    """Stacked share of patients per conversion class, one bar per arm."""
    colours = {"to_favorable": GREEN, "persistent_favorable": "#9cc9b3", "to_unfavorable": "#d9822b",
               "persistent_unfavorable": RED, "indeterminate": PURPLE}
    arms = sorted(by_arm)
    fig = Figure()
    for key, label in labels.items():
        counts = [by_arm[a].get(key, 0) for a in arms]
        if key == "indeterminate" and not any(counts):
            continue  # its own bar (patients.cohort.INDETERMINATE) only when some conversion is undecided
        totals = [max(1, sum(by_arm[a].values())) for a in arms]
        fig.add_trace(trace("bar",
            name=plain(label), y=plain_list(arms),
            x=[round(c / t * 100, 1) for c, t in zip(counts, totals, strict=True)], orientation="h",
            marker={"color": colours.get(key, GREY)}, customdata=counts,
            hovertemplate="%{y}: %{x:.0f}% (%{customdata} patients)<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(**base_layout(
        max(260, 120 + 46 * len(arms)), barmode="stack",
        xaxis={"title": {"text": "Patients with a follow-up draw (%)"}, "range": [0, 100], "gridcolor": "#eef1f4"},
        yaxis={"automargin": True, "autorange": "reversed"}, margin={"l": 20, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    ))
    return fig


@dataclass(frozen=True)
class SwimmerLane:
    study_id: str
    url: str
    start: dt.date
    lines: Sequence[tuple[int, str, dt.date, dt.date | None, str]]
    #: date, timepoint, value, status (favorable | unfavorable | indeterminate until reviewed | None)
    draws: Sequence[tuple[dt.date, str, float | None, str | None]]
    #: per draw (same order): its count came from images unlike the validated ones (patients.drawdomain)
    shifted: Sequence[bool] = ()


def swimmer_figure(lanes: Sequence[SwimmerLane], today: dt.date | None = None) -> Figure:
    """One lane per patient: treatment lines as bars from the patient's start, draws as markers."""
    today = today or dt.date.today()
    fig = Figure()
    by_line: dict[int, list] = defaultdict(list)
    for lane in lanes:
        for number, regimen, start, end, reason in lane.lines:
            s = (start - lane.start).days
            e = ((end or today) - lane.start).days
            by_line[number].append((plain(lane.study_id), s, max(1, e - s), plain(regimen), plain(reason),
                                    end is None))
    for number in sorted(by_line):
        rows = by_line[number]
        fig.add_trace(trace("bar",
            name=f"Line {number}", orientation="h", y=[r[0] for r in rows], base=[r[1] for r in rows],
            x=[r[2] for r in rows], marker={"color": LINE_SOLID[(number - 1) % len(LINE_SOLID)], "line": {"width": 0}},
            customdata=[[r[3], r[4].replace("_", " ") or ("ongoing" if r[5] else "—")] for r in rows],
            hovertemplate="%{y} · <b>L" + str(number) + " %{customdata[0]}</b><br>day %{base} – %{x} days"
                          "<br>stop: %{customdata[1]}<extra></extra>",
        ))
    from patients.summary import INDETERMINATE_REVIEW

    for status, name, colour in (("unfavorable", "Unfavorable draw", RED), ("favorable", "Favorable draw", GREEN),
                                 (INDETERMINATE_REVIEW, "Indeterminate until reviewed", PURPLE),
                                 (None, "Draw not analysed", GREY)):
        pts = [(lane, d, k < len(lane.shifted) and bool(lane.shifted[k]))
               for lane in lanes for k, d in enumerate(lane.draws) if d[3] == status]
        if not pts:
            continue
        flag = f"<br><b>{DOMAIN_FLAG}</b>"
        fig.add_trace(trace("scatter",
            name=name, mode="markers", y=[plain(lane.study_id) for lane, _, _ in pts],
            x=[(d[0] - lane.start).days for lane, d, _ in pts],
            # an amber outline (and a hover line) on a count from images unlike the validated ones
            marker={"size": 9, "color": colour, "symbol": "circle" if status else "circle-open",
                    "line": {"width": [2.5 if shifted else 1 for _, _, shifted in pts],
                             "color": [AMBER if shifted else ("#ffffff" if status else colour)
                                       for _, _, shifted in pts]}},
            customdata=[[lane.url, plain(d[1]), "—" if d[2] is None else f"{d[2]:.1f}", flag if shifted else ""]
                        for lane, d, shifted in pts],
            hovertemplate="%{y} · %{customdata[1]} (day %{x})<br>CTC/7.5 mL %{customdata[2]}%{customdata[3]}"
                          "<extra></extra>",
        ))
    fig.update_layout(**base_layout(
        max(280, 100 + 24 * len(lanes)), barmode="overlay", bargap=0.35, hovermode="closest",
        xaxis={"title": {"text": "Days since enrolment (or diagnosis)"}, "gridcolor": "#eef1f4", "zeroline": True},
        yaxis={"categoryorder": "array", "categoryarray": [plain(lane.study_id) for lane in reversed(lanes)],
               "automargin": True},
        margin={"l": 20, "r": 20, "t": 40, "b": 50},
    ))
    return fig


# --- Model page -----------------------------------------------------------------------------


def confusion_figure(matrix: Sequence[Sequence[float]], labels: Sequence[str]) -> Figure:
    z = np.asarray(matrix, dtype=float)
    fig = Figure(trace("heatmap",
        z=z.tolist(), x=plain_list(labels), y=plain_list(labels), colorscale=[[0, "#f4f7fa"], [1, BLUE]],
        showscale=False,
        text=[[f"{v:g}" for v in row] for row in z], texttemplate="%{text}", textfont={"size": 14},
        hovertemplate="true %{y} · predicted %{x}: %{z}<extra></extra>",
    ))
    fig.update_layout(**base_layout(
        280, xaxis={"title": {"text": "Predicted"}, "side": "bottom"},
        yaxis={"title": {"text": "True"}, "autorange": "reversed"}, margin={"l": 80, "r": 10, "t": 10, "b": 50},
    ))
    return fig


def roc_figure(fpr: Sequence[float], tpr: Sequence[float], auc: float | None) -> Figure:
    fig = Figure()
    fig.add_trace(trace("scatter", x=[0, 1], y=[0, 1], mode="lines", line={"color": GREY, "dash": "dot"}, name="Chance",
                             hoverinfo="skip"))
    label = f"ROC (AUC {auc:.3f})" if auc is not None else "ROC"
    fig.add_trace(trace("scatter", x=list(fpr), y=list(tpr), mode="lines", line={"color": BLUE, "width": 2}, name=label,
                             hovertemplate="FPR %{x:.3f} · TPR %{y:.3f}<extra></extra>"))
    fig.update_layout(**base_layout(
        280, xaxis={"title": {"text": "False positive rate"}, "range": [0, 1], "gridcolor": "#eef1f4"},
        yaxis={"title": {"text": "True positive rate"}, "range": [0, 1.02], "gridcolor": "#eef1f4"},
        margin={"l": 60, "r": 10, "t": 40, "b": 50},
    ))
    return fig
