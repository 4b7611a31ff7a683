"""Latency summaries in the field's convention: min / p50 / p90 / p99 / max and jitter (p99 - p50), in ms."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.errors import VistError


def summarize(samples_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Durations in seconds -> {n, min, p50, p90, p99, max, mean, jitter} in milliseconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise VistError("no samples to summarise")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size),
        "min": float(ms.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
        "jitter": float(p99 - p50),
    }


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
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
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


def matmul_gflops(n: int = 1024, repeats: int = 30, device: str = "cpu") -> float:
    """This machine's float32 matmul rate: median GFLOP/s of an n x n x n product."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)

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
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # created with the usual permissions
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise VistError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
