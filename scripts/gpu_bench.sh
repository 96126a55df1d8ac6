#!/usr/bin/env bash
# Throughput suite for one H100/H200, finishing in under 8 minutes: prints a table and writes the JSON.
#
#   scripts/gpu_bench.sh                      # base b32 + large b16, bf16, eager/compiled, full/frozen/cached,
#                                             # with/without per-page grouping, loader, e2e, beam-3 evaluation
#   scripts/gpu_bench.sh --dry-run            # the same code on the tiny model and small shapes (any CPU)
#   OUT=results.json scripts/gpu_bench.sh     # where the JSON goes (default bench-gpu.json)
#
# Models are the published architectures with random weights: nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The suite skips what would not end inside --time-budget (420 s); the timeout is a last resort.
exec timeout 475 "$PY" -m florence_tune bench --suite gpu --output "${OUT:-bench-gpu.json}" "$@"
