"""Tests that touch CUDA (skipped without a GPU). Self-contained -- no Django, no shared
fixtures -- so that ``bench/gpu_check.sh`` can run them with ``--noconftest`` on a GPU
machine that has PyTorch but not the web stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ["DAPI", "CK", "AF", "CD45"]


def _events(n: int, seed: int = 4) -> list[np.ndarray]:
    from classifier.synth.events import make_event

    rng = np.random.default_rng(seed)
    return [make_event(rng, px_um=0.65)[0] for _ in range(n)]


def test_gpu_calls_match_cpu() -> None:
    """The worker's path on CUDA (autocast, one backward for explanations) gives the CPU's calls."""
    from classifier.engine import Classifier

    images = _events(48)
    cpu = Classifier.load(device="cpu").analyse_arrays(images, CHANNELS, pixel_size_um=0.65)
    gpu = Classifier.load(device="cuda").analyse_arrays(images, CHANNELS, pixel_size_um=0.65)
    assert gpu.device.startswith("cuda")
    p_cpu = np.array([e.ctc_probability for e in cpu.events])
    p_gpu = np.array([e.ctc_probability for e in gpu.events])
    assert np.abs(p_cpu - p_gpu).max() < 0.02
    near = np.abs(p_cpu - 0.5) < 0.02  # calls at the threshold may flip under reduced precision
    assert [e.call for e, m in zip(cpu.events, near, strict=True) if not m] == \
        [e.call for e, m in zip(gpu.events, near, strict=True) if not m]
    assert all(e.heatmap is not None and e.heatmap.shape == (48, 48) for e in gpu.events)


def test_large_batch_bf16_forward() -> None:
    """A 16k-event batch in bf16 fits and agrees with fp32 on the CTC logit."""
    from classifier.engine import Classifier

    clf = Classifier.load(device="cuda")
    model = clf.model.to(memory_format=torch.channels_last)
    n, nf = 16384, len(clf.feature_names)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(n, 4, 48, 48, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    # attributes at the training mean (standardised to 0): a valid input for the texture branch
    f = model.texture.mean.expand(n, nf).clone() if model.texture is not None else torch.zeros(n, nf, device="cuda")
    with torch.inference_mode():
        ref = model(x, f)["ctc_logit"].float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x, f)["ctc_logit"].float()
    assert torch.isfinite(low).all()
    assert (torch.sigmoid(ref) - torch.sigmoid(low)).abs().max().item() < 0.05


def test_bench_classifier_cuda_quick() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.classifier", "--device", "cuda", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["device"] == "cuda" and out["precision"] == "bf16"
    assert out["model"]["cuda_peak_mb"] > 0 and all(v > 0 for v in out["model"]["events_per_s"].values())
