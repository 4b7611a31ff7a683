"""`vist-rt bench features`: per-frame ViT latency of each CPU path (backend x precision), its accuracy against
fp32 and its compute floor at that precision's matmul rate, all measured in one run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from vist_rt.bench.stats import machine_info, matmul_gflops, time_calls
from vist_rt.cpu import this_cpu
from vist_rt.features.accuracy import BOUNDS, agreement
from vist_rt.features.backbones import PATCH
from vist_rt.features.backends import CPU_AUTO_ORDER, RUNS, available, resolve
from vist_rt.features.extractor import DINOv2Extractor
from vist_rt.features.vit import DINOv2Tokens
from vist_rt.latency import summarize
from vist_rt.model import ViST, ViSTConfig
from vist_rt.model.vist import perturb
from vist_rt.movie import SyntheticMovie
from vist_rt.train.metrics import cc_per_cell

ACCURACY_FRAMES = 320  # consecutive frames: the rates' CC bound is over >= MIN_RATE_FRAMES
MIN_RATE_FRAMES = 300


class FeaturePath(NamedTuple):
    """One way to run the ViT: a backend at a precision."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.precision}"


def parse_paths(text: str) -> list[FeaturePath]:
    """ "torch:fp32,onnxruntime:int8" -> paths; ValueError (one line) on anything else."""
    paths = []
    for item in (t.strip() for t in text.split(",")):
        backend, sep, precision = item.partition(":")
        if not sep or ((backend, "cpu") not in RUNS and (backend, "cuda") not in RUNS):
            raise ValueError(f"--paths items look like torch:fp32 or onnxruntime:int8, got {item!r}")
        paths.append(FeaturePath(backend, precision))
    if len(set(paths)) != len(paths):
        raise ValueError(f"--paths lists a path twice: {text!r}")
    return paths


def native_cpu_paths() -> list[FeaturePath]:
    """Every CPU path installed here whose precision this CPU runs natively; torch fp32 (the reference) first."""
    reasons = available()
    slowest_first = reversed(CPU_AUTO_ORDER)
    return [FeaturePath(b, p) for b, p in slowest_first if reasons[b] is None and this_cpu().native(p)]


def vit_flops(module: DINOv2Tokens) -> int:
    """FLOPs (2 x multiply-adds) of one frame through a token module: patch embedding, then per block
    qkv, attention (QK^T and AV), projection and MLP, over all tokens (patches + class + registers)."""
    vit = module.vit
    tokens = module.tokens
    n = tokens + vit.num_prefix_tokens
    d = vit.embed_dim
    macs = tokens * 3 * PATCH * PATCH * d
    for blk in vit.blocks:
        fc1, fc2 = blk.mlp.fc1.weight, blk.mlp.fc2.weight
        macs += n * d * 3 * d + 2 * n * n * d + n * d * d + n * d * fc1.shape[0] + n * fc2.shape[1] * d
    return 2 * macs


def ort_matmul_gflops(n: int = 1024, repeats: int = 30, threads: int | None = None) -> float | None:
    """ONNX Runtime's float32 matmul rate on the CPU (GFLOP/s of an n^3 product) with `threads` intra-op threads
    (None: its default), None without onnxruntime: its kernels may beat torch's on CPUs where torch's BLAS takes a
    generic path."""
    if available()["onnxruntime"] is not None:
        return None
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vist_rt.export.ort import require_ort

    ort = require_ort()
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx.shape_inference.infer_shapes(model).SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    times = time_calls(lambda: session.run(None, {"x": x}), repeats, warmup=3)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


def matmul_rates(precisions: Sequence[str], n: int = 1024) -> dict[str, float]:
    """The best matmul rate (GFLOP/s, GOP/s for int8) this machine reaches at each precision, in torch (fp32 also
    in ONNX Runtime, the larger taken), both on torch's current number of threads (the bench's `--threads`)."""
    rates = {p: matmul_gflops(n, precision=p) for p in dict.fromkeys(precisions)}
    if "fp32" in rates:
        rates["fp32"] = max(rates["fp32"], ort_matmul_gflops(n, threads=torch.get_num_threads()) or 0.0)
    return rates


def accuracy_frames(shape: tuple[int, int], n: int = ACCURACY_FRAMES, seed: int = 0) -> np.ndarray:
    """The accuracy set: the first n frames of the synthetic movie (natural-like colour, 30 Hz), uint8 BGR."""
    movie = SyntheticMovie(seed=seed, size=shape, color=True)
    return np.stack([movie.frame(i) for i in range(n)])


