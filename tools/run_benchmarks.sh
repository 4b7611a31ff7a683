#!/usr/bin/env bash
# Run every CPU benchmark with JSON output into OUT_DIR (default: bench-results/), for docs/benchmarks.md.
# The ONNX graphs the features bench exports go to a temporary cache, not engines/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
VIST=".venv/bin/vist-rt"
[ -x "$VIST" ] || VIST="vist-rt"
PY=".venv/bin/python"
[ -x "$PY" ] || PY="python3"
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
"$VIST" bench temporal --json "$out/temporal.json"
"$VIST" bench temporal --backend onnxruntime --json "$out/temporal-onnxruntime.json"
"$VIST" bench temporal --backend native --json "$out/temporal-native.json"
"$VIST" bench temporal --config docs/bench/overhead.toml --json "$out/temporal-overhead.json"
# the ViT on the CPU: every path this CPU runs natively (issue 15), then ViT-S/B/L at blocks 1, 6 and all on the
# thread a live run gives it here (one on 2 cores), then live at 30 Hz on a ViT-S checkpoint (random seeded weights)
"$VIST" bench features --engines "$cache" --json "$out/features-cpu-paths.json"
for bb in vits14 vitb14 vitl14; do
  for blk in 0 5 -1; do
    "$VIST" bench features --backbone "$bb" --block "$blk" --threads 1 --paths onnxruntime:fp32,onnxruntime:int8 \
      --frames 20 --warmup 3 --engines "$cache" --json "$out/blocks-$bb-$blk.json"
  done
done
"$PY" tools/timing_checkpoint.py "$cache/vits14.safetensors"
live=("$VIST" bench pipeline --checkpoint "$cache/vits14.safetensors" --engines "$cache")
"${live[@]}" --json "$out/pipeline-vits14-auto.json"
"${live[@]}" --threads 2 --json "$out/pipeline-vits14-auto-threads2.json"
"${live[@]}" --precision fp32 --json "$out/pipeline-vits14-fp32.json"
"$VIST" bench pipeline --json "$out/pipeline.json"
"$VIST" bench pipeline --record --json "$out/pipeline-record.json"
# the 30-minute soak: SOAK_MINUTES=0 skips it
if [ "${SOAK_MINUTES:-30}" != 0 ]; then
  "$VIST" bench soak --minutes "${SOAK_MINUTES:-30}" --json "$out/soak.json"
fi
# the pinned runs need CPUs 0 and 1 (skipped, saying so, where this process may not use both)
pin=0
python3 -c 'import os, sys; sys.exit(not {0, 1} <= os.sched_getaffinity(0))' 2>/dev/null && pin=1
if [ "$pin" = 1 ]; then
  "$VIST" bench pipeline --tick-cpu 0 --io-cpu 1 --json "$out/pipeline-pinned.json"
else
  echo "skipped the pinned pipeline runs: CPUs 0 and 1 are not both available (vist-rt doctor lists them)"
fi
# --low-latency needs write access to /dev/cpu_dma_latency (root): skipped, saying so, without it
if [ -w /dev/cpu_dma_latency ]; then
  "$VIST" bench pipeline --low-latency --json "$out/pipeline-lowlatency.json"
  "$VIST" bench pipeline --low-latency --temporal native --json "$out/pipeline-lowlatency-native.json"
  if [ "$pin" = 1 ]; then
    "$VIST" bench pipeline --low-latency --tick-cpu 0 --io-cpu 1 --json "$out/pipeline-lowlatency-pinned.json"
  fi
else
  echo "skipped the --low-latency pipeline runs: no write access to /dev/cpu_dma_latency (vist-rt doctor says why)"
fi
# garbage-collector pauses during a burst of malformed control requests, heap frozen (every run) or not
"$PY" tools/gc_pauses.py --rounds 3 --requests 30000 --json "$out/gc-pauses.json"
echo "figures in $out/"
