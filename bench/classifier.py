"""Throughput of the shipped dual-branch classifier against a ResNet-18-shaped CNN.

    python -m bench.classifier                      # CPU, batches 64 and 256, threads = cores
    python -m bench.classifier --quick              # a few seconds (tests)
    python -m bench.classifier --device cuda        # GPU: mixed precision, large batches

The model is ``classifier.engine.Classifier.load()``'s torch module exactly as the worker
runs it (BatchNorm folded, channels-last on CPU). When no shipped weights exist yet the same
architecture is built with random weights (``weights`` says which): speed does not depend
on the values. Crops are real: synthetic events (``classifier.synth.make_event``) through
the production preprocessing (``classifier.preprocess.prepare_image``) at the model's input
size, so the texture attributes (``classifier.features.compute``, which the model's second
branch needs) are timed on real masks too and reported separately. The reference is a
ResNet-18 (BasicBlock x [2, 2, 2, 2], widths 64..512, 7x7/2 stem and max-pool; BatchNorm
folded, channels-last) with the same input channels, on the same crops.

Timing: threads = cores (``torch.set_num_threads``), inference mode, warm-up, then rounds
that alternate the two models (so machine noise hits both alike); each round times a block
of batches lasting at least ``--min-block-s``; events/s is the median over rounds (``best``
the fastest round). FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs
per multiply-add); peak memory is the growth of the process's peak RSS (VmHWM, reset via
/proc/self/clear_refs) over the first (cold) pass of the largest batch -- weights already
loaded, inputs already made -- plus the CUDA allocator's peak on GPU.

The last line of stdout is one JSON object:

- ``benchmark``: ``"classifier"``; ``device``; ``threads``; ``quick``; ``precision``
  (``fp32`` on CPU; ``bf16``/``fp16`` autocast on CUDA); ``weights`` (version, or
  ``"random-init"`` when no shipped weights exist); ``input``: ``[C, S, S]``; ``n_features``;
- ``model`` and ``resnet18``: each ``{"params", "mflops_per_event", "peak_rss_mb",
  "events_per_s": {"<batch>": median}, "best_events_per_s": {"<batch>": best}}`` (+
  ``cuda_peak_mb`` on GPU);
- ``ratio``: ``{"<batch>": model events/s / resnet18 events/s}`` (medians);
- ``model_with_explanations_events_per_s``: the worker's real call (``explain_batch``: forward
  plus one backward pass for Grad-CAM and attribute effects) at the largest batch;
- ``features``: ``{"batch", "ms_per_batch", "us_per_event", "events_per_s"}`` for
  ``classifier.features.compute`` (CPU, numpy) -- needed before the model can run;
- ``model_plus_features_events_per_s``: 1 / (1/model + 1/features) at the largest batch;
- ``one_thread``: the same comparison on one thread at the largest batch (CPU with more than
  one thread; else null): ``{"model": {"median", "best"}, "resnet18": {"median", "best"},
  "ratio"}`` -- the figures for one worker process per core, as the worker runs;
- ``targets``: ``{"events_per_s": 2000 (CPU) or 50000 (CUDA), "ratio_vs_resnet18": 5}``;
  ``meets_target``: ``{"events_per_s": bool, "ratio": bool}`` judged on the median at the
  largest batch;
- ``accuracy``: the shipped weights' recorded metrics (from their metadata), or null;
- ``machine``: host, cpu, cores, python, date, loadavg_1m (+ ``gpu`` on CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, log, machine, median

CPU_TARGET = 2000.0
CUDA_TARGET = 50000.0
RATIO_TARGET = 5.0


# --- ResNet-18 (torchvision does not install beside torch 2.13 here: written out) ---------------


def resnet18(in_chans: int, num_classes: int = 2):  # noqa: ANN201 - nn.Module
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):  # noqa: ANN001, ANN202
            idt = x if self.down is None else self.down(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + idt)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for i, cout in enumerate((64, 128, 256, 512)):
                stride = 1 if i == 0 else 2
                layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))

    return ResNet18()


def fold_bn(module):  # noqa: ANN001, ANN201
    """Fold every BatchNorm that follows a conv into it (eval), as the shipped model does."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module.eval()
    pairs = [("stem", 0, 1)]
    for blk in module.layers:
        blk.conv1 = fuse_conv_bn_eval(blk.conv1, blk.bn1)
        blk.bn1 = nn.Identity()
        blk.conv2 = fuse_conv_bn_eval(blk.conv2, blk.bn2)
        blk.bn2 = nn.Identity()
        if blk.down is not None:
            blk.down[0] = fuse_conv_bn_eval(blk.down[0], blk.down[1])
            blk.down[1] = nn.Identity()
    for name, ci, bi in pairs:
        seq = getattr(module, name)
        seq[ci] = fuse_conv_bn_eval(seq[ci], seq[bi])
        seq[bi] = nn.Identity()
    return module


