"""The dual-branch model: shapes, fusion weights, inference-time fusion of batch norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.model import ModelConfig, ctc_dual, ctc_spatial, ctc_texture, fuse_batchnorm
from classifier.results import CATEGORIES


def test_forward_shapes_and_gate():
    torch.manual_seed(0)
    m = ctc_dual(20).eval()
    x, f = torch.randn(5, 4, 48, 48), torch.randn(5, 20)
    out = m(x, f)
    assert out["ctc_logit"].shape == (5,)
    assert out["category_logits"].shape == (5, len(CATEGORIES))
    assert out["embedding"].shape == (5, m.cfg.embed_dim) and m.cfg.embed_dim <= 16
    assert torch.allclose(out["gate"].sum(1), torch.ones(5))
    # the gate is per sample: different inputs get different weights
    assert out["gate"][:, 0].std() > 0


def test_single_branch_variants_report_their_branch():
    x, f = torch.randn(3, 4, 48, 48), torch.randn(3, 20)
    assert torch.all(ctc_spatial(20).eval()(x, f)["gate"][:, 0] == 1)
    assert torch.all(ctc_texture(20).eval()(x, f)["gate"][:, 1] == 1)


def test_each_event_is_independent_of_its_batch():
    torch.manual_seed(0)
    m = ctc_dual(20).eval()
    x, f = torch.randn(6, 4, 48, 48), torch.randn(6, 20)
    with torch.no_grad():
        full = m(x, f)["ctc_logit"]
        one = torch.cat([m(x[i:i + 1], f[i:i + 1])["ctc_logit"] for i in range(6)])
    assert torch.allclose(full, one, atol=1e-5)


def test_batchnorm_fusion_keeps_outputs():
    torch.manual_seed(0)
    m = ctc_dual(20)
    m.train()
    for _ in range(3):  # give batch norm non-trivial running statistics
        m(torch.randn(16, 4, 48, 48) * 2 + 1, torch.randn(16, 20))
    m.eval()
    x, f = torch.randn(4, 4, 48, 48), torch.randn(4, 20)
    with torch.no_grad():
        ref = m(x, f)["ctc_logit"]
        fused = fuse_batchnorm(m)(x, f)["ctc_logit"]
    assert torch.allclose(ref, fused, atol=1e-4)


def test_four_rotations_make_the_call_independent_of_how_the_slide_lay():
    """With ``rotations`` 4 a quarter-turned event gets the same logit, category and embedding;
    the one-view model (the same weights) does not, which is what the setting is for."""
    torch.manual_seed(0)
    one = ctc_dual(20).eval()
    four = ctc_dual(20, rotations=4).eval()
    four.load_state_dict(one.state_dict())
    x, f = torch.randn(5, 4, 48, 48), torch.randn(5, 20)
    turned = torch.rot90(x, 1, dims=(2, 3))
    with torch.no_grad():
        a, b = four(x, f), four(turned, f)
        assert not torch.allclose(one(x, f)["ctc_logit"], one(turned, f)["ctc_logit"], atol=1e-4)
    for key in ("ctc_logit", "category_logits", "embedding"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert len(a["cam"]) == 4 and a["cam"][0].shape[0] == 5  # every view's activations, for Grad-CAM


def test_rotations_default_to_one_for_weights_saved_before_the_setting():
    cfg = ctc_dual(20).cfg.to_dict()
    cfg.pop("rotations")
    assert ModelConfig.from_dict(cfg).rotations == 1
    with pytest.raises(ValueError, match="rotations"):
        ModelConfig(n_features=20, rotations=2)


def test_grad_cam_of_a_four_view_model_turns_with_the_event():
    from classifier.explain import explain_batch

    torch.manual_seed(1)
    m = ctc_dual(20, rotations=4).eval()
    x, f = torch.randn(3, 4, 48, 48), torch.randn(3, 20)
    a = explain_batch(m, x, f)
    b = explain_batch(m, torch.rot90(x, 1, dims=(2, 3)), f)
    assert a.heatmap is not None and b.heatmap is not None
    assert a.heatmap.shape == (3, 48, 48)
    assert np.allclose(np.rot90(a.heatmap, 1, axes=(1, 2)), b.heatmap, atol=1e-5)
    assert np.allclose(a.probability, b.probability, atol=1e-6)


def test_the_shipped_weights_run_four_views_as_the_benchmarks_stand_ins_do():
    from classifier.weights import DEFAULT_WEIGHTS, SHIPPED_ROTATIONS, load_bundle

    model, _, meta = load_bundle(DEFAULT_WEIGHTS)
    assert model.cfg.rotations == SHIPPED_ROTATIONS == meta["model"]["rotations"]
    assert meta["recalibration"]["rotations"] == SHIPPED_ROTATIONS


def test_an_unknown_model_setting_is_a_contract_error(tmp_path):
    from classifier.errors import ContractError
    from classifier.weights import default_contract, load_bundle, save_bundle

    contract = default_contract()
    path = tmp_path / "w.pt"
    save_bundle(ctc_dual(len(contract.feature_names)), contract, path, {})
    blob = torch.load(path, weights_only=True)
    blob["config"]["rotations"] = 2
    torch.save(blob, path)
    path.with_suffix(".json").unlink()  # its sha256 no longer matches; the configuration is the point here
    with pytest.raises(ContractError, match="model configuration"):
        load_bundle(path)


@pytest.mark.parametrize("content", [b"not weights at all\n", b"PK\x03\x04truncated", "torch-other", "meta-list"])
def test_a_file_that_is_not_a_weights_bundle_is_a_contract_error(tmp_path, content):
    """A text file, a truncated archive or a torch file holding something else, given as weights:
    one clear error (the CLI prints it in one line), not a KeyError or a zip reader's traceback."""
    from classifier.errors import ContractError
    from classifier.weights import default_contract, load_bundle, save_bundle

    path = tmp_path / "w.pt"
    if content == "torch-other":
        torch.save({"weights": torch.zeros(3)}, path)
    elif content == "meta-list":  # a bundle whose metadata file is JSON but not an object
        save_bundle(ctc_dual(len(default_contract().feature_names)), default_contract(), path, {})
        path.with_suffix(".json").write_text("[]")
    else:
        path.write_bytes(content)
    with pytest.raises(ContractError, match="not a weights bundle|not a JSON object"):
        load_bundle(path)


