"""ONNX Runtime backend: the exported token graph on the CPU or CUDA execution provider (fp32)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vist_rt.errors import VistError
from vist_rt.export.ort import make_session
from vist_rt.features.onnx import INPUT, OUTPUT, check_features_onnx, ensure_features_onnx


class OnnxRuntimeBackend:
    """Runs a vist-rt features ONNX file with ONNX Runtime."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: str | Path, spec: dict[str, Any], *, device: str = "cpu", threads: int | None = None):
        check_features_onnx(path, spec)
        self.path = Path(path)
        self.device = device
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
    """Factory entry point: export (or reuse) the ONNX graph under cache_dir, open a session on it."""
    if precision != "fp32":
        raise VistError(f"the onnxruntime backend runs fp32 only, not {precision}: use torch or tensorrt for it")
    path = ensure_features_onnx(module, spec, cache_dir, log)
    return OnnxRuntimeBackend(path, spec, device=device, threads=threads)
