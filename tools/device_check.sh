#!/usr/bin/env bash
# The device check: ONE run on a CUDA machine with no network, in < 10 minutes.
#   1. the GPU- and TensorRT-marked tests;
#   2. `vist-rt bench gpu`: ViT-S/14 and ViT-L/14 at 224 in fp16 (torch eager vs CUDA graph, TensorRT if
#      importable) and the streaming temporal step at the published config (eager vs CUDA graph), CUDA
#      events, 50 warm-up + 500 timed frames each, and one frame end to end; one table;
#   3. `vist-rt bench pipeline --streams 1,2,4` on the host's CPUs (demo model, 600 ticks per run, a floor of
#      150 messages, under --rt-priority 10 where SCHED_FIFO can be had): the run-time's overhead per extra
#      stream (issue 17) on more than 2 cores. Skipped with a line when the machine lacks the run-time's packages (pyzmq).
# Worst case 190 + 240 + 150 s of timeouts, inside the device tool's 600 s per call.
# Copies the test log and the JSON to $OUT when set. Uses the machine's python3 (PYTHON= to change);
# installs nothing: the package runs from the checkout via PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-device-check}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
{
  echo "== machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || echo "nvidia-smi: not found"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  "$PY" -c 'import tensorrt; print("tensorrt", tensorrt.__version__)' 2>/dev/null || echo "tensorrt: not importable"
  # the host CPU too: its matrix extensions decide the CPU paths of the ViT (amx, avx512_bf16, vnni)
  grep -m1 "model name" /proc/cpuinfo; nproc
  grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E "^(amx|avx512_bf16|avx512_vnni|avx_vnni|avx512f)" | tr '\n' ' '; echo
} 2>&1 | tee "$OUT_DIR/device-machine.txt"

echo "== GPU and TensorRT tests"
# only the modules that hold such tests: the others import rig-side packages (pexpect, pylsl) a GPU image may lack
mapfile -t marked < <(grep -rlE "mark\.(gpu|trt)" tests --include "test_*.py")
timeout 190 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or trt" -rs "${marked[@]}" 2>&1 | tee "$OUT_DIR/device-tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== bench gpu"
timeout 240 "$PY" -m vist_rt bench gpu --frames 500 --warmup 50 --engines /tmp/vist-engines \
  --json "$OUT_DIR/device-check.json" 2>&1 | tee "$OUT_DIR/device-bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== bench pipeline --streams 1,2,4 (CPU)"
streams_rc=0
if import_err=$("$PY" -c 'import vist_rt.bench.pipeline' 2>&1); then
  rt=()  # the run-time's own check: SCHED_FIFO for an instant (a one-line reason where it cannot be had)
  if why=$("$PY" -c 'from vist_rt.runtime.lowlatency import ClockPriority
with ClockPriority(10): pass' 2>&1); then rt=(--rt-priority 10); else why=${why##*$'\n'}; echo "without --rt-priority: ${why#*Error: }"; fi
  timeout 150 "$PY" -m vist_rt bench pipeline --streams 1,2,4 --ticks 600 --baseline 150 "${rt[@]}" \
    --json "$OUT_DIR/device-streams.json" 2>&1 | tee "$OUT_DIR/device-streams.log"
  streams_rc=${PIPESTATUS[0]}
else
  echo "skipped: the run-time does not import here (${import_err##*$'\n'})" | tee "$OUT_DIR/device-streams.log"
fi

echo "== done in $(( $(date +%s) - start )) s: tests rc=$tests_rc, bench rc=$bench_rc, streams rc=$streams_rc; files in $OUT_DIR"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$streams_rc" -eq 0 ]
