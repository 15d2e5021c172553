"""A weights bundle's files (``NAME.pt`` and its ``NAME.json`` metadata), checked without torch.

The web process promotes versions but never loads a model (torch stays in the workers), so what
can be told about a bundle from its bytes lives here: is it a file ``torch.save`` wrote, is its
metadata a JSON object, does the file match the sha256 its metadata records, and was it made for
the preprocessing this code does (the contract its metadata records).
:func:`classifier.weights.load_bundle` starts with the same checks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from classifier.contract import PreprocessContract, code_contract
from classifier.errors import ContractError


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_metadata(weights: Path) -> dict:
    """The bundle's metadata, ``{}`` when it has none; :class:`ContractError` when unreadable."""
    meta_file = metadata_path(weights)
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ContractError(f"{meta_file.name}: the weights' metadata is unreadable ({err})") from err
    if not isinstance(meta, dict):
        raise ContractError(f"{meta_file.name}: the weights' metadata is not a JSON object")
    return meta


def check_file(path: Path, contract: PreprocessContract | None = None) -> dict:
    """Raise :class:`FileNotFoundError` or :class:`ContractError` unless ``path`` looks like a bundle
    (torch's zip archive or legacy pickle, matching its metadata's sha256, made for ``contract``:
    by default the preprocessing this code does); return the metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    meta = read_metadata(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # torch's zip archive, or a legacy pickle
        raise ContractError(f"{path.name}: not a weights bundle (not a file torch.save wrote)")
    if meta.get("sha256") and meta["sha256"] != sha256(path):
        raise ContractError(f"{path.name}: sha256 does not match its metadata (file changed or corrupt)")
    if "preprocessing" in meta:
        check_contract(path, meta["preprocessing"], contract)
    return meta


def check_contract(path: Path, stored: object, contract: PreprocessContract | None = None) -> None:
    """Raise :class:`ContractError` unless the contract ``stored`` in a bundle's metadata is
    ``contract`` (default: the one this code implements; weights made for other preprocessing
    would misread every event)."""
    if not isinstance(stored, dict):
        raise ContractError(f"{Path(path).name}: the metadata's preprocessing contract is not a JSON object")
    try:
        PreprocessContract.from_dict(stored).check_against(contract or code_contract())
    except ContractError as err:
        raise ContractError(f"{Path(path).name}: {err}") from err
