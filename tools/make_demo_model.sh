#!/usr/bin/env bash
# Rebuild the shipped demo model, vist_rt/demo/demo.safetensors, from nothing: simulate the retina, train
# Vi-ST with the cpu-small preset as it was when the demo was made (pinned with --recipe; about 8 minutes on
# 2 cores), evaluate it on a movie it never saw, copy it.
# Usage: tools/make_demo_model.sh [WORKDIR]   (default demo-build/; needs `pip install -e ".[dev]"`)
# A rebuild starts over: it replaces the dataset and the model files already in WORKDIR (--force).
set -euo pipefail
work=${1:-demo-build}
vist=${VIST_RT:-vist-rt}
mkdir -p "$work"
# training on the CPU is bit-reproducible for a given torch version and thread count
export OMP_NUM_THREADS=2
"$vist" simulate "$work/retina.h5" --cells 20 --movies 3 --frames 600 --trials 10 --seed 0 --force
"$vist" train "$work/retina.h5" --train-movie movie1 --test-movie movie2 --preset cpu-small --seed 0 \
    --recipe "$(dirname "$0")/../docs/science/cpu-small-2026-12-05.toml" --out "$work/demo.safetensors" --force
"$vist" eval "$work/demo.safetensors" "$work/retina.h5" --movie movie3 --json "$work/eval.json" --plots "$work/plots"
cp "$work/demo.safetensors" "$(dirname "$0")/../vist_rt/demo/demo.safetensors"
echo "demo model: vist_rt/demo/demo.safetensors (evaluation: $work/eval.json)"
