"""Shipped weights and the one-call loader.

A weights bundle is two files side by side:

- ``NAME.pt``: ``{"config", "contract", "state_dict"}`` (torch, loadable with
  ``weights_only=True``);
- ``NAME.json``: metadata -- version, preprocessing contract, model config, training
  data and the exact command, metrics, and the ``.pt`` file's sha256.

Loading checks the sha256 and that the bundle's preprocessing contract is the one this
code implements (:class:`classifier.errors.ContractError` otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from classifier.bundle_file import check_file, metadata_path, sha256
from classifier.contract import PreprocessContract, code_contract
from classifier.errors import ContractError
from classifier.model import DualBranchCTC, ModelConfig, attach_lab_head, build, has_lab_head

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = WEIGHTS_DIR / "ctc-dual.pt"
MODEL_NAME = "ctc-dual"
MODEL_VERSION = "1.0.0"
#: the shipped weights' ``ModelConfig.rotations`` (their config holds it; stand-ins that time the
#: architecture without them, in the benchmarks, use this so that they cost what the shipped model costs)
SHIPPED_ROTATIONS = 4


__all__ = ["DEFAULT_WEIGHTS", "MODEL_NAME", "MODEL_VERSION", "SHIPPED_ROTATIONS", "WEIGHTS_DIR", "default_contract",
           "load_bundle", "metadata_path", "save_bundle", "sha256"]


def save_bundle(model: DualBranchCTC, contract: PreprocessContract, path: Path, metadata: dict) -> dict:
    """Write ``path`` (.pt) and its .json metadata; return the metadata written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "contract": contract.to_dict(), "state_dict": state}, path)
    digest = sha256(path)
    meta = dict(metadata)
    meta.update({
        "name": meta.get("name", MODEL_NAME),
        "version": f"{meta.get('base_version', MODEL_VERSION)}+{digest[:8]}",
        "sha256": digest,
        "weights_file": path.name,
        "size_bytes": path.stat().st_size,
        "preprocessing": contract.to_dict(),
        "model": model.cfg.to_dict(),
    })
    metadata_path(path).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return meta


def load_bundle(path: Path | None = None, map_location: str | torch.device = "cpu",
                contract: PreprocessContract | None = None) -> tuple[DualBranchCTC, PreprocessContract, dict]:
    """Load a weights bundle; raise ContractError when it does not fit this code."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    meta = check_file(path, contract)
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle: not a bundle this code wrote
        raise ContractError(f"{path.name}: not a weights bundle (a torch file that cannot be read: truncated, "
                            f"or holding objects other than tensors; {type(err).__name__})") from err
    if not isinstance(blob, dict) or not {"config", "contract", "state_dict"} <= set(blob) or not isinstance(
            blob["state_dict"], dict):
        raise ContractError(f"{path.name}: not a weights bundle (a torch file without config, contract and "
                            f"state_dict)")
    try:
        stored = PreprocessContract.from_dict(blob["contract"])
    except (KeyError, TypeError, ValueError) as err:
        raise ContractError(f"{path.name}: preprocessing contract not understood by this code: {err}") from err
    stored.check_against(contract or default_contract())
    try:
        cfg = ModelConfig.from_dict(blob["config"])
    except (KeyError, TypeError, ValueError) as err:  # a setting this code does not know (newer weights)
        raise ContractError(f"{path.name}: model configuration not understood by this code: {err}") from err
    model = build(cfg)
    if has_lab_head(blob["state_dict"]):  # a lab-fitted head (classifier.finetune); shipped weights have none
        attach_lab_head(model)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise ContractError(f"{path.name}: weights do not fit the model architecture: {err}") from err
    model.eval()
    if not meta:
        meta = {"version": f"{MODEL_VERSION}+{sha256(path)[:8]}", "preprocessing": stored.to_dict()}
    return model, stored, meta


def default_contract() -> PreprocessContract:
    """The contract this code implements, with the attribute names it computes."""
    return code_contract()
