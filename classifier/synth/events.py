"""Cell populations and event thumbnails.

Sizes follow CellSearch data (product brief): leukocytes ~9 µm across, breast CTCs
~12 µm median; apoptotic CTCs are CK+ CD45- with condensed or fragmented nuclei and
granular/blebbing CK (the M30-positive morphology); CK foci are anuclear CK+
fragments; artifacts are bright in several channels including the empty AF channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifier.results import CATEGORIES
from classifier.synth.cells import (
    CD45,
    CK,
    Canvas,
    Shape,
    draw_cytoplasm,
    draw_debris,
    draw_nucleus,
    paint_label,
    window,
)
from classifier.synth.optics import Optics, render

#: Category mix used for training: hard negatives (apoptotic CTCs, CK+ leukocytes) are
#: over-represented relative to blood because they are where the decisions are made.
TRAIN_MIX: dict[str, float] = {
    "ctc": 0.36,
    "apoptotic_ctc": 0.2,
    "leukocyte": 0.2,
    "ck_debris": 0.12,
    "artifact": 0.12,
}


def sample_category(rng: np.random.Generator, mix: dict[str, float] | None = None) -> str:
    mix = mix or TRAIN_MIX
    names = list(mix)
    p = np.array([mix[n] for n in names], float)
    return str(rng.choice(names, p=p / p.sum()))


def _lognormal(rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float) -> float:
    return float(np.clip(median * np.exp(rng.normal(0.0, sigma)), lo, hi))


# --- single cells ---------------------------------------------------------------------


def draw_leukocyte(
    canvas: Canvas, rng: np.random.Generator, cy: float, cx: float, label: int = 0, ck_stain: float = 0.0
) -> float:
    """A leukocyte: CD45 membrane ring, round (lymphocyte) or lobed (granulocyte) nucleus.

    ``ck_stain`` > 0 adds a nonspecific CK patch (why such leukocytes become candidates).
    Returns the cell radius in µm.
    """
    r = _lognormal(rng, 4.5, 0.08, 3.6, 5.6)
    shape = Shape.random(rng, r, 0.04, 1.15)
    cd45 = _lognormal(rng, 0.8, 0.6, 0.08, 5.0)
    cell = draw_cytoplasm(canvas, rng, CD45, cy, cx, shape, cd45, "ring")
    lobed = rng.random() < 0.5
    nr = r * (rng.uniform(0.75, 0.85) if lobed else rng.uniform(0.68, 0.82))
    ndy, ndx = rng.normal(0, 0.08 * r, 2) / canvas.px_um
    nuc = draw_nucleus(canvas, rng, cy + ndy, cx + ndx, nr, "lobed" if lobed else "round",
                       _lognormal(rng, 1.0, 0.25, 0.4, 2.5))
    if ck_stain > 0:
        draw_cytoplasm(canvas, rng, CK, cy, cx, shape, ck_stain, "spot")
    _label(canvas, cy, cx, r, cell, nuc, label, ndy, ndx, nr)
    return r


#: fraction of CTCs drawn CK-dim (EMT-like): a thin, faint CK rim around a large nucleus.
#: They are CTCs by the CellSearch definition (CK above background, CD45-, nucleus).
CK_DIM_FRACTION = 0.25


def draw_ctc(canvas: Canvas, rng: np.random.Generator, cy: float, cx: float, label: int = 0,
             ck_dim: bool | None = None) -> float:
    """An intact CTC: irregular CK+ body, CD45-, large intact nucleus (high N/C ratio),
    often off-centre. The nucleus displaces cytoplasm, so CK is dimmer over it and
    reads as a crescent or cap beside it (as in ctc-dev's CTCs).

    ``ck_dim`` (None: with probability :data:`CK_DIM_FRACTION`): a CK-dim CTC instead."""
    if ck_dim is None:
        ck_dim = bool(rng.random() < CK_DIM_FRACTION)
    if ck_dim:
        return draw_ck_dim_ctc(canvas, rng, cy, cx, label)
    r = _lognormal(rng, 5.6, 0.25, 4.0, 12.0)
    shape = Shape.random(rng, r, rng.uniform(0.03, 0.12), 1.6)
    nr = max(r * rng.uniform(0.6, 0.88), 3.0)
    off = rng.uniform(0.2, 1.0) * max(r - 0.5 * nr, 0.0)
    a = rng.uniform(0, 2 * np.pi)
    ndy, ndx = off * np.sin(a) / canvas.px_um, off * np.cos(a) / canvas.px_um
    ck = _lognormal(rng, 1.5, 0.6, 0.15, 6.0)
    dim = rng.uniform(0.15, 0.7) if rng.random() < 0.5 else rng.uniform(0.7, 1.1)
    cell = draw_cytoplasm(canvas, rng, CK, cy, cx, shape, ck, "fill", (ndy, ndx, nr / canvas.px_um, dim))
    if rng.random() < 0.5:  # bright CK aggregates near the membrane are common in intact CTCs too
        for _ in range(int(rng.integers(1, 4))):
            a2 = rng.uniform(0, 2 * np.pi)
            d2 = r * rng.uniform(0.3, 0.85) / canvas.px_um
            draw_debris(canvas, rng, cy + d2 * np.sin(a2), cx + d2 * np.cos(a2), rng.uniform(0.5, 1.3),
                        (0.0, ck * rng.uniform(0.5, 2.0), 0.0, 0.0), sharp=False)
    nuc = draw_nucleus(canvas, rng, cy + ndy, cx + ndx, nr, "round", _lognormal(rng, 1.0, 0.35, 0.3, 3.0))
    _label(canvas, cy, cx, r, cell, nuc, label, ndy, ndx, nr)
    return r


def draw_ck_dim_ctc(canvas: Canvas, rng: np.random.Generator, cy: float, cx: float, label: int = 0) -> float:
    """A CK-dim (EMT-like) CTC: a large, intact nucleus almost filling the cell, wrapped
    in a thin (0.4-1 µm), faint CK rim a few times the background noise -- dimmer than a
    typical CTC by 3-10x, and often dimmer than a leukocyte's nonspecific CK; CD45-."""
    r = _lognormal(rng, 6.2, 0.2, 4.5, 12.0)
    shape = Shape.random(rng, r, rng.uniform(0.02, 0.08), 1.35)
    nr = max(r * rng.uniform(0.72, 0.92), 3.5)
    off = rng.uniform(0.0, 0.5) * max(r - nr, 0.0)
    a = rng.uniform(0, 2 * np.pi)
    ndy, ndx = off * np.sin(a) / canvas.px_um, off * np.cos(a) / canvas.px_um
    ck = _lognormal(rng, 0.3, 0.45, 0.08, 0.9)
    cell = draw_cytoplasm(canvas, rng, CK, cy, cx, shape, ck, "rim", (ndy, ndx, nr / canvas.px_um,
                                                                       rng.uniform(0.1, 0.5)))
    nuc = draw_nucleus(canvas, rng, cy + ndy, cx + ndx, nr, "round", _lognormal(rng, 1.0, 0.3, 0.35, 3.0))
    _label(canvas, cy, cx, r, cell, nuc, label, ndy, ndx, nr)
    return r


def draw_apoptotic(canvas: Canvas, rng: np.random.Generator, cy: float, cx: float, label: int = 0) -> float:
    """An apoptotic CTC: a rounded, shrunken CK+ body whose collapsed cytoskeleton covers
    the nucleus (CK and DNA overlap), sometimes with CK aggregates and blebs; CD45-;
    nucleus degrading (lumpy chromatin), fragmented (karyorrhexis) or condensed (pyknosis)."""
    r = _lognormal(rng, 5.2, 0.2, 3.5, 9.0)
    shape = Shape.random(rng, r, rng.uniform(0.02, 0.06), 1.2)
    ck = _lognormal(rng, 1.5, 0.6, 0.15, 6.0)
    style = "granular" if rng.random() < 0.3 else "fill"
    nr = r * rng.uniform(0.55, 0.85)
    off = rng.uniform(0, 0.2) * r
    a = rng.uniform(0, 2 * np.pi)
    ndy, ndx = off * np.sin(a) / canvas.px_um, off * np.cos(a) / canvas.px_um
    over = rng.uniform(0.9, 1.4)  # a rounded cell is thickest over its nucleus
    cell = draw_cytoplasm(canvas, rng, CK, cy, cx, shape, ck, style, (ndy, ndx, nr / canvas.px_um, over))
    nstyle = str(rng.choice(["lumpy", "fragmented", "condensed"], p=[0.45, 0.35, 0.2]))
    nuc = draw_nucleus(canvas, rng, cy + ndy, cx + ndx, nr, nstyle, _lognormal(rng, 0.8, 0.4, 0.15, 2.0))
    _label(canvas, cy, cx, r, cell, nuc, label, ndy, ndx, nr)
    return r


def _label(canvas: Canvas, cy: float, cx: float, r: float, cell, nuc, label: int, ndy, ndx, nr) -> None:
    """Paint the ground-truth label (cell body union nucleus) for fields."""
    if not label or canvas.labels is None:
        return
    win = window(canvas, cy, cx, 1.3 * (r * 1.7) / canvas.px_um + 1)
    if win is None:
        return
    body = np.sqrt(win.dy**2 + win.dx**2) * canvas.px_um < r * 0.9
    nucl = np.sqrt((win.dy - ndy) ** 2 + (win.dx - ndx) ** 2) * canvas.px_um < nr
    paint_label(canvas, win, body | nucl, label)


def draw_foci(canvas: Canvas, rng: np.random.Generator, cy: float, cx: float) -> float:
    """CK+ foci: one to three anuclear CK fragments (no DAPI, no CD45)."""
    n = int(rng.integers(1, 4))
    ck = _lognormal(rng, 1.5, 0.6, 0.2, 6.0)
    rmax = 0.0
    for i in range(n):
        r = rng.uniform(1.0, 3.5) if i == 0 else rng.uniform(0.5, 1.5)
        d = 0.0 if i == 0 else rng.uniform(1.5, 4.0) / canvas.px_um
        a = rng.uniform(0, 2 * np.pi)
        draw_debris(canvas, rng, cy + d * np.sin(a), cx + d * np.cos(a), r, (0.0, ck * rng.uniform(0.5, 1.2), 0.0, 0.0),
                    sharp=False)
        rmax = max(rmax, r + d * canvas.px_um)
    return rmax


def draw_artifact(canvas: Canvas, rng: np.random.Generator, cy: float, cx: float) -> float:
    """A fluorescent artifact: bright in several channels, always in the empty AF channel."""
    kind = rng.choice(["crystal", "autofluorescent", "cell_like"], p=[0.4, 0.35, 0.25])
    af = _lognormal(rng, 2.0, 0.6, 0.4, 10.0)

    def maybe(p: float, med: float) -> float:
        return _lognormal(rng, med, 0.6, 0.1, 8.0) if rng.random() < p else 0.0

    if kind == "crystal":
        r = rng.uniform(1.0, 5.0)
        draw_debris(canvas, rng, cy, cx, r, (maybe(0.6, 1.5), maybe(0.7, 1.5), af, maybe(0.5, 1.5)), sharp=True)
        return r
    if kind == "autofluorescent":
        r = rng.uniform(1.5, 6.0)
        draw_debris(canvas, rng, cy, cx, r, (maybe(0.8, 1.5), maybe(0.9, 1.5), af, maybe(0.6, 1.0)), sharp=False)
        return r
    # an unidentifiable CK+ object that also glows in AF, next to a nucleus
    r = draw_ctc(canvas, rng, cy, cx) if rng.random() < 0.5 else rng.uniform(2.0, 5.0)
    draw_debris(canvas, rng, cy, cx, min(r, 5.0) * 0.8, (0.0, maybe(1.0, 1.0), af, 0.0), sharp=False)
    return r


CENTRE_DRAWERS = {
    "ctc": draw_ctc,
    "apoptotic_ctc": draw_apoptotic,
    "ck_debris": draw_foci,
    "artifact": draw_artifact,
}


# --- backgrounds and events ---------------------------------------------------------------


def place_leukocytes(
    canvas: Canvas,
    rng: np.random.Generator,
    coverage: float,
    keep_out: list[tuple[float, float, float]],
    touch: float = 0.85,
    first_label: int = 0,
) -> int:
    """Scatter leukocytes at an area ``coverage`` (0..~0.6), avoiding ``keep_out`` discs
    (y, x, radius in px). Returns the number placed."""
    h, w = canvas.shape
    px = canvas.px_um
    area_um2 = h * w * px * px
    n_target = int(coverage * area_um2 / (np.pi * 4.5**2))
    placed: list[tuple[float, float, float]] = list(keep_out)
    n = 0
    for _ in range(n_target * 6):
        if n >= n_target:
            break
        y, x = rng.uniform(-3 / px, h + 3 / px), rng.uniform(-3 / px, w + 3 / px)
        r = 4.6 / px
        if any((y - py) ** 2 + (x - px_) ** 2 < (touch * (r + pr)) ** 2 for py, px_, pr in placed):
            continue
        ck = _lognormal(rng, 0.3, 0.7, 0.02, 2.0) if rng.random() < 0.03 else 0.0
        label = first_label + n if first_label else 0
        if rng.random() < 0.06:  # CD45-dim cell / naked nucleus
            draw_nucleus(canvas, rng, y, x, rng.uniform(2.8, 3.8), "round", _lognormal(rng, 1.0, 0.25, 0.4, 2.5))
            if label and canvas.labels is not None:
                win = window(canvas, y, x, r)
                if win is not None:
                    paint_label(canvas, win, np.sqrt(win.dy**2 + win.dx**2) < 3.3 / px, label)
        else:
            draw_leukocyte(canvas, rng, y, x, label, ck)
        placed.append((y, x, r))
        n += 1
    return n


#: How instruments frame an event, and how often the training data shows each:
#: ``gallery`` (30-90 µm around the event, up to 160 px, as ctc-dev), ``wide`` (a 160-400 px
#: thumbnail with the event at the centre among 5-40 neighbouring leukocytes, some touching)
#: and ``tight`` (high magnification, the cell fills the frame: 1.15-2x its diameter, up to
#: 400 px, no or partial neighbours).
FRAMINGS: dict[str, float] = {"gallery": 0.5, "wide": 0.28, "tight": 0.22}


def sample_framing(rng: np.random.Generator) -> str:
    names = list(FRAMINGS)
    p = np.array([FRAMINGS[n] for n in names], float)
    return str(rng.choice(names, p=p / p.sum()))


@dataclass
class EventSpec:
    """How one synthetic event is drawn (everything random unless given)."""

    category: str
    px_um: float
    size_px: int
    coverage: float
    defocus: float
    optics: Optics
    info: dict = field(default_factory=dict)
    framing: str = "gallery"

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        category: str | None = None,
        px_um: float | None = None,
        size_px: int | None = None,
        framing: str = "gallery",
    ) -> EventSpec:
        category = category or sample_category(rng)
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}")
        if framing == "tight":
            # the cell (~9-25 µm) fills a 1.15-2x frame of 120-400 px: 0.05-0.3 µm/px. The
            # canvas is drawn large; make_event crops it around the cell once drawn
            fov_um = float(rng.uniform(1.15, 2.0)) * float(rng.uniform(10.0, 22.0))
            if px_um is None:
                px_um = float(np.clip(fov_um / rng.uniform(120, 400), 0.04, 0.35))
            size_px = size_px or int(np.clip(round(52.0 / px_um), 48, 1100))
            coverage = float(rng.uniform(0.0, 0.4))
        elif framing == "wide":
            if px_um is None:
                px_um = float(np.exp(rng.uniform(np.log(0.3), np.log(1.0))))
            if size_px is None:
                size_px = int(rng.integers(160, 401))
            # 5-40 leukocytes of ~64 µm² in the frame
            area = (size_px * px_um) ** 2
            coverage = float(np.clip(rng.uniform(5, 40) * np.pi * 4.5**2 / area, 0.05, 0.8))
        else:
            if px_um is None:
                # CellSearch-like 10x (0.645 µm/px) is common; otherwise anything from 100x to 20x.
                if rng.random() < 0.35:
                    px_um = float(rng.uniform(0.55, 0.75))
                else:
                    px_um = float(np.exp(rng.uniform(np.log(0.1), np.log(1.0))))
            if size_px is None:
                fov_um = rng.uniform(30.0, 90.0)
                size_px = int(np.clip(round(fov_um / px_um), 32, 160))
            coverage = float(rng.uniform(0.1, 0.75))
        defocus = float(rng.uniform(1.8, 3.2)) if rng.random() < 0.08 else 1.0
        return cls(category, px_um, size_px, coverage, defocus, Optics.random(rng, defocus), framing=framing)


