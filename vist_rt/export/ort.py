"""ONNX Runtime sessions with an explicit execution provider (never a silent fallback)."""

from __future__ import annotations

import os
from typing import Any

from vist_rt.errors import VistError, first_line

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def require_ort():  # type: ignore[no-untyped-def]
    """The onnxruntime module, or a one-line install hint."""
    try:
        import onnxruntime
    except ImportError:
        raise VistError('the ONNX Runtime backend needs the onnx extra: pip install "vist-rt[onnx]"') from None
    return onnxruntime


def make_session(path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None) -> Any:
    """An InferenceSession on exactly the requested device ("cpu" or "cuda"); error if that provider is missing."""
    ort = require_ort()
    if device not in PROVIDERS:
        raise VistError(f"ONNX Runtime device must be one of {sorted(PROVIDERS)}, got {device!r}")
    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise VistError(
            f"ONNX Runtime here has no {provider} (available: {', '.join(ort.get_available_providers())}); "
            + ("install onnxruntime-gpu" if device == "cuda" else "reinstall onnxruntime")
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=[provider])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise VistError(f"ONNX Runtime cannot load {path}: {first_line(exc)[:200]}") from None
    if session.get_providers()[0] != provider:
        raise VistError(f"ONNX Runtime did not take {provider} for {path} (got {session.get_providers()})")
    return session
