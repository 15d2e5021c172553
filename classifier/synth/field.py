"""Synthetic field images (a patch of a slide/chip) with ground-truth cell labels."""

from __future__ import annotations

import numpy as np

from classifier.synth.cells import Canvas
from classifier.synth.events import draw_apoptotic, draw_ctc, draw_leukocyte
from classifier.synth.optics import Optics, render


def make_field(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_cells: int,
    pixel_size_um: float = 0.65,
    ctc_fraction: float = 0.05,
    apoptotic_fraction: float = 0.0,
    rendering: str | None = "raw16",
    touching: float = 0.85,
) -> tuple[np.ndarray, np.ndarray]:
    """A field of ``n_cells`` cells: leukocytes plus a ``ctc_fraction`` of CTCs and an
    ``apoptotic_fraction`` of apoptotic CTCs (whose fragmented nuclei are several DAPI
    bodies: leave it 0 to test nucleus counting), packed as densely as ``n_cells`` asks.

    Returns ``(image, labels)``: image float32 (4, H, W), channels DAPI, CK, AF, CD45;
    labels int32 (H, W), 0 = background, 1..n = one label per cell (nucleus and body).
    ``touching`` is the minimum centre distance as a fraction of the summed radii
    (< 1 lets cells touch, as in dense leukocyte layers). If the field is too small
    for ``n_cells``, fewer are placed: count the labels, not the request.
    """
    canvas = Canvas.empty(height, width, pixel_size_um, with_labels=True)
    margin = 5.0 / pixel_size_um  # whole cells only: the count is then exact
    taken: list[tuple[float, float, float]] = []
    n_ctc = round(n_cells * ctc_fraction)
    n_tumour = n_ctc + round(n_cells * apoptotic_fraction)
    label = 1
    for _ in range(n_cells * 50):
        if label > n_cells:
            break
        tumour = label <= n_tumour
        r_px = (8.0 if tumour else 4.6) / pixel_size_um
        m = margin * (1.7 if tumour else 1.0)
        if height <= 2 * m or width <= 2 * m:
            break
        y, x = rng.uniform(m, height - m), rng.uniform(m, width - m)
        if any((y - py) ** 2 + (x - px) ** 2 < (touching * (r_px + pr)) ** 2 for py, px, pr in taken):
            continue
        if tumour:
            if label <= n_ctc:  # CK-dim CTCs are left to the event generator: fields keep their draws
                draw_ctc(canvas, rng, y, x, label, ck_dim=False)
            else:
                draw_apoptotic(canvas, rng, y, x, label)
        else:
            draw_leukocyte(canvas, rng, y, x, label)
        taken.append((y, x, r_px))
        label += 1
    optics = Optics.random(rng)
    if rendering is not None:
        optics.rendering = rendering
    optics.illumination = min(optics.illumination, 0.2)
    image = render(canvas.data, pixel_size_um, optics, rng)
    assert canvas.labels is not None
    return image.astype(np.float32), canvas.labels.astype(np.int32)
