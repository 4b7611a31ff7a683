#!/usr/bin/env bash
# Run every CPU benchmark with JSON output into OUT_DIR (default: bench-results/), for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
VIST=".venv/bin/vist-rt"
[ -x "$VIST" ] || VIST="vist-rt"
"$VIST" bench temporal --json "$out/temporal.json"
echo "figures in $out/"
