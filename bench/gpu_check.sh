#!/usr/bin/env bash
# GPU check (issue 7): on a machine with an NVIDIA GPU, run the classifier benchmark on CUDA
# (bf16 autocast, batches 1024/4096/16384: events/s), a cartridge's fields through the worker's
# field-by-field path (issue 15.5: fields/s and events/s) and the tests that touch CUDA; well
# under 5 minutes.
#
#   bash bench/gpu_check.sh            # from the repository root
#
# Python: $PYTHON if set; else a venv .venv-gpu made with --system-site-packages from the
# machine's python3, so it sees the CUDA build of PyTorch already installed there (the
# device machines have no network; `pip install torch==2.13.0` would give the CPU build).
# The classifier and this benchmark need only numpy, scipy, scikit-image, tifffile, tqdm and
# torch -- no Django, PostgreSQL or Redis. Wheels placed in .whl/ are installed offline first.
# Results: the JSON lines go to stdout, var/bench/gpu/ and, when set, $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .venv-gpu/bin/python ]; then
    python3 -m venv --system-site-packages .venv-gpu
  fi
  PYTHON=.venv-gpu/bin/python
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps .whl/*.whl
fi
"$PYTHON" - <<'PY'
import importlib, sys
import torch
missing = [m for m in ("numpy", "scipy", "skimage", "tifffile", "tqdm", "pytest") if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"available {torch.cuda.is_available()}", flush=True)
if missing:
    sys.exit(f"missing packages: {missing} (carry wheels in .whl/)")
if not torch.cuda.is_available():
    sys.exit("torch.cuda.is_available() is False: no usable NVIDIA GPU here")
print(torch.cuda.get_device_name(0), flush=True)
PY

outdir=var/bench/gpu
mkdir -p "$outdir"
export PYTHONUNBUFFERED=1

echo "== bench.classifier --device cuda (bf16 autocast)"
"$PYTHON" -m bench.classifier --device cuda --rounds 5 | tee "$outdir/classifier-cuda-bf16.log"
tail -n1 "$outdir/classifier-cuda-bf16.log" > "$outdir/classifier-cuda-bf16.json"

echo "== bench.classifier --device cuda --precision fp16 --batches 16384"
"$PYTHON" -m bench.classifier --device cuda --precision fp16 --batches 16384 --rounds 3 \
  | tee "$outdir/classifier-cuda-fp16.log"
tail -n1 "$outdir/classifier-cuda-fp16.log" > "$outdir/classifier-cuda-fp16.json"

echo "== cartridge fields on CUDA (issue 15.5): fields/s and events/s, field by field as the worker runs them"
# patients.cartridge needs no Django: the same per-field streaming the worker uses on a zip of
# 4 x 1036 x 1384 uint16 fields (CellSearch frames), 25 cells each; CTC_GPU_FIELDS fields (default 24).
"$PYTHON" - <<'PY' | tee "$outdir/cartridge-cuda.log"
import io, json, os, tempfile, time, zipfile
from pathlib import Path
import numpy as np, tifffile, torch
from classifier.engine import Classifier
from classifier.synth.field import make_field
from patients.cartridge import analyse_fields, field_sources

n = int(os.environ.get("CTC_GPU_FIELDS", "24"))
blobs = []
for k in range(min(n, 8)):
    img, _ = make_field(np.random.default_rng(100 + k), 1036, 1384, 25, pixel_size_um=0.65)
    arr = np.clip(img, 0, None); arr = arr * 65535.0 if arr.max() <= 1.0 else arr
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.clip(arr, 0, 65535).astype(np.uint16), photometric="minisblack", metadata={"axes": "CYX"})
    blobs.append(buf.getvalue())
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "cartridge.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"field_{i + 1:03d}.tif", blobs[i % len(blobs)])
    clf = Classifier.load(device="cuda")
    chans = ["DAPI", "CK", "AF", "CD45"]
    warm = field_sources([path], ["cartridge.zip"], 4)[:2]
    analyse_fields(clf, warm, chans, 0.65)  # CUDA context, kernels, cudnn autotune
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = analyse_fields(clf, field_sources([path], ["cartridge.zip"], 4), chans, 0.65)
    torch.cuda.synchronize(); s = time.perf_counter() - t
out = {"benchmark": "gpu_cartridge", "device": torch.cuda.get_device_name(0), "fields": n, "events": len(res.events),
       "seconds": round(s, 2), "fields_per_s": round(n / s, 2), "events_per_s": round(len(res.events) / s, 1),
       "stages_s": {k: v for k, v in res.timings.items() if isinstance(v, float)},
       "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20)}
print(json.dumps(out))
PY
tail -n1 "$outdir/cartridge-cuda.log" > "$outdir/cartridge-cuda.json"

echo "== tests that touch CUDA"
# --noconftest: the suite's root conftest needs Django/PostgreSQL; the CUDA tests need neither.
"$PYTHON" -m pytest --noconftest -q -p no:cacheprovider -o addopts="" tests/bench/test_cuda.py \
  | tee "$outdir/test_cuda.log"

if [ -n "${OUT:-}" ]; then cp "$outdir"/*.json "$outdir"/*.log "$OUT"/ 2>/dev/null || true; fi
echo "gpu_check: done in $(( $(date +%s) - start ))s"
