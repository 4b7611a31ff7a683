#!/usr/bin/env bash
# The in-silico demo (docs/science/insilico.md): the demo model's simulated retina, one MEI per cell through the
# emulator, each checked against the known retina; then the summary over all cells.
# Usage: tools/insilico_demo.sh [WORKDIR] [STEPS]   (default insilico-build/, 40 steps; ~1-2 min per cell on 2 cores)
set -euo pipefail
work=${1:-insilico-build}
steps=${2:-40}
vist=${VIST_RT:-vist-rt}
python=${PYTHON:-python}
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$work"
# the demo model's own retina (tools/make_demo_model.sh); movie3 was seen neither in training nor for the best epoch
"$vist" simulate "$work/retina.h5" --cells 20 --movies 3 --frames 600 --trials 10 --seed 0 --force
for i in $(seq 0 19); do
    cell=$(printf "sim%03d" "$i")
    "$vist" mei "$here/../vist_rt/demo/demo.safetensors" --cell "$cell" --out "$work/$cell" \
        --data "$work/retina.h5" --movie movie3 --frames 30 --window 10 --steps "$steps" --seed 0
done
"$python" "$here/insilico_summary.py" "$work" "$here/../docs/science/insilico"
