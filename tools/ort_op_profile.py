"""Where an ONNX Runtime CPU session spends a frame, per operator type (docs/benchmarks.md, "CPU paths").

    python tools/ort_op_profile.py GRAPH.onnx [--frames 50] [--threads 2]

Runs one random frame `--frames` times with ONNX Runtime's profiler on and prints the kernel time per
operator type (ms per frame and share), largest first.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(args.graph, opts, providers=["CPUExecutionProvider"])
        shape = [1 if isinstance(d, str) else d for d in session.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        name = session.get_inputs()[0].name
        for _ in range(args.frames):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]  # microseconds
    total = sum(per_op.values())
    for op, us in per_op.most_common():
        print(f"{op:28s} {us / args.frames / 1e3:7.2f} ms/frame {us / total:6.1%}")
    print(f"{'all kernels':28s} {total / args.frames / 1e3:7.2f} ms/frame ({args.threads} threads)")


if __name__ == "__main__":
    main()
