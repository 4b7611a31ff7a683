#!/usr/bin/env bash
# Run every CPU benchmark with JSON output into OUT_DIR (default: bench-results/), for docs/benchmarks.md.
# The ONNX graphs the features bench exports go to a temporary cache, not engines/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
VIST=".venv/bin/vist-rt"
[ -x "$VIST" ] || VIST="vist-rt"
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
"$VIST" bench temporal --json "$out/temporal.json"
"$VIST" bench temporal --backend onnxruntime --json "$out/temporal-onnxruntime.json"
"$VIST" bench temporal --backend native --json "$out/temporal-native.json"
"$VIST" bench temporal --config docs/bench/overhead.toml --json "$out/temporal-overhead.json"
"$VIST" bench features --engines "$cache" --json "$out/features.json"
"$VIST" bench pipeline --json "$out/pipeline.json"
echo "figures in $out/"
