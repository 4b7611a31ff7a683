"""DINOv2 weights in every file form people hold give the very features of the reference implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.features.replicas import (
    hf_model,
    hf_tokens,
    hub_state_dict,
    meta_interpolate,
    meta_state_dict,
    write_hf_folder,
)
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, WeightsError, read_weights

pytestmark = pytest.mark.slow  # ViT-S/14 replicas at full size


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("registers", [0, 4])
def test_huggingface_folder_matches_transformers(tmp_path, pixels, registers):
    model = hf_model(registers=registers)
    folder = write_hf_folder(model, tmp_path / "dinov2-small")
    backbone = "vits14_reg" if registers else "vits14"
    for block in (0, 5, -1):
        ext = DINOv2Extractor(backbone, folder, block=block)
        got = ext.tokens_from_pixels(pixels.numpy())
        want = hf_tokens(model, pixels, block % 12, registers)
        assert got.shape == (2, 256, 384)
        assert _rel(got, want) <= 1e-4, block
    assert ext.spec["weights"]["format"] == "huggingface" and ext.is_dinov2


@pytest.mark.parametrize("registers", [0, 4])
def test_meta_pth_at_518_resamples_like_dinov2_itself(tmp_path, pixels, registers):
    """Meta's file holds a 37x37 position table; DINOv2 interpolates it at run time, we once at load."""
    model = hf_model(registers=registers, seed=3)
    meta = meta_state_dict(model)
    torch.save(meta, tmp_path / "dinov2_vits14_pretrain.pth")
    with torch.no_grad():  # the reference: transformers with DINOv2's own interpolated table
        model.embeddings.position_embeddings.copy_(meta_interpolate(meta["pos_embed"], 16))
    backbone = "vits14_reg" if registers else "vits14"
    ext = DINOv2Extractor(backbone, tmp_path / "dinov2_vits14_pretrain.pth", block=3)
    assert _rel(ext.tokens_from_pixels(pixels.numpy()), hf_tokens(model, pixels, 3, registers)) <= 1e-4
    assert ext.spec["weights"]["format"] == "meta"


def test_every_format_gives_the_same_features_and_identity(tmp_path, pixels):
    model = hf_model(seed=5)
    write_hf_folder(model, tmp_path / "hf")
    meta = meta_state_dict(model, pretrain_grid=16)  # same grid: no resampling anywhere
    torch.save(meta, tmp_path / "meta.pth")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in meta.items()}}, tmp_path / "train_ckpt.pth")
    timm_like = {k: v for k, v in meta.items() if k != "mask_token"}  # timm's names = Meta's, minus mask_token
    save_file(timm_like, str(tmp_path / "timm.safetensors"))
    torch.save(timm_like, tmp_path / "pytorch_model.bin")
    paths = ["hf", "meta.pth", "train_ckpt.pth", "timm.safetensors", "pytorch_model.bin"]
    weights = [read_weights(tmp_path / p) for p in paths]
    assert [w.source_format for w in weights] == ["huggingface", "meta", "meta", "timm", "timm"]
    assert len({w.sha256 for w in weights}) == 1
    outs = [DINOv2Extractor("vits14", tmp_path / p, block=2).tokens_from_pixels(pixels.numpy()) for p in paths]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=0, atol=1e-5)


def test_checkpoints_with_heads_prefixes_and_classifiers(tmp_path, pixels):
    """Real training checkpoints hold DINO/iBOT heads and both networks; HF classifiers add a head."""
    model = hf_model(seed=6)
    meta = meta_state_dict(model, pretrain_grid=16)
    want = DINOv2Extractor("vits14", write_hf_folder(model, tmp_path / "hf"), block=1)(np.zeros((8, 8), np.uint8))
    heads = {"dino_head.mlp.0.weight": torch.zeros(4, 4), "ibot_head.last_layer.weight": torch.zeros(4, 4)}
    noise = {k: torch.randn_like(v) for k, v in meta.items()}
    files = {
        "teacher.pth": {"teacher": {**{f"backbone.{k}": v for k, v in meta.items()}, **heads}},
        "both.pth": {"model": {**{f"student.backbone.{k}": v for k, v in noise.items()},
                               **{f"teacher.backbone.{k}": v for k, v in meta.items()}}},
        "ddp.pth": {f"backbone.module.{k}": v for k, v in meta.items()},
        "compiled.pth": {f"_orig_mod.{k}": v for k, v in meta.items()},
    }  # fmt: skip
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        got = DINOv2Extractor("vits14", tmp_path / name, block=1)(np.zeros((8, 8), np.uint8))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=name)
    hf = hub_state_dict(model)
    cls_dir = tmp_path / "cls"
    cls_dir.mkdir()
    (cls_dir / "config.json").write_text(json.dumps({**model.config.to_dict(), "model_type": "dinov2"}))
    save_file({**{f"dinov2.{k}": v for k, v in hf.items()}, "classifier.weight": torch.zeros(3, 768)},
              str(cls_dir / "model.safetensors"))  # fmt: skip
    assert read_weights(cls_dir).sha256 == read_weights(tmp_path / "teacher.pth").sha256


def test_a_vit_that_is_not_dinov2_is_called_so(tmp_path):
    import timm

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit16.safetensors"))
    with pytest.raises(WeightsError, match=r"ViT/16 .*not a DINOv2 backbone"):
        DINOv2Extractor("vits14", tmp_path / "vit16.safetensors")


def test_wrong_backbone_names_both(tmp_path):
    folder = write_hf_folder(hf_model(), tmp_path / "small")
    with pytest.raises(WeightsError, match=r"ViT-S/14 \(384-dim.*backbone vits14.*not DINOv2 ViT-B/14") as exc:
        DINOv2Extractor("vitb14", folder)
    assert "\n" not in str(exc.value)
    with pytest.raises(WeightsError, match="4 registers"):
        DINOv2Extractor("vits14_reg", folder)


def test_unreadable_and_foreign_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_weights(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable PyTorch file"):
        read_weights(tmp_path / "junk.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"cls_token": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"not unpickled for safety"):
        read_weights(tmp_path / "evil.pth")
    torch.save({"stage1.conv_1x1.weight": torch.zeros(2, 2)}, tmp_path / "vist.ckpt")
    with pytest.raises(WeightsError, match="does not hold DINOv2 weights"):
        read_weights(tmp_path / "vist.ckpt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(WeightsError, match="not a Hugging Face model folder"):
        read_weights(tmp_path / "folder")


def test_no_weights_needs_an_explicit_seed():
    with pytest.raises(VistError, match="random, seeded"):
        DINOv2Extractor("vits14")
    with pytest.raises(VistError, match="not both"):
        DINOv2Extractor("vits14", "x.pth", seed=0)
