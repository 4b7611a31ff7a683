"""`vist-rt bench features`: per-frame feature latency on each backend, and the ViT's compute floor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vist_rt.bench.stats import machine_info, matmul_gflops, time_calls
from vist_rt.features.backbones import PATCH
from vist_rt.features.extractor import DINOv2Extractor
from vist_rt.features.vit import DINOv2Tokens
from vist_rt.latency import summarize


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


def _measure(ext: DINOv2Extractor, pool: np.ndarray, frames: int, warmup: int) -> tuple[dict[str, Any], np.ndarray]:
    """One backend: ViT and preprocessing times for one frame at a time, and one output for agreement."""
    pixels = [ext.preprocess(f).copy() for f in pool]
    counter = iter(range(1 << 62))
    vit = summarize(time_calls(lambda: ext.tokens_from_pixels(pixels[next(counter) % len(pool)]), frames, warmup))
    pre = summarize(time_calls(lambda: ext.preprocess(pool[next(counter) % len(pool)]), frames, warmup))
    out = ext.tokens_from_pixels(pixels[0]).copy()
    return {"runtime": ext.runtime, "vit_ms": vit, "preprocess_ms": pre}, out


def run_features_bench(
    make: Callable[[str], DINOv2Extractor],
    backends: Sequence[str] = ("torch", "onnxruntime"),
    *,
    frames: int = 200,
    warmup: int = 20,
    frame_shape: tuple[int, int] = (480, 640),
    seed: int = 0,
    matmul_size: int = 1024,
) -> dict[str, Any]:
    """Time preprocessing and one-frame token extraction on each backend; floor = FLOPs / matmul rate."""
    if frames < 1 or warmup < 0:
        raise ValueError("frames must be >= 1 and warm-up >= 0")
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (8, *frame_shape, 3), dtype=np.uint8)
    results: dict[str, Any] = {}
    first: DINOv2Extractor | None = None
    outputs: dict[str, np.ndarray] = {}
    for name in backends:
        ext = make(name)
        first = first or ext
        results[name], outputs[name] = _measure(ext, pool, frames, warmup)
        ext.close()
    assert first is not None
    flops = vit_flops(first.module)
    gflops = matmul_gflops(matmul_size)
    floor_ms = flops / (gflops * 1e9) * 1e3
    for r in results.values():
        r["vit_over_floor"] = r["vit_ms"]["p50"] / floor_ms
    ref = outputs[backends[0]]
    agreement = {
        name: float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max()) for name, out in outputs.items()
    }
    out: dict[str, Any] = {
        "bench": "features",
        "machine": machine_info(),
        "extractor": first.spec,
        "described": first.describe(),
        "frame_shape": list(frame_shape),
        "frames": frames,
        "warmup": warmup,
        "backends": results,
        "max_rel_diff_vs_first": agreement,
        "flops_per_frame": flops,
        "matmul_gflops": gflops,
        "floor_ms": floor_ms,
    }
    if len(backends) >= 2:
        a, b = backends[0], backends[1]
        out["ratio_p50"] = {f"{a}/{b}": results[a]["vit_ms"]["p50"] / results[b]["vit_ms"]["p50"]}
    return out
