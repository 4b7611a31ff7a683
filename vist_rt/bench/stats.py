"""Benchmark helpers: timed calls, the machine's description, a matmul rate, figures written as JSON.

Latency summaries (`summarize`) are in `vist_rt.latency`."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.cpu import this_cpu
from vist_rt.errors import VistError
from vist_rt.files import atomic_write


def time_calls(fn: Callable[[], object], n: int, warmup: int = 0) -> list[float]:
    """Run fn warmup + n times; return the n durations (s) measured with perf_counter."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def cpu_name() -> str:
    """The processor's model name, as the OS reports it."""
    cpu = this_cpu()
    return cpu.model if cpu.model != "unknown CPU" else platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_extensions": list(this_cpu().extensions),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for package in ("onnxruntime", "tensorrt", "timm"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def matmul_gflops(n: int = 1024, repeats: int = 30, device: str = "cpu", precision: str = "fp32") -> float:
    """This machine's matmul rate in torch: median GFLOP/s (GOP/s for int8) of an n x n x n product at
    `precision` (fp32, bf16, fp16; int8 on the CPU: int8 x int8 -> int32)."""
    import torch

    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)

        def mm() -> None:
            torch._int_mm(a, b)

    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)

        def mm() -> None:
            torch.mm(a, b, out=out)
            if device != "cpu":
                torch.cuda.synchronize()

    with torch.inference_mode():
        times = time_calls(mm, repeats, warmup=3)
    return 2.0 * n**3 / float(np.median(times)) / 1e9


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write figures as JSON, atomically (a temporary file next to `path`, then a rename over it: a reader
    never sees half a file); an unwritable path is a one-line VistError."""
    try:
        atomic_write(path, json.dumps(data, indent=2) + "\n")  # created with the usual permissions
    except OSError as exc:
        raise VistError(f"cannot write {path}: {exc.strerror or exc}") from None
