"""Tiny vist-rt ONNX files for the TensorRT tests (Linear + LayerNorm, input "pixels" -> output "tokens")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vist_rt.export.onnx import export_module

# The identity a CPU-only test uses instead of asking TensorRT and torch.cuda.
IDENTITY: dict[str, Any] = {
    "trt_version": "10.3.0",
    "gpu_name": "NVIDIA GeForce RTX 4090",
    "compute_capability": (8, 9),
}


class TinyFeatures(nn.Module):
    """[B, 3, 8, 8] -> [B, 16, 24] tokens: a patch projection then LayerNorm (what a ViT block ends with)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 24)
        self.norm = nn.LayerNorm(24)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        b = pixels.shape[0]
        patches = pixels.reshape(b, 3, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 16, 12)
        return self.norm(self.proj(patches))


def _export(path: Path, *, seed: int = 0, block: int = 0, dynamic: bool = False, kind: str = "features") -> Path:
    torch.manual_seed(seed)
    module = TinyFeatures().eval()
    with torch.no_grad():
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.uniform_(-0.2, 0.2)
    return export_module(
        module,
        (torch.randn(1, 3, 8, 8),),
        path,
        kind=kind,
        spec={"backbone": "test", "block": block, "image_size": 8},
        input_names=["pixels"],
        output_names=["tokens"],
        dynamic_axes={"pixels": {0: "batch"}, "tokens": {0: "batch"}} if dynamic else None,
    )


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static [1, 3, 8, 8] features graph (session-wide; copy it before changing it)."""
    return _export(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_dynamic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graph with a named dynamic batch dim ("batch")."""
    return _export(tmp_path_factory.mktemp("onnx") / "tiny_dyn.onnx", dynamic=True)


@pytest.fixture
def export_tiny() -> Callable[..., Path]:
    """export_tiny(path, seed=0, block=0, dynamic=False, kind="features") -> path."""
    return _export
