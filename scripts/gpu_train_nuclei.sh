#!/usr/bin/env bash
# Train the nucleus network on a borrowed GPU and score it against the shipped one, in one run
# that fits one 10-minute device command: stages of at most 240 + 120 s (each saves every
# SAVE_EVERY steps, so a stage stopped at its limit keeps recent weights), then 10 scorings run
# side by side on the machine's cores (one takes about 35 s on a busy 2-core machine). CPU sessions cannot train a larger
# network from scratch (stage 1 of the shipped one took 77 min on one core); this is the prepared
# script for a session that is lent a GPU. See docs/model-card.md, "Segmentation", for the recipe.
#
# The data travel with the command (nuclei-train and nuclei-dev are CC0, 30 MB):
#   echo /.carry/ >> .git/info/exclude
#   mkdir -p .carry && cp -r ../shared/data/nuclei-train ../shared/data/nuclei-dev .carry/
#   device run, carry [".carry"], command: bash scripts/gpu_train_nuclei.sh
# On a CPU it runs too (DEVICE=cpu STAGE1_STEPS=2 STAGE2_STEPS=1 ...: a check of the script).
#
# Everything lands in $OUT: stage1.pt, nuclei-unet.pt (+ .json records), eval-*.json (pooled and
# per-image detection F1 for the shipped and the new weights), log.txt.
set -euo pipefail

PY=${PY:-python3}
OUT=${OUT:-/tmp/gpu-train-nuclei}
DATA=${DATA:-.carry/nuclei-train}
DEV=${DEV:-.carry/nuclei-dev}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(($(nproc) - 2))}
WIDTHS=${WIDTHS:-24,48,96,128}
BATCH=${BATCH:-64}
STAGE1_STEPS=${STAGE1_STEPS:-3000}
STAGE2_STEPS=${STAGE2_STEPS:-1500}
STAGE1_LIMIT_S=${STAGE1_LIMIT_S:-240}  # each stage saves its weights as it goes; a stage cut short
STAGE2_LIMIT_S=${STAGE2_LIMIT_S:-120}  # by its limit leaves the last saved ones, and the log says so
SAVE_EVERY=${SAVE_EVERY:-100}
RENDERS=${RENDERS:-dimbright offset16 chromocentres nucleoli}
SHIPPED=classifier/weights/nuclei-unet.pt

mkdir -p "$OUT"
rm -f "$OUT"/stage1.pt "$OUT"/nuclei-unet.pt "$OUT"/eval-*  # an earlier run's weights must not pass for this one's
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
for d in "$DATA/images" "$DATA/masks" "$DEV/images" "$DEV/masks"; do
  [[ -d $d ]] || { echo "missing $d: copy nuclei-train and nuclei-dev into .carry/ (see the header)"; exit 2; }
done
echo "== $(date -u +%FT%TZ) device=$DEVICE workers=$WORKERS widths=$WIDTHS batch=$BATCH steps=$STAGE1_STEPS+$STAGE2_STEPS"
"$PY" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, \
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

stage() {  # name, limit in seconds, train-nuclei arguments...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc=0
  timeout "$limit" "$PY" -m classifier train-nuclei --data "$DATA" --device "$DEVICE" --workers "$WORKERS" \
    --threads 4 --log-every 250 --save-every "$SAVE_EVERY" "$@" || rc=$?
  if [[ $rc == 124 ]]; then
    echo "== $name: stopped at its ${limit}s limit; the weights are the last ones it saved"
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
  "$PY" -m classifier segment-eval --data "$DEV" --weights "$weights" --quiet "$@" > "$OUT/eval-$label.json" \
    2> "$OUT/eval-$label.err"
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
for label in "${labels[@]}"; do
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); p = r['pooled']; \
print(f\"{sys.argv[2]:<28} detection F1 {p['f1']:.4f}  IoU-0.5 F1 {p.get('f1_iou50', float('nan')):.4f}\")" \
    "$OUT/eval-$label.json" "$label" || echo "$label: no score (see eval-$label.err)"
done
echo "== done $(date -u +%FT%TZ)"
