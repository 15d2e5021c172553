"""The dual-branch model: shapes, fusion weights, inference-time fusion of batch norm."""

from __future__ import annotations

import torch

from classifier.model import ctc_dual, ctc_spatial, ctc_texture, fuse_batchnorm
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
