"""Errors the classifier raises for bad input.

`InputError` carries a message meant for the person who uploaded the file: the
worker stores it verbatim on the upload, the API returns it in a 400.
"""


class InputError(ValueError):
    """The input cannot be analysed; ``str(err)`` says why in plain words."""


class ContractError(RuntimeError):
    """Weights and the preprocessing contract they were trained with do not match."""
