"""ViT-g's SwiGLU MLP: Hugging Face and Meta names convert to timm's packed SwiGLU exactly (small widths)."""

from __future__ import annotations

import torch
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer

from tests.features.replicas import hf_tokens, hub_state_dict, meta_state_dict
from vist_rt.features.weights import _hf_to_meta, _meta_to_timm


def _small_swiglu(registers: int):
    import transformers as tf

    torch.manual_seed(0)
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14)
    if registers:
        model = tf.Dinov2WithRegistersModel(
            tf.Dinov2WithRegistersConfig(use_swiglu_ffn=True, num_register_tokens=registers, **kw)
        )
    else:
        model = tf.Dinov2Model(tf.Dinov2Config(use_swiglu_ffn=True, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name or "token" in name:
                p.normal_(0, 0.3)
    hidden = (int(64 * 4 * 2 / 3) + 7) // 8 * 8  # DINOv2's SwiGLU width
    vit = VisionTransformer(
        img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4, init_values=1e-5, num_classes=0,
        mlp_ratio=2 * hidden / 64, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU,
        reg_tokens=registers, no_embed_class=bool(registers),
    )  # fmt: skip
    return model.eval(), vit.eval()


def test_swiglu_from_hub_and_meta_names():
    for registers in (0, 4):
        hf, vit = _small_swiglu(registers)
        x = torch.randn(2, 3, 56, 56)
        want = hf_tokens(hf, x, 1, registers)
        for tensors in (_hf_to_meta(hub_state_dict(hf)), meta_state_dict(hf, pretrain_grid=4)):
            vit.load_state_dict(_meta_to_timm(tensors), strict=True)
            with torch.no_grad():
                got = vit.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
            assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