def make_event(
    rng: np.random.Generator,
    category: str | None = None,
    px_um: float | None = None,
    size_px: int | None = None,
    spec: EventSpec | None = None,
    framing: str = "gallery",
    ck_dim: bool | None = None,
) -> tuple[np.ndarray, dict]:
    """One event thumbnail: the event of ``category`` at the centre among leukocytes,
    framed as ``framing`` (see :data:`FRAMINGS`). ``ck_dim`` (CTCs only; None: at
    :data:`CK_DIM_FRACTION`) forces a CK-dim CTC or a typical one.

    Returns ``(image, info)``: image float32 (4, H, W) in channel order DAPI, CK, AF,
    CD45 with the value range of the chosen rendering (8-bit stretch, raw counts, or
    0..1 floats); info has ``category``, ``is_ctc``, ``px_um``, ``y``, ``x`` (centre, px),
    ``rendering``, ``framing``, ``size_px``.
    """
    spec = spec or EventSpec.random(rng, category, px_um, size_px, framing)
    s = spec.size_px
    canvas = Canvas.empty(s, s, spec.px_um)
    jitter = rng.normal(0, 0.8 / spec.px_um, 2)
    cy, cx = (s - 1) / 2 + jitter[0], (s - 1) / 2 + jitter[1]
    if spec.category == "leukocyte":
        ck = _lognormal(rng, 0.8, 0.7, 0.1, 4.0) if rng.random() < 0.6 else 0.0
        r = draw_leukocyte(canvas, rng, cy, cx, 0, ck)
    elif spec.category == "ctc":
        r = draw_ctc(canvas, rng, cy, cx, 0, ck_dim)
    else:
        r = CENTRE_DRAWERS[spec.category](canvas, rng, cy, cx)
    if spec.framing == "tight":  # the frame: 1.15-2x the drawn cell's diameter
        n = int(np.clip(round(rng.uniform(1.15, 2.0) * 2 * max(r, 4.5) / spec.px_um), 48, min(400, s)))
        o = (s - n) // 2
        canvas = Canvas(np.ascontiguousarray(canvas.data[:, o:o + n, o:o + n]), spec.px_um)
        s, cy, cx = n, cy - o, cx - o
    # neighbours may touch the event (ctc-dev has several such), but rarely cover it
    keep = [(cy, cx, r / spec.px_um * rng.uniform(0.75, 1.1))]
    if spec.category == "ck_debris" and rng.random() < 0.5:  # foci stuck to a leukocyte
        a = rng.uniform(0, 2 * np.pi)
        d = (r + 4.0) / spec.px_um
        draw_leukocyte(canvas, rng, cy + d * np.sin(a), cx + d * np.cos(a))
        keep.append((cy + d * np.sin(a), cx + d * np.cos(a), 4.5 / spec.px_um))
    place_leukocytes(canvas, rng, spec.coverage, keep)
    if rng.random() < 0.25:  # stray CK specks away from the event
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.uniform(0, s, 2)
            if (y - cy) ** 2 + (x - cx) ** 2 > (r / spec.px_um + 6 / spec.px_um) ** 2:
                speck = (0.0, _lognormal(rng, 0.8, 0.5, 0.1, 3), 0.0, 0.0)
                draw_debris(canvas, rng, y, x, rng.uniform(0.5, 1.5), speck, False)
    image = render(canvas.data, spec.px_um, spec.optics, rng)
    info = {
        "category": spec.category,
        "is_ctc": int(spec.category == "ctc"),
        "px_um": spec.px_um,
        "y": float(cy),
        "x": float(cx),
        "rendering": spec.optics.rendering,
        "framing": spec.framing,
        "size_px": s,
    }
    return image, info
