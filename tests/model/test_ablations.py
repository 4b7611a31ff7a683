"""The model's ablation switches: an ablated model really lacks the module, is saved as such, and every streaming
implementation of the step still equals the offline model over more than the receptive field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, randomize
from tests.model.test_streaming import TOL, offline, stream_all
from vist_rt.errors import VistError
from vist_rt.model import DeviceStreamingViST, NativeStreamingViST, StreamingViST, ViST, ViSTConfig
from vist_rt.model.checkpoint import load_checkpoint, save_checkpoint
from vist_rt.model.config import ABLATIONS
from vist_rt.model.step_graph import OnnxStreamingViST

CASES = [(name,) for name in ABLATIONS] + [tuple(ABLATIONS)]
has_cc = shutil.which("cc") is not None or shutil.which("gcc") is not None


def ablated(names: tuple[str, ...]) -> tuple[ViST, torch.Tensor, torch.Tensor]:
    """A randomised ablated TINY model, two RF sets, and features over more than 183 frames (and 3 receptive
    fields of the ablated model)."""
    cfg = TINY.ablate(*names)
    torch.manual_seed(4)
    model = randomize(ViST(cfg), 4)
    gen = torch.Generator().manual_seed(1)
    t = max(200, 3 * cfg.receptive_field + 11)
    feats = torch.randn(2, t, cfg.tokens, cfg.feature_dim, generator=gen)
    rf = torch.rand(2, cfg.cells, cfg.grid, cfg.grid, generator=gen)
    return model, feats, rf


def test_an_ablated_model_lacks_the_module() -> None:
    full = dict(ViST(TINY).named_parameters())
    no_tcn = dict(ViST(TINY.ablate("no-c3tcn")).named_parameters())
    no_rf = dict(ViST(TINY.ablate("no-rf")).named_parameters())
    single = ViST(TINY.ablate("single-window"))
    assert any(k.startswith("stage1.layers.") for k in full) and not any(k.startswith("stage1.layers.") for k in no_tcn)
    assert any(k.startswith("adaln.") for k in full) and not any(k.startswith("adaln.") for k in no_rf)
    assert all(len(ws) == 1 for ws in single.config.windows) and len(single.blocks) == len(TINY.windows)
    assert len(no_tcn) < len(full) and len(no_rf) < len(full)
    assert TINY.ablate(*ABLATIONS).ablations == tuple(ABLATIONS) and TINY.ablations == ()
    with pytest.raises(VistError, match="unknown ablation 'no-vit'"):
        TINY.ablate("no-vit")


def test_without_rf_conditioning_the_rf_changes_nothing() -> None:
    model, feats, rf = ablated(("no-rf",))
    with torch.no_grad():
        a, b = model(feats[:, :40], rf), model(feats[:, :40], rf.flip(0))
    assert torch.equal(a, b)
    full, _, _ = ablated(())
    with torch.no_grad():
        assert not torch.equal(full(feats[:, :40], rf), full(feats[:, :40], rf.flip(0)))


@pytest.mark.parametrize("names", CASES, ids="+".join)
def test_an_ablated_checkpoint_round_trips(names: tuple[str, ...], tmp_path: Path) -> None:
    model, feats, rf = ablated(names)
    save_checkpoint(tmp_path / "m.safetensors", model, rf=rf[0], fps=30.0, extractor={"kind": "patches"},
                    cell_ids=[f"c{i}" for i in range(TINY.cells)])  # fmt: skip
    back = load_checkpoint(tmp_path / "m.safetensors")
    assert back.config == model.config and back.config.ablations == names
    with torch.no_grad():
        assert torch.equal(back.model(feats[:, :30], rf), model(feats[:, :30], rf))
    assert ViSTConfig.from_dict(model.config.to_dict()) == model.config


@pytest.mark.parametrize("names", CASES, ids="+".join)
def test_every_step_implementation_equals_offline(names: tuple[str, ...], tmp_path: Path) -> None:
    model, feats, rf = ablated(names)
    want = offline(model, feats, rf)
    assert want.std() > 0.3
    streams = {
        "torch": StreamingViST.from_model(model, rf),
        "device (cpu)": DeviceStreamingViST.from_model(model, rf),
        "onnx": OnnxStreamingViST.from_model(model, rf, path=tmp_path / "step.onnx"),
    }
    if has_cc:
        streams["native"] = NativeStreamingViST.from_model(model, rf, cache_dir=tmp_path / "native")
    for name, stream in streams.items():
        got = stream_all(stream, feats)
        assert got.shape == want.shape, name
        assert (got - want).abs().max() <= TOL, name


@pytest.mark.gpu
@pytest.mark.parametrize("names", CASES, ids="+".join)
def test_the_cuda_graph_step_equals_offline(names: tuple[str, ...]) -> None:
    model, feats, rf = ablated(names)
    model, feats, rf = model.cuda(), feats.cuda(), rf.cuda()
    want = offline(model, feats, rf)
    got = stream_all(DeviceStreamingViST.from_model(model, rf), feats)
    assert (got - want).abs().max() <= TOL
