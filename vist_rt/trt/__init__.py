"""TensorRT backend: engines compiled from vist-rt ONNX files, cached by a key, run on torch CUDA tensors.

Nothing here imports `tensorrt` at import time; the functions that need it import it and, when it is
missing, fail with one line: pip install "vist-rt[tensorrt]" (needs an NVIDIA GPU and CUDA).
"""

from vist_rt.trt.build import build_engine, fp32_layers, get_or_build
from vist_rt.trt.cache import EngineCache, EngineKey, device_identity, engine_key, resolve_profile
from vist_rt.trt.runner import TensorRTRunner

__all__ = [
    "EngineCache",
    "EngineKey",
    "TensorRTRunner",
    "build_engine",
    "device_identity",
    "engine_key",
    "fp32_layers",
    "get_or_build",
    "resolve_profile",
]
