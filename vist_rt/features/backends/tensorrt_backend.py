"""TensorRT backend: the exported token graph compiled into a cached engine (fp16 or fp32), one frame per call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vist_rt.errors import VistError
from vist_rt.features.onnx import INPUT, OUTPUT, ensure_features_onnx


class TensorRTBackend:
    """Runs a cached TensorRT engine of the token graph on CUDA (engine built on first use, reused after)."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path: Path, precision: str, image_size: int) -> None:
        from vist_rt.trt import TensorRTRunner

        self.precision = precision
        self.engine_path = engine_path
        self.runner = TensorRTRunner(engine_path)
        self.staging = torch.zeros(1, 3, image_size, image_size).pin_memory()
        self.device_in = torch.zeros(1, 3, image_size, image_size, device="cuda")
        out_shape = (1, *self.runner.shapes[OUTPUT][1:])  # one frame; the batch dim may be dynamic (-1)
        self.host_out = torch.empty(out_shape, dtype=torch.float32).pin_memory()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: float32 [N, 3, S, S] -> float32 [N, T, D] (frames go through the engine one at a time)."""
        outs = []
        for frame in pixels:
            self.staging[0].copy_(torch.from_numpy(frame))
            self.device_in.copy_(self.staging, non_blocking=True)
            out = self.runner({INPUT: self.device_in})[OUTPUT]
            self.host_out.copy_(out)  # synchronises with the engine's stream
            outs.append(self.host_out.numpy().copy())  # callers keep results: never hand out the buffer
        return np.concatenate(outs)

    def close(self) -> None:
        """Release the engine and its context."""
        self.runner.close()


def create(
    module: nn.Module,
    *,
    spec: dict[str, Any],
    device: str,
    precision: str,
    cache_dir: Path,
    log: Callable[[str], None],
    **_: Any,
) -> TensorRTBackend:
    """Factory entry point: ONNX graph (reused if current) -> engine under cache_dir (reused if its key matches)."""
    from vist_rt.trt import get_or_build

    if device != "cuda":
        raise VistError("the tensorrt backend runs on CUDA only: add --device cuda")
    if precision not in ("fp16", "fp32"):
        raise VistError(f"the tensorrt backend builds fp16 or fp32 engines, not {precision}")
    onnx_path = ensure_features_onnx(module, spec, cache_dir, log)
    s = int(spec["image_size"])
    engine = get_or_build(onnx_path, precision, input_shapes={INPUT: (1, 3, s, s)}, engines=cache_dir, log=log)
    return TensorRTBackend(engine, precision, s)
