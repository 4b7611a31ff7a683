#!/usr/bin/env bash
# The in-silico demo (docs/science/insilico.md): the demo model's simulated retina, one MEI per cell through the
# emulator, each checked against the known retina; then the summary over all cells.
# Usage: tools/insilico_demo.sh [WORKDIR] [STEPS] [NAME] [MEI FLAGS...]
#   default insilico-build/, 40 steps, NAME insilico (the summary goes to docs/science/NAME/); ~1 min per cell on
#   2 cores. CELLS="sim004 sim009" limits the cells (default all 20); MEI FLAGS are added to each `vist-rt mei`.
set -euo pipefail
work=${1:-insilico-build}
steps=${2:-40}
name=${3:-insilico}
shift $(( $# < 3 ? $# : 3 ))
vist=${VIST_RT:-vist-rt}
python=${PYTHON:-python}
here="$(cd "$(dirname "$0")" && pwd)"
cells=${CELLS:-$(printf "sim%03d " $(seq 0 19))}
mkdir -p "$work"
# the demo model's own retina (tools/make_demo_model.sh); movie3 was seen neither in training nor for the best epoch
[ -f "$work/retina.h5" ] || "$vist" simulate "$work/retina.h5" --cells 20 --movies 3 --frames 600 --trials 10 --seed 0
for cell in $cells; do
    "$vist" mei "$here/../vist_rt/demo/demo.safetensors" --cell "$cell" --out "$work/$name/$cell" \
        --data "$work/retina.h5" --movie movie3 --frames 30 --window 10 --steps "$steps" --seed 0 "$@"
done
"$python" "$here/insilico_summary.py" "$work/$name" "$here/../docs/science/$name"
