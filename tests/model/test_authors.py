"""Loading the authors' released Lightning checkpoint (a faithful replica written by the test)."""

import collections
from pathlib import Path

import pytest
import torch

from vist_rt.errors import CheckpointError
from vist_rt.model import ViST, ViSTConfig, from_authors_checkpoint, infer_config


def lightning_dict(model: ViST) -> dict:
    """What a Lightning .ckpt holds: the module under `net.`, plus training bookkeeping."""
    state = collections.OrderedDict(("net." + k, v.clone()) for k, v in model.state_dict().items())
    return {"epoch": 29, "global_step": 1440, "pytorch-lightning_version": "2.1.0", "state_dict": state}


def test_published_config_is_inferred_from_the_tensors() -> None:
    sd = {k: torch.empty(v.shape) for k, v in ViST().state_dict().items()}
    assert infer_config(sd) == ViSTConfig()


def test_load_from_ckpt_path_gives_the_same_model(tmp_path: Path, make_model, tiny) -> None:
    ref = make_model(seed=2)
    path = tmp_path / "epoch=29.ckpt"
    torch.save(lightning_dict(ref), path)
    model = from_authors_checkpoint(path)
    assert model.config == tiny and not model.training
    feats = torch.randn(1, 30, tiny.tokens, tiny.feature_dim)
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    with torch.no_grad():
        assert torch.equal(model(feats, rf), ref(feats, rf))


def test_load_from_dict_bare_state_dict_and_safetensors(tmp_path: Path, make_model, tiny) -> None:
    from safetensors.torch import save_file

    ref = make_model()
    assert from_authors_checkpoint(lightning_dict(ref)).config == tiny
    assert from_authors_checkpoint(lightning_dict(ref)["state_dict"]).config == tiny
    bare = {k: v.clone() for k, v in ref.state_dict().items()}
    assert from_authors_checkpoint(bare).config == tiny
    save_file({"net." + k: v.contiguous() for k, v in bare.items()}, str(tmp_path / "w.safetensors"))
    assert from_authors_checkpoint(tmp_path / "w.safetensors").config == tiny


def test_explicit_config_must_match(make_model) -> None:
    with pytest.raises(CheckpointError, match=r"net\.stage1\.conv_1x1\.weight is \[8,12,1,1,1\], expected"):
        from_authors_checkpoint(
            lightning_dict(make_model()), config=ViSTConfig(feature_dim=16, video_dim=8, cells=5, grid=10)
        )


def test_missing_and_wrong_tensors_are_named(make_model) -> None:
    ckpt = lightning_dict(make_model())
    del ckpt["state_dict"]["net.msb_2.mapping.bias"]
    ckpt["state_dict"]["net.msb_3.conv1x1.weight"] = torch.zeros(5, 5, 1, 1, 2)
    ckpt["state_dict"]["net.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        from_authors_checkpoint(ckpt)
    msg = str(err.value)
    assert "missing net.msb_2.mapping.bias" in msg
    assert "unexpected net.extra.weight" in msg
    assert "net.msb_3.conv1x1.weight is [5,5,1,1,2]" in msg
    assert "\n" not in msg


def test_nan_weights_and_foreign_files(tmp_path: Path, make_model) -> None:
    ckpt = lightning_dict(make_model())
    ckpt["state_dict"]["net.adaln.net.1.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match=r"NaN/inf \(or negative variance\) values in net\.adaln\.net\.1\.bias"):
        from_authors_checkpoint(ckpt)
    flat = lightning_dict(make_model())
    flat["state_dict"]["net.stage1.conv_1x1.weight"] = torch.zeros(8)
    with pytest.raises(CheckpointError, match="tensor shapes are not Vi-ST's"):
        from_authors_checkpoint(flat)
    with pytest.raises(CheckpointError, match="no Vi-ST tensors found"):
        from_authors_checkpoint({"state_dict": {"encoder.weight": torch.zeros(2)}})
    with pytest.raises(CheckpointError, match="not found"):
        from_authors_checkpoint(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        from_authors_checkpoint(junk)


class Hyper:  # stands in for a Lightning AttributeDict or any pickled object
    def __init__(self) -> None:
        self.lr = 8e-4


def test_arbitrary_objects_are_not_unpickled(tmp_path: Path, make_model) -> None:
    ckpt = lightning_dict(make_model())
    ckpt["hyper_parameters"] = Hyper()
    path = tmp_path / "with_objects.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"\(tests\.model\.test_authors\.Hyper\), which are not unpickled") as err:
        from_authors_checkpoint(path)
    assert "\n" not in str(err.value)
