"""Shared fixtures; gpu/trt tests skip cleanly with the reason."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest
import torch

from vist_rt.model import ViST, ViSTConfig
from vist_rt.model.vist import perturb

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


randomize = perturb  # a randomised ViST in eval mode: no term a no-op, unit-scale outputs


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
