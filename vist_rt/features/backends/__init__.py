"""Feature backends: one small interface, chosen by name; each imported only when asked for.

A backend runs a ViT's token graph: `backend(pixels)` with pixels float32 `[N, 3, S, S]` (numpy)
returns float32 `[N, T, D]` (numpy). `auto` picks the best one available here and says which.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS
from vist_rt.errors import VistError


class Backend(Protocol):
    """What every feature backend provides."""

    name: str
    device: str
    precision: str

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: float32 [N, 3, S, S] -> float32 [N, T, D]."""
        ...

    def close(self) -> None:
        """Release what the backend holds (sessions, engines, graphs)."""
        ...


def available() -> dict[str, str | None]:
    """Backend name -> None if usable here, else the reason it is not."""
    reasons: dict[str, str | None] = {"torch": None}
    reasons["onnxruntime"] = (
        None if importlib.util.find_spec("onnxruntime") else 'not installed: pip install "vist-rt[onnx]"'
    )
    if importlib.util.find_spec("tensorrt") is None:
        reasons["tensorrt"] = 'not installed: pip install "vist-rt[tensorrt]" (needs an NVIDIA GPU)'
    elif not torch.cuda.is_available():
        reasons["tensorrt"] = "no CUDA device visible"
    else:
        reasons["tensorrt"] = None
    return reasons


# precisions each backend runs, per device
RUNS = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "fp16", "bf16"),
    ("onnxruntime", "cpu"): ("fp32",),
    ("onnxruntime", "cuda"): ("fp32",),
    ("tensorrt", "cuda"): ("fp16", "fp32"),
}


def require_device(device: str) -> None:
    """VistError (one line) when `device` is 'cuda' and no CUDA device is visible."""
    if device == "cuda" and not torch.cuda.is_available():
        raise VistError("device 'cuda' asked for, but no CUDA device is visible (torch.cuda.is_available() is False)")


def choose(name: str, device: str, precision: str = "fp32") -> str:
    """Resolve `auto` to the best backend available here that runs `precision` on `device` (GPU: TensorRT,
    then PyTorch; CPU: ONNX Runtime, then PyTorch); check an explicit name. Never falls back silently."""
    if name not in BACKENDS:
        raise VistError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if device not in DEVICES:
        raise VistError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    require_device(device)
    if precision not in PRECISIONS:
        raise VistError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    reasons = available()
    if name == "auto":
        order = ("tensorrt", "torch") if device == "cuda" else ("onnxruntime", "torch")
        fits = [b for b in order if reasons[b] is None and precision in RUNS.get((b, device), ())]
        if not fits:
            raise VistError(f"no backend here runs {precision} on {device}")
        return fits[0]
    if reasons[name] is not None:
        raise VistError(f"backend {name!r} is not available: {reasons[name]}")
    if name == "tensorrt" and device != "cuda":
        raise VistError("the tensorrt backend runs on CUDA only: add --device cuda")
    return name


def make_backend(
    name: str,
    module: torch.nn.Module,
    *,
    spec: dict[str, Any],
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | Path = "engines",
    threads: int | None = None,
    cuda_graphs: bool = True,
    log: Any = None,
) -> Backend:
    """Build backend `name` (or `auto`) for a token module `pixels [N,3,S,S] -> [N,T,D]` described by `spec`."""
    chosen = choose(name, device, precision)
    mod = importlib.import_module(f"vist_rt.features.backends.{chosen}_backend")
    return mod.create(
        module,
        spec=spec,
        device=device,
        precision=precision,
        cache_dir=Path(cache_dir),
        threads=threads,
        cuda_graphs=cuda_graphs,
        log=log or (lambda _msg: None),
    )
