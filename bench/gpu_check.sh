#!/usr/bin/env bash
# GPU check (issue 7): on a machine with an NVIDIA GPU, run the classifier benchmark on CUDA
# (bf16 autocast, batches 1024/4096/16384) and the tests that touch CUDA; well under 5 minutes.
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

echo "== tests that touch CUDA"
# --noconftest: the suite's root conftest needs Django/PostgreSQL; the CUDA tests need neither.
"$PYTHON" -m pytest --noconftest -q -p no:cacheprovider -o addopts="" tests/bench/test_cuda.py \
  | tee "$outdir/test_cuda.log"

if [ -n "${OUT:-}" ]; then cp "$outdir"/*.json "$outdir"/*.log "$OUT"/ 2>/dev/null || true; fi
echo "gpu_check: done in $(( $(date +%s) - start ))s"
