"""Errors the classifier raises for bad input.

`InputError` carries a message meant for the person who uploaded the file: the
worker stores it verbatim on the upload, the API returns it in a 400.
"""


class InputError(ValueError):
    """The input cannot be analysed; ``str(err)`` says why in plain words."""


class ChannelCountError(InputError):
    """A file has another number of channels (planes) than channel names were given.

    ``planes`` is how many names would fit the file (its colours, an alpha aside), or None
    when unknown. The reader (`classifier.io.read_inputs`) sets ``every_file`` when no image
    of the upload fits the names (then the names, not the files, are what to correct),
    ``same_planes`` when they all have the file's number of planes, and ``files`` to their number.
    """

    def __init__(self, message: str, planes: int | None = None) -> None:
        super().__init__(message)
        self.planes = planes
        self.every_file = False
        self.same_planes = False
        self.files = 0


class ContractError(RuntimeError):
    """Weights and the preprocessing contract they were trained with do not match."""
