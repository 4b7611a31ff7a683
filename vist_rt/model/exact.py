"""IEEE float32 on CUDA for the temporal model: no TF32 in cuDNN convolutions or cuBLAS matmuls.

PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs (10-bit mantissa), which
moves a streamed step ~1e-3 away from the float32 model. The temporal model is meant to be exact, so
its steps, its CUDA-graph capture and the tests' offline reference run inside `exact_fp32()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch


@contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for cuDNN and cuBLAS inside the block; the caller's settings restored after."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


def exact_context(device: torch.device) -> Callable[[], AbstractContextManager[None]]:
    """The context a model on `device` steps in: `exact_fp32` on CUDA, `nullcontext` elsewhere."""
    return exact_fp32 if device.type == "cuda" else nullcontext
