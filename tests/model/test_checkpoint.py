"""vist-rt's own checkpoint: safetensors + JSON config, validated on load."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vist_rt.errors import CheckpointError
from vist_rt.model import ViST, ViSTConfig, load_checkpoint, save_checkpoint

EXTRACTOR = {"kind": "patches", "image_size": 224, "grid": 10}


@pytest.fixture
def saved(tmp_path: Path, make_model, tiny):
    model = make_model(seed=4)
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        model,
        rf=rf,
        fps=30.0,
        extractor=EXTRACTOR,
        cell_ids=[f"c{i}" for i in range(tiny.cells)],
        units="spikes/s",
        command="vist-rt train ...",
    )
    return path, model, rf


def test_round_trip(saved, tiny) -> None:
    path, model, rf = saved
    ckpt = load_checkpoint(path)
    assert ckpt.config == tiny and not ckpt.model.training
    assert ckpt.fps == 30.0 and ckpt.units == "spikes/s"
    assert ckpt.extractor == EXTRACTOR
    assert ckpt.cell_ids == [f"c{i}" for i in range(tiny.cells)]
    assert ckpt.meta["command"] == "vist-rt train ..." and "vist_rt_version" in ckpt.meta
    assert torch.equal(ckpt.rf, rf)
    feats = torch.randn(1, 12, tiny.tokens, tiny.feature_dim)
    with torch.no_grad():
        assert torch.equal(ckpt.model(feats, ckpt.rf), model(feats, rf))
    # BatchNorm statistics travel too
    assert torch.equal(ckpt.model.stage1.layers[2].norm.running_var, model.stage1.layers[2].norm.running_var)


def test_the_file_is_plain_safetensors_with_a_json_config(saved, tiny) -> None:
    path, _, _ = saved
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["vist_rt"])
        assert "model.stage1.conv_1x1.weight" in fh.keys()  # noqa: SIM118 (safe_open has no __contains__)
        assert fh.get_tensor("rf").shape == (tiny.cells, tiny.grid, tiny.grid)
    assert header["format"] == "vist-rt/checkpoint" and header["version"] == 1
    assert header["model"] == tiny.to_dict() and header["fps"] == 30.0


def test_default_cell_ids_and_units(tmp_path: Path, make_model, tiny) -> None:
    path = save_checkpoint(tmp_path / "d.safetensors", make_model(), rf=torch.rand(1, 5, 10, 10), fps=25, extractor={})
    ckpt = load_checkpoint(path)
    assert ckpt.cell_ids == ["0", "1", "2", "3", "4"] and ckpt.units == "a.u."


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"fps": 0}, "fps must be a positive"),
        ({"fps": "fast"}, "fps must be a number"),
        ({"rf": torch.rand(4, 10, 10)}, r"rf must be \[5, 10, 10\]"),
        ({"cell_ids": ["a", "b"]}, "cell_ids has 2 entries but the model predicts 5"),
        ({"cell_ids": ["a"] * 5}, "not unique"),
        ({"extractor": "dinov2"}, "extractor must be a dict"),
        ({"fps": True}, "fps must be a number"),
        ({"cell_ids": {"a": 1}}, "cell_ids must be a list"),
        ({"when": object()}, "not JSON-serialisable"),
    ],
)
def test_save_rejects_bad_arguments(tmp_path: Path, make_model, kwargs, needle) -> None:
    args = {"rf": torch.rand(5, 10, 10), "fps": 30.0, "extractor": {}} | kwargs
    with pytest.raises(CheckpointError, match=needle):
        save_checkpoint(tmp_path / "x.safetensors", make_model(), **args)
    assert not (tmp_path / "x.safetensors").exists()


def test_unwritable_place_is_one_line(tmp_path: Path, make_model) -> None:
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(
            tmp_path / "no" / "x.safetensors", make_model(), rf=torch.rand(5, 10, 10), fps=30.0, extractor={}
        )


def test_truncated_and_corrupt_files(saved, tmp_path: Path) -> None:
    path, _, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_checkpoint(cut)
    assert "\n" not in str(err.value)
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(garbled)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite(path: Path, out: Path, header_edit=None, tensor_edit=None) -> Path:
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["vist_rt"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if header_edit:
        header_edit(header)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(out), metadata={"vist_rt": json.dumps(header)})
    return out


def test_mismatches_are_named_in_one_line(saved, tmp_path: Path) -> None:
    path, _, _ = saved

    def more_cells(h):
        h["model"]["cells"] = 6
        h["cell_ids"] = None

    with pytest.raises(CheckpointError, match=r"rf must be \[6, 10, 10\]"):
        load_checkpoint(_rewrite(path, tmp_path / "a.safetensors", header_edit=more_cells))

    def wider(t):
        t["model.stage1.conv_out.weight"] = torch.zeros(5, 9, 1, 1, 1)

    with pytest.raises(
        CheckpointError, match=r"model\.stage1\.conv_out\.weight is \[5,9,1,1,1\], expected \[5,8,1,1,1\]"
    ):
        load_checkpoint(_rewrite(path, tmp_path / "b.safetensors", tensor_edit=wider))

    def drop(t):
        del t["model.msb_5.bias"]

    with pytest.raises(CheckpointError, match=r"missing model\.msb_5\.bias"):
        load_checkpoint(_rewrite(path, tmp_path / "c.safetensors", tensor_edit=drop))
    with pytest.raises(CheckpointError, match="format version 7"):
        load_checkpoint(_rewrite(path, tmp_path / "d.safetensors", header_edit=lambda h: h.update(version=7)))
    with pytest.raises(CheckpointError, match="unknown ViSTConfig keys: depth"):
        load_checkpoint(_rewrite(path, tmp_path / "e.safetensors", header_edit=lambda h: h["model"].update(depth=3)))
    with pytest.raises(CheckpointError, match="table of settings, got list"):
        load_checkpoint(_rewrite(path, tmp_path / "g.safetensors", header_edit=lambda h: h.update(model=[1])))
    with pytest.raises(CheckpointError, match="windows must be lists of integers"):
        load_checkpoint(_rewrite(path, tmp_path / "h.safetensors", header_edit=lambda h: h["model"].update(windows=5)))

    def int_weights(t):
        t["model.msb_5.weight"] = t["model.msb_5.weight"].long()

    with pytest.raises(CheckpointError, match=r"not floating point: model\.msb_5\.weight is torch\.int64"):
        load_checkpoint(_rewrite(path, tmp_path / "i.safetensors", tensor_edit=int_weights))

    def huge(t):
        t["model.msb_5.bias"] = t["model.msb_5.bias"].double() * 1e300

    with pytest.raises(CheckpointError, match=r"NaN/inf .* model\.msb_5\.bias"):
        load_checkpoint(_rewrite(path, tmp_path / "j.safetensors", tensor_edit=huge))

    def negative_var(t):
        t["model.stage1.layers.1.norm.running_var"][0] = -1.0

    with pytest.raises(CheckpointError, match=r"negative variance.*layers\.1\.norm\.running_var"):
        load_checkpoint(_rewrite(path, tmp_path / "k.safetensors", tensor_edit=negative_var))
    with pytest.raises(CheckpointError, match="lacks 'fps'"):
        load_checkpoint(_rewrite(path, tmp_path / "f.safetensors", header_edit=lambda h: h.pop("fps")))


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a vist-rt checkpoint"):
        load_checkpoint(other)


def test_published_size_round_trip(tmp_path: Path) -> None:
    model = ViST(ViSTConfig()).eval()
    path = save_checkpoint(tmp_path / "p.safetensors", model, rf=torch.rand(90, 16, 16), fps=30, extractor={})
    ckpt = load_checkpoint(path)
    assert sum(p.numel() for p in ckpt.model.parameters()) == 1_702_952
