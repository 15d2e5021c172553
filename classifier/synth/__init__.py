"""Physically motivated synthetic fluorescence data (events and fields).

The shipped weights are trained on this generator alone, so it is where the model's
real-world quality is decided. How each parameter was calibrated against the real
``ctc-dev`` events is written down in ``docs/model-card.md``.

Public entry points:

- :func:`make_event` -- one gallery thumbnail with the event of a given category at
  its centre among leukocytes, as an instrument would export it.
- :func:`make_field` -- a large field of cells with its ground-truth label image,
  used to test segmentation.
- :func:`write_folder` -- a labelled event folder (``labels.csv`` + TIFFs), the same
  layout as ``ctc-dev``.
"""

from classifier.synth.events import EventSpec, make_event, sample_category
from classifier.synth.field import make_field
from classifier.synth.folder import instrument_array, write_folder

CHANNELS: tuple[str, ...] = ("DAPI", "CK", "AF", "CD45")

__all__ = ["CHANNELS", "EventSpec", "instrument_array", "make_event", "make_field", "sample_category", "write_folder"]
