"""Nucleus segmentation for field images: a small U-Net, its scale inference and its metrics.

- :mod:`classifier.nuclei.net`: the network (fg probability + distance-to-boundary / radius).
- :mod:`classifier.nuclei.prep`: robust input normalisation and resampling, shared by training
  and inference (what the network sees must be the same in both).
- :mod:`classifier.nuclei.infer`: :func:`segment_nuclei` (scale inference, tiling, instances).
- :mod:`classifier.nuclei.metrics`: detection F1 (centroid in a true nucleus) and F1 at IoU 0.5.
- :mod:`classifier.nuclei.emulate`: renders of real images as other instruments would give them.
- :mod:`classifier.nuclei.train`: ``python -m classifier train-nuclei``.

No Django here (``classifier`` never imports it).
"""
