"""Feature backends: one small interface, chosen by name; each imported only when asked for.

A backend runs a ViT's token graph: `backend(pixels)` with pixels float32 `[N, 3, S, S]` (numpy)
returns float32 `[N, T, D]` (numpy). `auto` picks the best one available here and says which;
precision `auto` picks, on the CPU, the fastest path this CPU runs natively within the accuracy
bounds (docs/benchmarks.md, "CPU paths"), and says why.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS
from vist_rt.cpu import NATIVE, CpuInfo, this_cpu
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
    ("onnxruntime", "cpu"): ("fp32", "int8"),
    ("onnxruntime", "cuda"): ("fp32",),
    ("tensorrt", "cuda"): ("fp16", "fp32"),
}
# CPU paths for precision auto, fastest first as measured (docs/benchmarks.md, "CPU paths"); each within the
# accuracy bounds (tests/features/test_precision.py). OpenVINO was measured and dropped (slower than these).
CPU_AUTO_ORDER = (("onnxruntime", "int8"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("torch", "fp32"))


class Choice(NamedTuple):
    """A resolved feature path and, in words, why it was chosen."""

    backend: str
    precision: str
    why: str


def require_device(device: str) -> None:
    """VistError (one line) when `device` is 'cuda' and no CUDA device is visible."""
    if device == "cuda" and not torch.cuda.is_available():
        raise VistError("device 'cuda' asked for, but no CUDA device is visible (torch.cuda.is_available() is False)")


def resolve(name: str, device: str, precision: str = "auto", cpu: CpuInfo | None = None) -> Choice:
    """Resolve backend `name` and `precision` (either may be `auto`) to one path, checked: on the CPU a low
    precision must be native to it (AMX / AVX512-BF16 for bf16, VNNI / AMX-INT8 for int8); precision auto takes
    the first path of CPU_AUTO_ORDER that is installed and native here; on CUDA, auto is fp32. Never falls back
    silently: what cannot run is a one-line error naming what is missing."""
    if precision not in PRECISIONS:
        raise VistError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cpu = cpu or this_cpu()
    if precision != "auto":
        backend = choose(name, device, precision)
        if device == "cpu" and not cpu.native(precision):
            raise VistError(f"--precision {precision} does not run natively on this CPU: {cpu.missing(precision)}")
        return Choice(backend, precision, "")
    if device != "cpu":
        return Choice(choose(name, device, "fp32"), "fp32", "auto: fp32 (on CUDA, ask for fp16 explicitly)")
    choose(name, device, "fp32")  # checks the name and that an explicit backend is installed
    reasons = available()
    for backend, prec in CPU_AUTO_ORDER:
        if name in ("auto", backend) and reasons[backend] is None and cpu.native(prec):
            if prec == "fp32":
                return Choice(backend, prec, "auto: fp32 (no faster native path here: see vist-rt doctor)")
            return Choice(backend, prec, f"auto: {prec} ({', '.join(f for f in cpu.extensions if f in NATIVE[prec])})")
    raise VistError(f"no {name} path runs on this CPU")  # unreachable: torch fp32 always fits


def choose(name: str, device: str, precision: str = "fp32") -> str:
    """Resolve `auto` to the best backend available here that runs `precision` on `device` (GPU: TensorRT,
    then PyTorch; CPU: ONNX Runtime, then PyTorch); check an explicit name. Never falls back silently."""
    if name not in BACKENDS:
        raise VistError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if device not in DEVICES:
        raise VistError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    require_device(device)
    if precision not in PRECISIONS or precision == "auto":
        raise VistError(f"precision must be one of {', '.join(PRECISIONS[1:])}, got {precision!r}")
    if device == "cpu" and precision == "fp16":
        raise VistError("fp16 is not supported on CPU: use --precision bf16 or fp32 (or a CUDA device)")
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
    if precision not in RUNS.get((name, device), ()):
        runs = ", ".join(RUNS.get((name, device), ()))
        raise VistError(f"the {name} backend runs {runs} on {device}, not {precision}")
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
    choice: Choice | None = None,
) -> Backend:
    """Build backend `name` (or `auto`) for a token module `pixels [N,3,S,S] -> [N,T,D]` described by `spec`, at
    `precision` (or `auto`); `choice` = an already resolved path."""
    choice = choice or resolve(name, device, precision)
    mod = importlib.import_module(f"vist_rt.features.backends.{choice.backend}_backend")
    return mod.create(
        module,
        spec=spec,
        device=device,
        precision=choice.precision,
        cache_dir=Path(cache_dir),
        threads=threads,
        cuda_graphs=cuda_graphs,
        log=log or (lambda _msg: None),
    )


def describe_runtime(rt: dict[str, Any]) -> str:
    """An extractor's `runtime` in words: backend, device and precision, and why `auto` chose that path."""
    why = f", {rt['chosen']}" if rt.get("chosen") else ""
    return f"backend {rt.get('backend')} on {rt.get('device', 'cpu')} ({rt.get('precision', 'fp32')}{why})"