def test_a_bundles_recorded_contract_is_checked_without_torch(tmp_path):
    """What promotion reads (classifier.bundle_file): the contract in the metadata against the code's.
    A list that differs is told by its counts and the names only one side has, in a line a page can
    show; metadata that records no contract leaves the check to the load; one that is not an object,
    or misses keys, is a clear error."""
    import json

    from classifier.bundle_file import check_file, metadata_path
    from classifier.errors import ContractError
    from classifier.weights import default_contract, save_bundle

    contract = default_contract()
    path = tmp_path / "w.pt"
    save_bundle(ctc_dual(len(contract.feature_names)), contract, path, {})
    assert check_file(path)["preprocessing"] == contract.to_dict()
    meta = json.loads(metadata_path(path).read_text())

    def with_preprocessing(value):  # noqa: ANN001, ANN202
        m = dict(meta)
        if value is None:
            m.pop("preprocessing")
        else:
            m["preprocessing"] = value
        metadata_path(path).write_text(json.dumps(m))

    names = list(contract.feature_names)
    with_preprocessing({**contract.to_dict(), "feature_names": names[:-1] + ["lbp_99"]})
    with pytest.raises(ContractError) as err:
        check_file(path)
    message = str(err.value)
    assert f"feature_names: weights {len(names)} vs code {len(names)}" in message
    assert "only in the weights: lbp_99" in message and f"only in the code: {names[-1]}" in message
    assert len(message) < 300
    with_preprocessing(None)
    check_file(path)  # nothing recorded: the worker's load checks the blob's own contract
    with_preprocessing("48 px crops")
    with pytest.raises(ContractError, match="not a JSON object"):
        check_file(path)
    with_preprocessing({"crop_px": 48})
    with pytest.raises(ContractError, match="unreadable preprocessing contract"):
        check_file(path)
