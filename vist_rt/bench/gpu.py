"""`vist-rt bench gpu`: the device check's figures on a CUDA machine.

ViT-S/14 and ViT-L/14 at 224 in fp16 (PyTorch eager vs CUDA graph, and TensorRT where importable),
the streaming temporal step at the published configuration (eager vs CUDA graph), and one frame
end to end (preprocess + ViT + temporal). GPU stages are timed with CUDA events after a warm-up;
every call also gets a wall-clock time (what a caller waits, host copies included).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vist_rt.bench.stats import machine_info
from vist_rt.errors import VistError
from vist_rt.latency import summarize


def cuda_time(fn: Callable[[], object], n: int, warmup: int) -> dict[str, dict[str, float]]:
    """Time fn n times after warmup: per call, CUDA-event time of the work it queued and wall time."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    gpu, wall = [], []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        wall.append(time.perf_counter() - t0)
        gpu.append(start.elapsed_time(end) / 1e3)
    return {"gpu_ms": summarize(gpu), "wall_ms": summarize(wall)}


def _vit_rows(backbone: str, frames: int, warmup: int, engines: str, log: Callable[[str], None]) -> dict[str, Any]:
    from vist_rt.features import DINOv2Extractor

    rows: dict[str, Any] = {}
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    variants = [("torch eager", "torch", False), ("torch CUDA graph", "torch", True)]
    if importlib.util.find_spec("tensorrt") is not None:
        variants.append(("TensorRT", "tensorrt", False))
    else:
        rows["TensorRT"] = {"skipped": "tensorrt is not importable here"}
    for label, backend, graphs in variants:
        log(f"{backbone} fp16 {label} ...")
        try:
            ext = DINOv2Extractor(backbone, seed=0, block=-1, backend=backend, device="cuda", precision="fp16",
                                  cuda_graphs=graphs, cache_dir=engines, log=log)  # fmt: skip
        except VistError as exc:
            rows[label] = {"skipped": str(exc)}
            continue
        rows[label] = cuda_time(lambda e=ext: e.tokens_from_pixels(pixels), frames, warmup)
        rows[label]["runtime"] = ext.runtime
        ext.close()
    return rows


def _temporal_rows(frames: int, warmup: int, log: Callable[[str], None]) -> dict[str, Any]:
    from vist_rt.model import StreamingViST, ViST, ViSTConfig
    from vist_rt.model.device_stream import DeviceStreamingViST

    cfg = ViSTConfig()
    torch.manual_seed(0)
    model = ViST(cfg).eval().cuda()
    rf = torch.rand(1, cfg.cells, cfg.grid, cfg.grid, device="cuda")
    feats = torch.randn(1, cfg.tokens, cfg.feature_dim, device="cuda")
    rows: dict[str, Any] = {}
    log("temporal step eager ...")
    eager = StreamingViST.from_model(model, rf)
    rows["torch eager"] = cuda_time(lambda: eager.step(feats), frames, warmup)
    log("temporal step CUDA graph ...")
    graphed = DeviceStreamingViST.from_model(model, rf, cuda_graph=True)
    rows["torch CUDA graph"] = cuda_time(lambda: graphed.step(feats), frames, warmup)
    eager.reset()
    graphed.reset()
    err = max(float((eager.step(f) - graphed.step(f)).abs().max()) for f in torch.randn(200, *feats.shape).cuda())
    rows["graph_vs_eager_max_abs"] = err
    return rows


def run_gpu_bench(
    frames: int = 500, warmup: int = 50, engines: str = "engines", log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every device-check figure as a dict."""
    if not torch.cuda.is_available():
        raise VistError("bench gpu needs a CUDA device; none is visible")
    if frames < 1 or warmup < 0:
        raise VistError("frames must be >= 1 and warm-up >= 0")
    torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"bench": "gpu", "machine": machine_info(), "frames": frames, "warmup": warmup}
    result["gpu"] = {
        "name": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "torch_cuda": torch.version.cuda,
    }
    result["vit"] = {b: _vit_rows(b, frames, warmup, engines, log) for b in ("vits14", "vitl14")}
    result["temporal"] = _temporal_rows(frames, warmup, log)
    result["end_to_end"] = _end_to_end(frames, warmup, engines, log)
    return result


def _end_to_end(frames: int, warmup: int, engines: str, log: Callable[[str], None]) -> dict[str, Any]:
    """One 640x480 BGR frame -> rates: preprocess (CPU) + ViT-L/14 fp16 (CUDA graph) + temporal (CUDA graph)."""
    from vist_rt.features import DINOv2Extractor
    from vist_rt.model import ViST, ViSTConfig
    from vist_rt.model.device_stream import DeviceStreamingViST

    log("end to end ...")
    ext = DINOv2Extractor("vitl14", seed=0, block=-1, device="cuda", precision="fp16", cache_dir=engines)
    cfg = ViSTConfig()
    model = ViST(cfg).eval().cuda()
    stream = DeviceStreamingViST.from_model(model, torch.rand(1, cfg.cells, cfg.grid, cfg.grid, device="cuda"))
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    stages: dict[str, list[float]] = {"preprocess": [], "vit": [], "temporal": [], "end_to_end": []}

    def once(record: bool) -> None:
        t0 = time.perf_counter()
        pixels = ext.preprocess(frame)
        t1 = time.perf_counter()
        tokens = torch.from_numpy(ext.tokens_from_pixels(pixels)).cuda(non_blocking=True)
        t2 = time.perf_counter()
        stream.step(tokens).cpu()
        t3 = time.perf_counter()
        if record:
            for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                stages[key].append(value)

    for i in range(warmup + frames):
        once(i >= warmup)
    ext.close()
    return {"runtime": ext.runtime, **{k: summarize(v) for k, v in stages.items()}}
