"""PyTorch backend: CPU or CUDA, fp32/fp16/bf16, and a CUDA graph for the one-frame call on GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from vist_rt.errors import VistError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend:
    """Runs the token module with PyTorch; for N = 1 on CUDA, replays a captured CUDA graph."""

    name = "torch"

    def __init__(
        self, module: nn.Module, *, device: str = "cpu", precision: str = "fp32", cuda_graphs: bool = True
    ) -> None:
        if device == "cpu" and precision == "fp16":
            raise VistError("fp16 is not supported on CPU: use --precision bf16 or fp32 (or a CUDA device)")
        self.device, self.precision = device, precision
        self.dtype = DTYPES[precision]
        self.module = module.to(device=device, dtype=self.dtype).eval()
        self.graph: torch.cuda.CUDAGraph | None = None
        if device == "cuda" and cuda_graphs:
            self._capture()

    def _capture(self) -> None:
        """Capture the one-frame call into a CUDA graph (warm-up on a side stream first, as PyTorch requires)."""
        size = self.module.image_size  # type: ignore[attr-defined]
        self.static_in = torch.zeros(1, 3, size, size, device="cuda", dtype=self.dtype)
        self.staging = torch.zeros(1, 3, size, size, dtype=self.dtype).pin_memory()  # converted on the host
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                self.module(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_out = self.module(self.static_in).float()
        self.host_out = torch.empty(self.static_out.shape, dtype=torch.float32).pin_memory()

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: float32 [N, 3, S, S] -> float32 [N, T, D]."""
        x = torch.from_numpy(pixels)
        if self.graph is not None and x.shape[0] == 1:
            self.staging.copy_(x)
            self.static_in.copy_(self.staging, non_blocking=True)
            self.graph.replay()
            self.host_out.copy_(self.static_out, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return self.host_out.numpy().copy()  # callers keep results: never hand out the buffer
        out = self.module(x.to(device=self.device, dtype=self.dtype))
        return out.to(device="cpu", dtype=torch.float32).numpy()

    def close(self) -> None:
        """Drop the captured graph."""
        self.graph = None


def create(
    module: nn.Module, *, device: str, precision: str, cuda_graphs: bool, threads: int | None, **_: Any
) -> TorchBackend:
    """Factory entry point (see vist_rt.features.backends.make_backend); `threads` sets torch's CPU threads."""
    del _
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend(module, device=device, precision=precision, cuda_graphs=cuda_graphs)
