"""Issue 16.1: user text reaches Plotly figures as plain text, never as Plotly markup.

Plotly renders its own pseudo-HTML (``<a href>``, ``<b>``, ``<br>``, ``<span style>``) in
tick labels, legends, annotations and hover labels, whatever the page's HTML escaping did:
a study ID ``<a href="https://evil.example">PLINK</a>`` became a working link on the cohort
page's swimmer axis. Every builder in ``dashboard.figures`` takes user text through
``dashboard.plotly_text.plain``; these tests feed markup through each builder (and the
pages that draw them) and look for it in the figure JSON.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import re

import pytest

from dashboard import figures
from dashboard.plotly_text import plain

EVIL = '<a href="https://evil.example">PLINK</a><b>B</b><br><span style="font-size:90px">S</span>'


def _assert_no_markup(fig: figures.Figure) -> str:
    text = json.dumps(figures.to_json(fig))
    low = text.lower()
    assert "<a" not in low and "href" not in low, text[:2000]
    assert "<span" not in low and "evil.example</a" not in low
    assert "PLINK" in text  # the words stay, as text
    return text


def test_plain_strips_plotly_tags_and_escapes_the_rest():
    assert plain(EVIL) == "PLINKBS"
    assert plain("CEA <5 & rising >3") == "CEA &lt;5 &amp; rising &gt;3"
    assert plain("a\r\nb\tc") == "a b c"
    assert plain("<A HREF='x'>y</A>") == "y"
    assert plain(None) == ""
    assert plain("L1 Paclitaxel") == "L1 Paclitaxel"
    # An unclosed tag is escaped, not interpreted.
    assert "<" not in plain('<a href="https://evil.example"')


def _timeline() -> figures.Figure:
    d0 = dt.date(2026, 1, 5)
    draws = [
        figures.TimelineDraw(1, "/draws/1/", dt.datetime(2026, 1, 6, 9), EVIL, 7.5, 3, 3.0, 0.4, "final"),
        figures.TimelineDraw(2, "/draws/2/", dt.datetime(2026, 2, 6, 9), EVIL, 7.5, None, None, None, ""),
    ]
    lines = [figures.TimelineLine(1, EVIL, d0, dt.date(2026, 3, 1), EVIL),
             figures.TimelineLine(2, "Paclitaxel " + EVIL * 3, dt.date(2026, 3, 2), None, "")]
    events = [figures.TimelineEvent(dt.date(2026, 2, 1), "imaging", EVIL, "", EVIL),
              figures.TimelineEvent(dt.date(2026, 2, 9), "progression", "Progression", EVIL, EVIL)]
    return figures.timeline_figure(draws, lines, events, 5.0, d0, relative=True, today=dt.date(2026, 4, 1))


def _swimmer() -> figures.Figure:
    lane = figures.SwimmerLane(EVIL, "/patients/1/", dt.date(2026, 1, 1),
                               [(1, EVIL, dt.date(2026, 1, 2), None, EVIL)],
                               [(dt.date(2026, 1, 3), EVIL, 4.0, "unfavorable"), (dt.date(2026, 1, 9), EVIL, None,
                                                                                   None)])
    return figures.swimmer_figure([lane], today=dt.date(2026, 2, 1))


#: One hostile call per figure builder; test_every_builder_is_covered keeps this complete.
BUILDERS = {
    "timeline_figure": _timeline,
    "swimmer_figure": _swimmer,
    "waterfall_figure": lambda: figures.waterfall_figure([(EVIL, EVIL, 50.0, EVIL)], 200.0),
    "conversion_figure": lambda: figures.conversion_figure({EVIL: {"to_favorable": 1}}, {"to_favorable": EVIL}),
    "embedding_figure": lambda: figures.embedding_figure(
        [(1, "ctc", EVIL, 0.9, [0.1, 0.2, 0.3]), (2, "non_ctc", EVIL, 0.1, [0.3, 0.1, 0.0]),
         (3, "ctc", EVIL, 0.7, [0.0, 0.5, 0.2])]),
    "confusion_figure": lambda: figures.confusion_figure([[1, 2], [3, 4]], [EVIL, "PLINK"]),
    "roc_figure": lambda: figures.roc_figure([0, 0.5, 1], [0, 0.8, 1], 0.9),
    "km_figure": lambda: _km(),
}


def _km() -> figures.Figure:
    from dashboard.survival_views import km_figure

    group = {"key": "a", "name": EVIL, "n": 3, "events": 1, "times": [0, 2, 5], "survival": [1, 0.66, 0.66],
             "censored_times": [5]}
    return km_figure({"groups": [group], "endpoint_label": "Overall survival"})


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_markup_through_each_figure_builder_stays_text(name):
    fig = BUILDERS[name]()
    if name == "roc_figure":  # no user text in it; still built through the module
        json.dumps(figures.to_json(fig))
        return
    _assert_no_markup(fig)


def test_every_builder_is_covered():
    """Every ``*_figure`` function of the dashboard package has a hostile call above."""
    import importlib
    import pkgutil

    import dashboard

    builders = set()
    for info in pkgutil.iter_modules(dashboard.__path__):
        module = importlib.import_module(f"dashboard.{info.name}")
        builders |= {n for n, f in inspect.getmembers(module, inspect.isfunction)
                     if n.endswith("_figure") and f.__module__ == module.__name__}
    assert "timeline_figure" in builders
    assert builders <= set(BUILDERS), f"add a hostile call for {sorted(builders - set(BUILDERS))}"


def test_the_swimmer_axis_shows_the_study_id_as_text():
    fig = figures.to_json(_swimmer())
    assert fig["layout"]["yaxis"]["categoryarray"] == [plain(EVIL)]
    assert all(y == plain(EVIL) for t in fig["data"] for y in t.get("y", []))


# --- through the pages ------------------------------------------------------------------------

def _figures_in(html: str) -> list[str]:
    return re.findall(r'<script id="fig-[^"]*" type="application/json">(.*?)</script>', html, re.S)


@pytest.mark.django_db
def test_patient_page_print_summary_and_cohort_carry_no_plotly_links(client, alice, patient):
    from patients.models import Patient, Trial, TrialArm
    from patients.summary import recompute_summary
    from tests import factories

    trial = Trial.objects.create(code="T16", title="t")
    arm = TrialArm.objects.create(trial=trial, code="A", description="a")
    Patient.objects.filter(pk=patient.pk).update(study_id=EVIL[:40], trial=trial, arm=arm,
                                                 enrolled_on=dt.date(2026, 1, 1))
    factories.TreatmentLineFactory(patient=patient, regimen=EVIL)
    factories.ClinicalEventFactory(patient=patient, note=EVIL)
    for i in range(2):
        draw = factories.BloodDrawFactory(patient=patient, timepoint=EVIL[:40],
                                          drawn_at=dt.datetime(2026, 1, 10 + i * 20, 9, tzinfo=dt.UTC))
        upload = factories.ImagingUploadFactory(draw=draw)
        factories.CellEventFactory(upload=upload, call="ctc", ctc_probability=0.9)
        recompute_summary(draw)
    client.force_login(alice)
    seen = 0
    for url in (f"/patients/{patient.pk}/", f"/patients/{patient.pk}/summary/", "/cohort/"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        for blob in _figures_in(resp.content.decode()):
            data = json.loads(blob)
            text = json.dumps(data).lower()
            assert "<a" not in text and "href" not in text, (url, text[:1500])
            seen += 1
    assert seen >= 3
