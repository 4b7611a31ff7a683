"""Shared fixtures; gpu/trt tests skip cleanly with the reason."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
import torch

from vist_rt.model import ViST, ViSTConfig

# Small widths, but the published temporal structure (6 dilated layers, the four CMST window lists).
TINY = ViSTConfig(feature_dim=12, video_dim=8, cells=5, grid=10)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = pytest.mark.skip(reason="needs a CUDA device; none is visible (torch.cuda.is_available() is False)")
    no_trt = pytest.mark.skip(reason="needs TensorRT (the 'tensorrt' module is not installed on this machine)")
    has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(no_gpu)
        if item.get_closest_marker("trt") and not has_trt:
            item.add_marker(no_trt)


def randomize(model: ViST, seed: int = 0) -> ViST:
    """Give a model non-trivial BatchNorm statistics and a non-zero AdaLN, so that no term is a no-op."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
        for layer in model.stage1.layers:
            n = layer.norm
            n.running_mean.copy_(torch.randn(n.running_mean.shape, generator=gen) * 0.3)
            n.running_var.copy_(torch.rand(n.running_var.shape, generator=gen) + 0.5)
            n.weight.copy_(1 + 0.3 * torch.randn(n.weight.shape, generator=gen))
        if model.adaln is not None:  # (the no-rf ablation has none)
            mod = model.adaln.adaLN_modulation[1]
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * 0.3)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.3)
        # scale the readout so that outputs are unit-scale (the tolerance of the golden tests assumes it)
        cfg = model.config
        model.eval()
        probe = model(
            torch.randn(1, 64, cfg.tokens, cfg.feature_dim, generator=gen),
            torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=gen),
        )
        std = float(probe.std())
        model.readout.weight.div_(std)
        model.readout.bias.div_(std)
    return model


@pytest.fixture
def make_model() -> Callable[..., ViST]:
    """make_model(cfg=TINY, seed=0) -> a randomised ViST in eval mode."""

    def make(cfg: ViSTConfig = TINY, seed: int = 0) -> ViST:
        torch.manual_seed(seed)
        return randomize(ViST(cfg), seed)

    return make


@pytest.fixture
def tiny() -> ViSTConfig:
    return TINY


@pytest.fixture(scope="session")
def run_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny checkpoint `vist-rt run` can load (grey pixel patches, 10x10 grid, 5 cells, 30 Hz)."""
    from tests.runtime.helpers import make_run_checkpoint

    return make_run_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def dinov2_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """(checkpoint, weights folder): the tiny run checkpoint on DINOv2 ViT-S/14 block 0 features of a replica."""
    from tests.runtime.helpers import make_dinov2_checkpoint

    return make_dinov2_checkpoint(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="session")
def colour_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """The tiny run checkpoint on colour (RGB) pixel patches: swapping two channels changes its rates."""
    from tests.runtime.helpers import make_run_checkpoint

    return make_run_checkpoint(tmp_path_factory.mktemp("ckpt") / "colour.safetensors", channels="rgb")
