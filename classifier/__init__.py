"""CTC classifier: image input, segmentation, preprocessing, the dual-branch model,
training, evaluation, explanation and synthetic data. Pure Python + PyTorch; no Django.

The one call the product makes::

    from classifier.engine import Classifier
    clf = Classifier.load()
    result = clf.analyse_files(paths, ["DAPI", "CK", "CD45"], kind="events")
"""

__all__ = ["__version__"]
__version__ = "1.0.0"
