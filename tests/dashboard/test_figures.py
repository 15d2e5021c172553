"""Figure builders: the timeline's bands, cut-off, second axis, click targets and same-day draws,
error bars and significance marks (issue 14)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from dashboard import figures


def _draw(i, day, value, status="final"):
    return figures.TimelineDraw(i, f"/draws/{i}/", dt.datetime.combine(day, dt.time(9)), f"T{i}", 7.5,
                                None if value is None else int(value), value, 0.1 if value else None,
                                status if value is not None else "")


def test_timeline_has_bands_cutoff_second_axis_and_click_targets():
    d0 = dt.date(2025, 1, 1)
    draws = [_draw(1, d0, 8.0), _draw(2, d0 + dt.timedelta(days=40), 1.0), _draw(3, d0 + dt.timedelta(days=80), None)]
    lines = [figures.TimelineLine(1, "Paclitaxel", d0, d0 + dt.timedelta(days=60), "progression"),
             figures.TimelineLine(2, "Capecitabine", d0 + dt.timedelta(days=61), None, "")]
    events = [figures.TimelineEvent(d0 + dt.timedelta(days=30), "imaging", "Imaging response", "PR", "")]
    fig = figures.to_json(figures.timeline_figure(draws, lines, events, cutoff=5, day0=d0, relative=False,
                                                  today=d0 + dt.timedelta(days=90)))
    shapes = fig["layout"]["shapes"]
    assert [s["name"] for s in shapes if s["type"] == "rect"] == ["line-1", "line-2"]
    (cut,) = [s for s in shapes if s.get("name") == "cutoff"]
    assert cut["y0"] == cut["y1"] == 5
    names = [t["name"] for t in fig["data"]]
    # 8 -> 1 CTC in equal volumes is a fall beyond counting noise (exact test p = 0.039): marked (issue 14).
    assert names == ["CTC per 7.5 mL", "Malignant fraction (%)", "Significant fall (p < 0.05)",
                     "Draw not analysed yet", "Imaging response"]
    err = fig["data"][0]["error_y"]  # exact 95 % Poisson intervals: 8 -> 3.45-15.76, 1 -> 0.03-5.57
    assert err["array"] == [7.76, 4.57] and err["arrayminus"] == [4.55, 0.97]
    assert fig["data"][1]["yaxis"] == "y2"
    assert fig["data"][0]["customdata"][0][0] == "/draws/1/"
    assert any("L2" in a["text"] for a in fig["layout"]["annotations"])


def test_band_labels_fit_their_band_and_each_event_kind_has_a_legend_entry():
    d0 = dt.date(2025, 1, 1)
    lines = [figures.TimelineLine(1, "Paclitaxel + bevacizumab", d0, d0 + dt.timedelta(days=45), "progression"),
             figures.TimelineLine(2, "Capecitabine", d0 + dt.timedelta(days=46), None, "")]
    events = [figures.TimelineEvent(d0 + dt.timedelta(days=60), "imaging", "Imaging response", "PR", ""),
              figures.TimelineEvent(d0 + dt.timedelta(days=92), "progression", "Progression", "PD", ""),
              figures.TimelineEvent(d0 + dt.timedelta(days=120), "imaging", "Imaging response", "SD", "")]
    today = d0 + dt.timedelta(days=160)
    fig = figures.to_json(figures.timeline_figure([_draw(1, d0, 8.0)], lines, events, 5, d0, False, today=today))
    labels = {a["name"]: a for a in fig["layout"]["annotations"] if a.get("name", "").startswith("line-label")}
    axis_days = (today - d0).days + 1
    for ln in lines:
        a = labels[f"line-label-{ln.number}"]
        end = ln.end or today
        visible = a["text"].replace("<b>", "").replace("</b>", "")
        assert len(visible) <= ((end - ln.start).days + 1) / axis_days * figures.LABEL_CHARS_ACROSS
        assert a["hovertext"] == f"L{ln.number} {ln.regimen}"  # the full name on hover
    assert labels["line-label-1"]["text"].endswith("…")  # "bevacizumaL2 Capecitabine" no more
    by_name = {t["name"]: t for t in fig["data"]}
    assert by_name["Imaging response"]["marker"]["symbol"] == "diamond"
    assert len(by_name["Imaging response"]["x"]) == 2
    assert by_name["Progression"]["marker"]["symbol"] == "x"
    assert figures.band_label(3, "FOLFOX", 0.01) == ("<b>L3</b>", "L3 FOLFOX")
    assert figures.band_label(3, "FOLFOX", 0.5) == ("<b>L3</b> FOLFOX", "L3 FOLFOX")


def test_relative_axis_counts_days_from_day0():
    d0 = dt.date(2025, 1, 1)
    fig = figures.to_json(figures.timeline_figure([_draw(1, d0 + dt.timedelta(days=10), 2.0)], [], [], 5, d0, True))
    assert fig["data"][0]["x"] == [10.0]
    assert fig["layout"]["xaxis"]["type"] == "linear"


def test_two_draws_on_one_day_are_spread_apart():
    d = dt.date(2025, 3, 1)
    offsets = figures.spread_same_day([d, d, dt.date(2025, 4, 1)], span_days=120)
    assert offsets[0] < 0 < offsets[1] and offsets[2] == 0
    fig = figures.to_json(figures.timeline_figure([_draw(1, d, 3.0), _draw(2, d, 6.0)], [], [], 5, d, True))
    xs = fig["data"][0]["x"]
    assert xs[0] != xs[1]


def test_pca_map_separates_two_groups():
    rng = np.random.default_rng(0)
    pts = [(i, "ctc", f"e{i}", 0.9, list(rng.normal(3, 0.3, 6))) for i in range(10)]
    pts += [(i + 10, "non_ctc", f"e{i}", 0.1, list(rng.normal(-3, 0.3, 6))) for i in range(10)]
    fig = figures.to_json(figures.embedding_figure(pts))
    ctc, other = fig["data"]
    assert (np.mean(ctc["x"]) > 0) != (np.mean(other["x"]) > 0)
    assert figures.pca_2d(np.zeros((0, 3))).shape == (0, 2)


def test_timeline_marks_only_changes_beyond_counting_noise():
    d0 = dt.date(2025, 1, 1)
    draws = [_draw(1, d0, 12.0), _draw(2, d0 + dt.timedelta(days=21), 1.0), _draw(3, d0 + dt.timedelta(days=42), 2.0)]
    fig = figures.to_json(figures.timeline_figure(draws, [], [], cutoff=5, day0=d0, relative=False,
                                                  today=d0 + dt.timedelta(days=50)))
    marks = [t for t in fig["data"] if t["name"].startswith("Significant")]
    assert [m["name"] for m in marks] == ["Significant fall (p < 0.05)"]  # 12 -> 1 yes, 1 -> 2 no
    assert marks[0]["text"] == ["p=0.003"] and marks[0]["customdata"][0][0] == "/draws/2/"