# --- the shipped model ----------------------------------------------------------------------------


def load_shipped(device: str) -> tuple[Any, Any, str, dict | None]:
    """(torch module as the worker runs it, preprocessing contract, weights label, metrics)."""
    import torch

    from classifier.engine import Classifier
    from classifier.errors import ContractError

    try:
        clf = Classifier.load(device=device)
        meta = dict(clf.metadata)
        metrics = meta.get("metrics") or meta.get("evaluation") or None
        return clf.model, clf.contract, str(meta.get("version", "unknown")), metrics
    except (FileNotFoundError, OSError, ContractError) as err:
        log(f"shipped weights unusable ({err.__class__.__name__}: {err}); timing the architecture with random weights")
    from classifier import features
    from classifier.model import ctc_dual, fuse_batchnorm
    from classifier.weights import SHIPPED_ROTATIONS, default_contract

    _ = features
    contract = default_contract()
    model = fuse_batchnorm(ctc_dual(len(contract.feature_names), in_chans=len(contract.channels),
                                    rotations=SHIPPED_ROTATIONS).eval())
    model = model.to(device)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model, contract, "random-init", None


def make_crops(contract: Any, n: int, seed: int = 3) -> Any:
    """``n`` real prepared events (crops, masks) from synthetic thumbnails."""
    import numpy as np

    from classifier.preprocess import Prepared, prepare_image
    from classifier.synth import events as synth_events

    rng = np.random.default_rng(seed)
    channels = ["DAPI", "CK", "AF", "CD45"]  # make_event's channel order
    parts = []
    unique = min(n, 128)
    for i in range(unique):
        img, info = synth_events.make_event(rng)
        parts.append(prepare_image(img, channels, contract, info["px_um"], source=f"e{i}"))
    prep = Prepared.concat(parts, contract)
    reps = -(-n // len(prep))
    return Prepared(
        np.concatenate([prep.crops] * reps)[:n], np.concatenate([prep.nucleus] * reps)[:n],
        np.concatenate([prep.cell] * reps)[:n], np.concatenate([prep.x] * reps)[:n],
        np.concatenate([prep.y] * reps)[:n], np.concatenate([prep.px_um] * reps)[:n], prep.scale_source * reps,
    )


# --- measurement ---------------------------------------------------------------------------------


def _reset_peak() -> float:
    """Reset the kernel's peak-RSS mark; return the current RSS (MiB)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    from bench.common import rss_mb

    return rss_mb()


def flops_per_event(fn, *inputs) -> float:  # noqa: ANN001
    """MFLOPs per event of ``fn(*inputs)`` (2 FLOPs per multiply-add, torch's convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn(*inputs)
    return counter.get_total_flops() / inputs[0].shape[0] / 1e6


class Runner:
    """One model's forward pass on pre-made inputs, per batch size."""

    def __init__(self, name: str, fn, inputs: dict[int, tuple], device: str) -> None:  # noqa: ANN001
        self.name, self.fn, self.inputs, self.device = name, fn, inputs, device
        self.per_batch: dict[int, float] = {}

    def __call__(self, batch: int) -> None:
        self.fn(*self.inputs[batch])

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def block(self, batch: int, min_s: float) -> float:
        """Events/s over a block of at least ``min_s`` seconds."""
        reps = max(1, int(min_s / max(self.per_batch.get(batch, min_s), 1e-6)))
        self.sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            self(batch)
        self.sync()
        dt = time.perf_counter() - t0
        self.per_batch[batch] = dt / reps
        return reps * batch / dt


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true", help="one batch of 32, short blocks (tests)")
    ap.add_argument("--batches", help="comma-separated batch sizes (default 64,256; CUDA 1024,4096,16384)")
    ap.add_argument("--rounds", type=int, help="timed rounds per model and batch (default 7; quick 2)")
    ap.add_argument("--min-block-s", type=float, help="seconds per timed block (default 0.5; quick 0.05)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: cores)")
    ap.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default=None,
                    help="CUDA autocast dtype (default bf16); CPU always fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (CUDA)")
    args = ap.parse_args(argv)

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(max(1, args.threads))
    quick = args.quick
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    elif cuda:
        batches = [1024] if quick else [1024, 4096, 16384]
    else:
        batches = [32] if quick else [64, 256]
    rounds = args.rounds or (2 if quick else 7)
    min_s = args.min_block_s or (0.05 if quick else 0.5)
    precision = "fp32" if not cuda else (args.precision or "bf16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    model, contract, weights, metrics = load_shipped("cuda" if cuda else "cpu")
    model.eval()
    s, c = contract.crop_px, len(contract.channels)
    nf = len(contract.feature_names)
    big = max(batches)
    log(f"model {weights}: input {c}x{s}x{s}, {nf} attributes; preparing {min(big, 128)} real crops ...")
    prep = make_crops(contract, max(big, 256 if not quick else 32))
    from classifier import features


    dev = torch.device("cuda" if cuda else "cpu")
    ref = fold_bn(resnet18(c)).to(dev)
    fmt = torch.channels_last
    if not cuda:
        ref = ref.to(memory_format=fmt)
    else:
        model = model.to(memory_format=fmt)
        ref = ref.to(memory_format=fmt)
    if args.compile:
        model = torch.compile(model)
        ref = torch.compile(ref)

    feat_batch = 256 if not quick else 32
    feats_all, _ = features.compute(prep.crops[:feat_batch], prep.nucleus[:feat_batch], prep.cell[:feat_batch],
                                    contract.um_per_px)
    feats_all = np.resize(feats_all, (big, nf)).astype(np.float32)
    inputs_m, inputs_r = {}, {}
    for b in batches:
        x = torch.from_numpy(np.ascontiguousarray(prep.crops[:b])).to(dev).contiguous(memory_format=fmt)
        f = torch.from_numpy(feats_all[:b]).to(dev)
        inputs_m[b] = (x, f)
        inputs_r[b] = (x,)

    def fwd_model(x, f):  # noqa: ANN001, ANN202
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                    enabled=amp_dtype is not None):
            return model(x, f)["ctc_logit"]

    def fwd_ref(x):  # noqa: ANN001, ANN202
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                    enabled=amp_dtype is not None):
            return ref(x)

    runners = [Runner("model", fwd_model, inputs_m, device), Runner("resnet18", fwd_ref, inputs_r, device)]
    results: dict[str, dict] = {}
    for r in runners:
        # FLOPs at batch 1 is exact per event (nothing mixes samples at inference).
        x1 = inputs_m[batches[0]][0][:8]
        f1 = inputs_m[batches[0]][1][:8]
        mflops = flops_per_event(fwd_model, x1, f1) if r.name == "model" else flops_per_event(fwd_ref, x1)
        params = sum(p.numel() for p in (model if r.name == "model" else ref).parameters())
        # cold: the peak RSS growth of the first big batch (fresh allocator caches), then warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        base = _reset_peak()
        r(big)
        r.sync()
        peak = max(0.0, _status_mb("VmHWM") - base)
        for b in batches:
            for _ in range(1 if quick else 3):
                r(b)
        r.sync()
        results[r.name] = {"params": int(params), "mflops_per_event": round(mflops, 2), "peak_rss_mb": round(peak, 1),
                           "events_per_s": {}, "best_events_per_s": {}}
        if cuda:
            results[r.name]["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        log(f"{r.name}: {params:,} params, {mflops:.2f} MFLOPs/event, peak +{peak:.1f} MiB RSS")

    samples: dict[tuple[str, int], list[float]] = {(r.name, b): [] for r in runners for b in batches}
    for b in batches:
        for r in runners:  # calibrate block length
            r.block(b, min_s / 4)
        for i in range(rounds):
            for r in runners if i % 2 == 0 else reversed(runners):
                samples[(r.name, b)].append(r.block(b, min_s))
        for r in runners:
            xs = samples[(r.name, b)]
            results[r.name]["events_per_s"][str(b)] = round(median(xs), 1)
            results[r.name]["best_events_per_s"][str(b)] = round(max(xs), 1)
        log(f"batch {b}: model {results['model']['events_per_s'][str(b)]:,.0f} ev/s, "
            f"resnet18 {results['resnet18']['events_per_s'][str(b)]:,.0f} ev/s")
    ratio = {str(b): round(results["model"]["events_per_s"][str(b)] / results["resnet18"]["events_per_s"][str(b)], 2)
             for b in batches}

    # The worker's real call: forward + one backward (Grad-CAM, attribute effects).
    from classifier.explain import explain_batch

    xb, fb = inputs_m[big]
    explain_batch(model, xb, fb, with_explanations=True, autocast=cuda)
    ex_samples = []
    for _ in range(max(2, rounds // 2)):
        reps = 1 if not quick else 1
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            explain_batch(model, xb, fb, with_explanations=True, autocast=cuda)
        if cuda:
            torch.cuda.synchronize()
        ex_samples.append(reps * big / (time.perf_counter() - t0))
    explain_eps = median(ex_samples)
    log(f"with explanations (forward + backward) at batch {big}: {explain_eps:,.0f} ev/s")

    # Texture attributes (numpy, CPU): what the texture branch needs before the model runs.
    fx = []
    crops, nuc, cell = prep.crops[:feat_batch], prep.nucleus[:feat_batch], prep.cell[:feat_batch]
    for _ in range(rounds if not quick else 2):
        t0 = time.perf_counter()
        features.compute(crops, nuc, cell, contract.um_per_px)
        fx.append(time.perf_counter() - t0)
    f_s = median(fx)
    feat = {"batch": feat_batch, "ms_per_batch": round(f_s * 1000, 1), "us_per_event": round(f_s / feat_batch * 1e6, 1),
            "events_per_s": round(feat_batch / f_s, 1)}
    log(f"features: {feat['us_per_event']} µs/event ({feat['events_per_s']:,.0f} ev/s)")
    m_eps = results["model"]["events_per_s"][str(big)]
    combined = 1.0 / (1.0 / m_eps + 1.0 / feat["events_per_s"])

    # CPU: the same model on one thread (a worker process per core is the other way to use the cores;
    # on a busy machine two OpenMP threads can lose to one).
    one_thread = None
    if not cuda and torch.get_num_threads() > 1:
        torch.set_num_threads(1)
        one: dict[str, list[float]] = {r.name: [] for r in runners}
        for r in runners:
            r.block(big, min_s / 4)
        for i in range(rounds):
            for r in runners if i % 2 == 0 else reversed(runners):
                one[r.name].append(r.block(big, min_s))
        one_thread = {name: {"median": round(median(xs), 1), "best": round(max(xs), 1)} for name, xs in one.items()}
        one_thread["ratio"] = round(one_thread["model"]["median"] / one_thread["resnet18"]["median"], 2)
        torch.set_num_threads(max(1, args.threads))
        log(f"1 thread at batch {big}: model {one_thread['model']['median']:,.0f} ev/s "
            f"(best {one_thread['model']['best']:,.0f}), resnet18 {one_thread['resnet18']['median']:,.0f} ev/s, "
            f"ratio {one_thread['ratio']}")

    target = CUDA_TARGET if cuda else CPU_TARGET
    info = machine()
    if cuda:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["torch"] = torch.__version__
    else:
        info["torch"] = torch.__version__
    out = {
        "benchmark": "classifier",
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "quick": quick,
        "precision": precision,
        "weights": weights,
        "input": [c, s, s],
        "n_features": nf,
        "model": results["model"],
        "resnet18": results["resnet18"],
        "ratio": ratio,
        "model_with_explanations_events_per_s": round(explain_eps, 1),
        "features": feat,
        "model_plus_features_events_per_s": round(combined, 1),
        "one_thread": one_thread,
        "targets": {"events_per_s": target, "ratio_vs_resnet18": RATIO_TARGET},
        "meets_target": {"events_per_s": m_eps >= target, "ratio": ratio[str(big)] >= RATIO_TARGET},
        "accuracy": metrics,
        "machine": info,
    }
    emit(out)
    return out


if __name__ == "__main__":
    main()
