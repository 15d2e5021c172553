#!/usr/bin/env bash
# The three benchmarks in a row, each JSON line kept in var/bench/results/ (name-date.json).
#   bash bench/run_all.sh [extra args for bench.pipeline]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=var/bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for b in classifier pipeline dashboard; do
  args=()
  [ "$b" = pipeline ] && args=(--repeats 3 "$@")
  echo "== bench.$b ${args[*]:-}" >&2
  "$PY" -m "bench.$b" "${args[@]}" | tee "$out/$b-$stamp.log" | tail -n1 > "$out/$b-$stamp.json"
  cat "$out/$b-$stamp.json"
done
