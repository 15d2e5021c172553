#!/usr/bin/env bash
# Train the nucleus network on a borrowed GPU and score it against the shipped one, in one run
# that fits one 10-minute device command: stages of at most 200 + 100 s of training
# (`train-nuclei --time-limit`: each stops after the step that reaches its limit, saves, and records
# that step, so `--stop-after` reproduces it), then 10 scorings run side by side on the machine's
# cores. CPU sessions cannot train a larger network from scratch (stage 1 of the shipped one took
# 77 min on one core); this is the prepared script for a session that is lent a GPU. See
# docs/model-card.md, "Segmentation", for the recipe and the first run's results (thirteenth
# session of 2026-12-04: 205 + 100 s on an H200, about 2,200 + 1,100 steps).
#
# The data travel with the command (nuclei-train and nuclei-dev are CC0, 30 MB):
#   echo /.carry/ >> .git/info/exclude
#   mkdir -p .carry && cp -r ../shared/data/nuclei-train ../shared/data/nuclei-dev .carry/
#   device run, carry [".carry"], command: bash scripts/gpu_train_nuclei.sh
# On a CPU it runs too (DEVICE=cpu STAGE1_STEPS=2 STAGE2_STEPS=1 ...: a check of the script).
#
# What comes back in $OUT is at most 8 files (the device tool's limit; the first run's 23 files left
# the weights behind): stage1.pt, nuclei-unet.pt, their .json records, scores.json (pooled and
# per-image detection F1 of the shipped and the new weights, by set) and log.txt. Work files stay in
# $WORK.
set -euo pipefail

PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-train-nuclei}
WORK=${WORK:-/tmp/gpu-train-nuclei-work}
DATA=${DATA:-.carry/nuclei-train}
DEV=${DEV:-.carry/nuclei-dev}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(($(nproc) - 2))}
WIDTHS=${WIDTHS:-24,48,96,128}
BATCH=${BATCH:-64}
PRECISION=${PRECISION:-fp32}  # bf16: autocast forward passes (tensor cores; on a CPU with AMX 2.6x faster)
STAGE1_STEPS=${STAGE1_STEPS:-2000}  # what fits the limits below on an H200 (the first run asked 3,000 + 1,500
STAGE2_STEPS=${STAGE2_STEPS:-1000}  # and was stopped at ~2,200 + ~1,100, its learning rate not yet annealed)
STAGE1_LIMIT_S=${STAGE1_LIMIT_S:-200}  # whole seconds of training per stage (loading and the final validation
STAGE2_LIMIT_S=${STAGE2_LIMIT_S:-100}  # of 20 images come on top: ~15 s and ~30 s on an H200 machine)
SAVE_EVERY=${SAVE_EVERY:-100}
RENDERS=${RENDERS:-dimbright offset16 chromocentres nucleoli}
SHIPPED=classifier/weights/nuclei-unet.pt

mkdir -p "$OUT" "$WORK"
rm -f "$OUT"/stage1.* "$OUT"/nuclei-unet.* "$OUT"/scores.json "$WORK"/eval-*  # an earlier run's must not pass for this one's
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
for d in "$DATA/images" "$DATA/masks" "$DEV/images" "$DEV/masks"; do
  [[ -d $d ]] || { echo "missing $d: copy nuclei-train and nuclei-dev into .carry/ (see the header)"; exit 2; }
done
echo "== $(date -u +%FT%TZ) device=$DEVICE workers=$WORKERS widths=$WIDTHS batch=$BATCH precision=$PRECISION steps=$STAGE1_STEPS+$STAGE2_STEPS"
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

stage() {  # name, limit in seconds, train-nuclei arguments...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc=0
  # --time-limit stops the run at a recorded step; timeout is only the backstop (loading, validation)
  timeout -k 10 $((limit + 60)) "$PY" -m classifier train-nuclei --data "$DATA" --device "$DEVICE" --workers "$WORKERS" \
    --threads 4 --log-every 250 --save-every "$SAVE_EVERY" --time-limit "$limit" --precision "$PRECISION" "$@" || rc=$?
  if [[ $rc == 124 ]]; then
    echo "== $name: killed by the backstop; the weights are the last ones it saved, their step unrecorded"
  elif [[ $rc != 0 ]]; then
    echo "== $name failed (rc $rc)"; exit "$rc"
  fi
  echo "== $name: $((SECONDS - t0)) s"
}

# Stage 1 and 2 as the shipped recipe (docs/model-card.md), at a larger batch and width.
stage "stage 1" "$STAGE1_LIMIT_S" --out "$OUT/stage1.pt" --steps "$STAGE1_STEPS" --batch "$BATCH" \
  --lr 3e-3 --widths "$WIDTHS"
stage "stage 2" "$STAGE2_LIMIT_S" --init "$OUT/stage1.pt" --out "$OUT/nuclei-unet.pt" --steps "$STAGE2_STEPS" \
  --batch "$BATCH" --lr 1e-3 --contact-weight 4 --dim-prob 0.75 --dim-share 0.45 --dim-min 0.03

[[ -f $OUT/nuclei-unet.pt ]] || { echo "== stage 2 saved no weights: nothing to score"; exit 3; }

score() {  # label, weights, extra segment-eval arguments...
  local label=$1 weights=$2
  shift 2
  "$PY" -m classifier segment-eval --data "$DEV" --weights "$weights" --quiet "$@" > "$WORK/eval-$label.json" \
    2> "$WORK/eval-$label.err"
}
# the scorings run on the CPU, side by side, each on its share of the cores
labels=() pids=()
export OMP_NUM_THREADS=$(( $(nproc) / 10 > 0 ? $(nproc) / 10 : 1 ))
for w in shipped new; do
  weights=$SHIPPED
  [[ $w == new ]] && weights=$OUT/nuclei-unet.pt
  score "$w" "$weights" & labels+=("$w") pids+=($!)
  for r in $RENDERS; do score "$w-$r" "$weights" --render "$r" & labels+=("$w-$r") pids+=($!); done
done
# the scorings only: a bare `wait` would also wait for the `tee` above, which never ends
for p in "${pids[@]}"; do wait "$p" || true; done
# one file back: each set's pooled and per-image scores, or the end of its error output
"$PY" - "$WORK" "$OUT/scores.json" "${labels[@]}" <<'PYEND'
import json, sys
from pathlib import Path
work, out, labels = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
scores = {}
for label in labels:
    try:
        r = json.loads((work / f"eval-{label}.json").read_text())
        p = r["pooled"]
        line = f"{label:<28} detection F1 {p['f1']:.4f}  IoU-0.5 F1 {p.get('f1_iou50', float('nan')):.4f}"
        scores[label] = {"pooled": p, "images": r.get("images")}
        print(line)
    except Exception:  # one set's failure must not lose the others' scores
        err_file = work / f"eval-{label}.err"
        err = err_file.read_text(errors="replace")[-2000:] if err_file.exists() else ""
        scores[label] = {"error": err}
        print(f"{label}: no score: {err.strip().splitlines()[-1] if err.strip() else 'no output'}")
out.write_text(json.dumps(scores, indent=1) + "\n")
PYEND
echo "== done $(date -u +%FT%TZ)"
