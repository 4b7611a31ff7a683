"""`vist-rt bench temporal`: streaming step vs recomputing a window, and the step's compute floor.

The step runs on one of BACKENDS: "torch" (`StreamingViST`), "onnxruntime" (`OnnxStreamingViST`,
the exported step graph on ONNX Runtime's CPU provider) or "native" (`NativeStreamingViST`, PyTorch
matmuls + compiled C kernels), each with as many threads as torch uses.
"""

from __future__ import annotations

from typing import Any

import torch

from vist_rt.bench.stats import machine_info, matmul_gflops, time_calls
from vist_rt.latency import summarize
from vist_rt.model.config import ViSTConfig
from vist_rt.model.native import NativeStreamingViST
from vist_rt.model.step_graph import OnnxStreamingViST
from vist_rt.model.streaming import StreamingViST
from vist_rt.model.vist import ViST, step_macs

TARGET_RATIO = 200.0
TARGET_FLOOR_FACTOR = 2.0
BACKENDS = ("torch", "onnxruntime", "native")


def run_temporal_bench(
    cfg: ViSTConfig,
    *,
    steps: int = 300,
    windows: int = 20,
    window_frames: int = 128,
    warmup: int = 30,
    batch: int = 1,
    seed: int = 0,
    matmul_size: int = 1024,
    backend: str = "torch",
) -> dict[str, Any]:
    """Time the streaming step (on `backend`) and the window recompute on CPU; return every figure as a dict."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if min(steps, windows, window_frames, batch) < 1 or warmup < 0:
        raise ValueError("steps, windows, window frames and batch must be >= 1, warm-up >= 0")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViST(cfg).eval()
    rf = torch.rand(batch, cfg.cells, cfg.grid, cfg.grid, generator=gen)
    stream: StreamingViST | OnnxStreamingViST | NativeStreamingViST
    if backend == "onnxruntime":
        stream = OnnxStreamingViST.from_model(model, rf, threads=torch.get_num_threads())
    elif backend == "native":
        stream = NativeStreamingViST.from_model(model, rf)
    else:
        stream = StreamingViST.from_model(model, rf)
    pool = torch.randn(8, batch, cfg.tokens, cfg.feature_dim, generator=gen)
    counter = iter(range(1 << 62))
    last: list[torch.Tensor] = []

    def one_step() -> None:
        last[:] = [stream.step(pool[next(counter) % len(pool)])]

    step_times = time_calls(one_step, steps, warmup=warmup)
    window = torch.randn(batch, window_frames, cfg.tokens, cfg.feature_dim, generator=gen)

    def one_window() -> None:
        with torch.inference_mode():
            model(window, rf)

    window_times = time_calls(one_window, windows, warmup=min(2, warmup))
    gflops = matmul_gflops(matmul_size)
    macs = step_macs(cfg) * batch
    floor_ms = 2.0 * macs / (gflops * 1e9) * 1e3
    step = summarize(step_times)
    win = summarize(window_times)
    ratio = win["p50"] / step["p50"]
    machine = machine_info()
    return {
        "bench": "temporal",
        "backend": backend,
        "machine": machine,
        "config": cfg.to_dict(),
        "batch": batch,
        "seed": seed,
        "last_rates_sum": float(last[0].sum()),  # identifies the random weights/inputs used
        "window_frames": window_frames,
        "warmup": warmup,
        "step_ms": step,
        "window_ms": win,
        "ratio_p50": ratio,
        "macs_per_step": macs,
        "matmul_gflops": gflops,
        "matmul_size": matmul_size,
        "floor_ms": floor_ms,
        "step_over_floor": step["p50"] / floor_ms,
        "native": stream.describe() if isinstance(stream, NativeStreamingViST) else None,
        "targets": {"ratio_min": TARGET_RATIO, "step_over_floor_max": TARGET_FLOOR_FACTOR},
        "met": {
            "ratio": ratio >= TARGET_RATIO,
            "floor": step["p50"] / floor_ms <= TARGET_FLOOR_FACTOR,
        },
    }
