"""The timeline's marker colours follow ``patients.schedule.ctc_status`` (issue 12 leftovers, point 3):
the figure compared with the cut-off itself before; the rule is "unfavorable at or above it"."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboard import figures
from patients.schedule import UNFAVORABLE, ctc_status


def _draw(i: int, day: dt.date, value: float, status: str = "final") -> figures.TimelineDraw:
    return figures.TimelineDraw(i, f"/draws/{i}/", dt.datetime.combine(day, dt.time(9)), f"T{i}", 7.5,
                                int(value), value, 0.1, status)


@pytest.mark.parametrize("cutoff", [5, 2.5])
def test_marker_colours_are_the_schedules_status_at_and_around_the_cut_off(cutoff):
    d0 = dt.date(2025, 1, 1)
    values = [cutoff - 1, cutoff, cutoff + 1, 0.0]
    draws = [_draw(i, d0 + dt.timedelta(days=21 * i), v) for i, v in enumerate(values)]
    fig = figures.to_json(figures.timeline_figure(draws, [], [], cutoff, d0, True))
    marker = fig["data"][0]["marker"]
    expected = [figures.RED if ctc_status(v, cutoff) == UNFAVORABLE else figures.GREEN for v in values]
    assert marker["line"]["color"] == marker["color"] == expected
    assert expected[1] == figures.RED  # exactly at the cut-off is unfavorable


def test_a_preliminary_draw_is_hollow_with_its_status_as_the_rim():
    d0 = dt.date(2025, 1, 1)
    fig = figures.to_json(figures.timeline_figure([_draw(1, d0, 5.0, "preliminary")], [], [], 5, d0, True))
    marker = fig["data"][0]["marker"]
    assert marker["color"] == ["#ffffff"] and marker["line"]["color"] == [figures.RED]