def rate_agreement(tokens: np.ndarray, ref: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Per-cell CC over time between the Vi-ST rates from `tokens` and from `ref` (fp32) tokens, both `[T, N, D]`
    of T consecutive frames: a published-size Vi-ST on this token grid and width, random weights where no term is
    a no-op (`perturb`, `seed`), random RFs. min and mean over cells; `within`: >= BOUNDS.rate_cc for every cell
    over >= MIN_RATE_FRAMES frames (None with fewer frames: not the bound's test). A grid too small for the
    published Vi-ST (side <= 8) gets None figures and `why`."""
    t, n, d = ref.shape
    grid = math.isqrt(n)
    if grid <= 8:
        why = f"a {grid}x{grid} token grid is too small for the published Vi-ST (its side must be > 8)"
        return {"min_cc": None, "mean_cc": None, "frames": t, "cells": 0, "within": None, "why": why}
    cfg = ViSTConfig(feature_dim=d, grid=grid)
    model = perturb(ViST(cfg), seed)
    rf = torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        rates = [model(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None], rf)[0].numpy().T
                 for x in (tokens, ref)]  # fmt: skip
    cc = cc_per_cell(rates[0], rates[1])  # [C], from rates [T, C]
    within = bool(cc.min() >= BOUNDS.rate_cc) if t >= MIN_RATE_FRAMES else None
    return {"min_cc": float(cc.min()), "mean_cc": float(cc.mean()), "frames": t, "cells": cfg.cells, "within": within}


def _tokens(ext: DINOv2Extractor, frames: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Tokens of many frames, `chunk` frames per call (bounded memory)."""
    return np.concatenate([ext(frames[i : i + chunk]) for i in range(0, len(frames), chunk)])


def _measure(ext: DINOv2Extractor, pool: np.ndarray, frames: int, warmup: int) -> dict[str, Any]:
    """One path: ViT and preprocessing times for one frame at a time."""
    pixels = [ext.preprocess(f).copy() for f in pool]
    counter = iter(range(1 << 62))
    vit = summarize(time_calls(lambda: ext.tokens_from_pixels(pixels[next(counter) % len(pool)]), frames, warmup))
    pre = summarize(time_calls(lambda: ext.preprocess(pool[next(counter) % len(pool)]), frames, warmup))
    return {"runtime": ext.runtime, "vit_ms": vit, "preprocess_ms": pre}


def run_features_bench(
    make: Callable[[FeaturePath], DINOv2Extractor],
    paths: Sequence[FeaturePath],
    *,
    frames: int = 200,
    warmup: int = 20,
    frame_shape: tuple[int, int] = (480, 640),
    seed: int = 0,
    matmul_size: int = 1024,
    labels: Sequence[str] | None = None,
    accuracy_set: int = ACCURACY_FRAMES,
) -> dict[str, Any]:
    """Time preprocessing and one-frame token extraction on each path; accuracy of each against the first path
    on the accuracy set (`accuracy_set` consecutive frames: tokens, and the rates of a Vi-ST on them); floor of
    each = FLOPs / the matmul rate of its precision, measured in this run."""
    if frames < 1 or warmup < 0:
        raise ValueError("frames must be >= 1 and warm-up >= 0")
    if not paths:
        raise ValueError("no feature path to measure")
    labels = list(labels or [p.label for p in paths])
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (8, *frame_shape, 3), dtype=np.uint8)
    if accuracy_set < 2:
        raise ValueError("the accuracy set needs at least 2 frames")
    acc_frames = accuracy_frames(frame_shape, accuracy_set, seed=seed)
    results: dict[str, Any] = {}
    outputs: dict[str, np.ndarray] = {}
    spec: dict[str, Any] = {}
    described, flops = "", 0
    for label, path in zip(labels, paths):
        ext = make(path)
        try:
            if not spec:
                spec, described, flops = ext.spec, ext.describe(), vit_flops(ext.module)
            results[label] = _measure(ext, pool, frames, warmup)
            outputs[label] = _tokens(ext, acc_frames)
        finally:
            ext.close()
    rates = matmul_rates([r["runtime"]["precision"] for r in results.values()], matmul_size)
    floors = {p: flops / (rate * 1e9) * 1e3 for p, rate in rates.items()}
    ref_label = labels[0]
    ref = outputs[ref_label]
    for label, r in results.items():
        r["floor_ms"] = floors[r["runtime"]["precision"]]
        r["vit_over_floor"] = r["vit_ms"]["p50"] / r["floor_ms"]
        r["accuracy"] = {**agreement(outputs[label], ref), "rates": rate_agreement(outputs[label], ref)}
    out: dict[str, Any] = {
        "bench": "features",
        "machine": machine_info(),
        "extractor": spec,
        "described": described,
        "frame_shape": list(frame_shape),
        "frames": frames,
        "warmup": warmup,
        "backends": results,
        "reference": ref_label,
        "accuracy_set": f"the first {len(acc_frames)} frames of the synthetic movie (seed {seed}, colour, 30 Hz)",
        "bounds": {
            "mean_cos": BOUNDS.mean_cos,
            "min_cos": BOUNDS.min_cos,
            "rate_cc": BOUNDS.rate_cc,
            "rate_frames": MIN_RATE_FRAMES,
        },
        "max_rel_diff_vs_first": {
            k: float(np.abs(v.astype(np.float64) - ref).max() / np.abs(ref).max()) for k, v in outputs.items()
        },
        "flops_per_frame": flops,
        "matmul_gflops": rates,
        "floor_ms": floors,
    }
    if len(labels) >= 2:
        a, b = labels[0], labels[1]
        out["ratio_p50"] = {f"{a}/{b}": results[a]["vit_ms"]["p50"] / results[b]["vit_ms"]["p50"]}
    ort_fp32 = next((k for k, p in zip(labels, paths) if p == ("onnxruntime", "fp32")), None)
    if ort_fp32 is not None:
        base = results[ort_fp32]["vit_ms"]["p50"]
        out["speedup_vs_onnxruntime_fp32"] = {k: base / r["vit_ms"]["p50"] for k, r in results.items()}
    auto = resolve("auto", "cpu", "auto")
    out["auto"] = {"path": f"{auto.backend}:{auto.precision}", "why": auto.why}
    return out
