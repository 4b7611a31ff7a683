"""ONNX Runtime backend: the exported token graph on the CPU or CUDA execution provider (fp32), or its int8
(dynamically quantized) graph on the CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vist_rt.errors import VistError
from vist_rt.export.ort import make_session
from vist_rt.features.onnx import INPUT, OUTPUT, check_features_onnx, ensure_features_onnx, ensure_int8_onnx


class OnnxRuntimeBackend:
    """Runs a vist-rt features ONNX file with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        spec: dict[str, Any],
        *,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
    ):
        meta = check_features_onnx(path, spec)
        if (precision == "int8") != ("int8" in meta):
            raise VistError(f"{path} is not an {precision} features graph")
        self.path = Path(path)
        self.device, self.precision = device, precision
        self.session = make_session(path, device=device, threads=threads)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: float32 [N, 3, S, S] -> float32 [N, T, D]."""
        if self.session is None:
            raise VistError("this ONNX Runtime backend is closed")
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    def close(self) -> None:
        """Release the session."""
        self.session = None


def create(
    module: nn.Module,
    *,
    spec: dict[str, Any],
    device: str,
    precision: str,
    cache_dir: Path,
    threads: int | None,
    log: Callable[[str], None],
    **_: Any,
) -> OnnxRuntimeBackend:
    """Factory entry point: export (or reuse) the ONNX graph under cache_dir, for int8 quantize (or reuse) it, open
    a session on it."""
    if precision not in ("fp32", "int8") or (precision == "int8" and device != "cpu"):
        raise VistError(f"the onnxruntime backend runs fp32, or int8 on the CPU; not {precision} on {device}")
    path = ensure_features_onnx(module, spec, cache_dir, log)
    if precision == "int8":
        path = ensure_int8_onnx(path, spec, log)
    return OnnxRuntimeBackend(path, spec, device=device, threads=threads, precision=precision)
