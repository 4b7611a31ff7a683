"""Faithful replicas of the DINOv2 weight files people hold, written with random weights.

Hugging Face: a transformers Dinov2(WithRegisters)Model saved the way the Hub's facebook/dinov2-*
folders are (config.json + model.safetensors, the Hub's tensor names). Meta: the torch-hub
`.pth` names of facebookresearch/dinov2 (cls_token, pos_embed at 518 px = 37x37, register_tokens,
mask_token, blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1|w12,mlp.fc2|w3,ls2.gamma}, norm).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# transformers >= 5 renames the Hub's tensors on load; files on the Hub keep these names
HUB_NAMES = [
    ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.down_proj", "mlp.weights_out"),
]


def hf_model(dim: int = 384, depth: int = 12, heads: int = 6, registers: int = 0, image_size: int = 224, seed=0):
    """A random transformers DINOv2 model (eval mode)."""
    import transformers as tf

    torch.manual_seed(seed)
    kw = dict(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, image_size=image_size)
    kw["patch_size"] = 14
    if registers:
        model = tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw))
    else:
        model = tf.Dinov2Model(tf.Dinov2Config(**kw))
    with torch.no_grad():  # non-trivial layer scales and tokens (the defaults are ~1e-5 / zeros)
        for name, p in model.named_parameters():
            if "lambda1" in name or "token" in name or "position" in name:
                p.normal_(0, 0.3)
    return model.eval()


def hub_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the Hub files' names."""
    out: dict[str, torch.Tensor] = {}
    sd = model.state_dict()
    for k, v in sd.items():
        if ".mlp.gate_proj." in k:
            out[k.replace("mlp.gate_proj", "mlp.weights_in")] = torch.cat([v, sd[k.replace("gate_proj", "up_proj")]])
            continue
        if ".mlp.up_proj." in k:
            continue
        for new, old in HUB_NAMES:
            k = k.replace(new, old)
        out[k] = v.contiguous()
    return out


def write_hf_folder(model: nn.Module, folder: Path) -> Path:
    """A facebook/dinov2-*-style folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file(hub_state_dict(model), str(folder / "model.safetensors"))
    return folder


def meta_state_dict(model: nn.Module, pretrain_grid: int = 37) -> dict[str, torch.Tensor]:
    """The same weights under Meta's torch-hub names, with the position embedding of a 518-px model
    (bicubically enlarged from the model's own grid, standing in for Meta's 37x37 table)."""
    hub = hub_state_dict(model)
    out: dict[str, torch.Tensor] = {"mask_token": hub["embeddings.mask_token"]}
    out["cls_token"] = hub["embeddings.cls_token"]
    pos = hub["embeddings.position_embeddings"]
    g = math.isqrt(pos.shape[1] - 1)
    grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    big = torch.nn.functional.interpolate(grid, size=(pretrain_grid, pretrain_grid), mode="bicubic")
    out["pos_embed"] = torch.cat([pos[:, :1], big.permute(0, 2, 3, 1).reshape(1, pretrain_grid**2, -1)], dim=1)
    if "embeddings.register_tokens" in hub:
        out["register_tokens"] = hub["embeddings.register_tokens"]
    out["patch_embed.proj.weight"] = hub["embeddings.patch_embeddings.projection.weight"]
    out["patch_embed.proj.bias"] = hub["embeddings.patch_embeddings.projection.bias"]
    out["norm.weight"], out["norm.bias"] = hub["layernorm.weight"], hub["layernorm.bias"]
    layers = {int(m.group(1)) for k in hub if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    for i in sorted(layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k_, v = (hub[f"{p}attention.attention.{n}.{kind}"] for n in ("query", "key", "value"))
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([q, k_, v])
            out[f"blocks.{i}.attn.proj.{kind}"] = hub[f"{p}attention.output.dense.{kind}"]
            out[f"blocks.{i}.norm1.{kind}"] = hub[f"{p}norm1.{kind}"]
            out[f"blocks.{i}.norm2.{kind}"] = hub[f"{p}norm2.{kind}"]
            if f"{p}mlp.fc1.{kind}" in hub:
                out[f"blocks.{i}.mlp.fc1.{kind}"] = hub[f"{p}mlp.fc1.{kind}"]
                out[f"blocks.{i}.mlp.fc2.{kind}"] = hub[f"{p}mlp.fc2.{kind}"]
            else:
                out[f"blocks.{i}.mlp.w12.{kind}"] = hub[f"{p}mlp.weights_in.{kind}"]
                out[f"blocks.{i}.mlp.w3.{kind}"] = hub[f"{p}mlp.weights_out.{kind}"]
        out[f"blocks.{i}.ls1.gamma"] = hub[f"{p}layer_scale1.lambda1"]
        out[f"blocks.{i}.ls2.gamma"] = hub[f"{p}layer_scale2.lambda1"]
    return out


def meta_interpolate(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's own `interpolate_pos_encoding` for a grid*14 square input (facebookresearch/dinov2)."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    w0 = grid + 0.1
    patch = torch.nn.functional.interpolate(
        pos_embed[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2),
        scale_factor=(float(w0 / math.sqrt(n)), float(w0 / math.sqrt(n))),
        mode="bicubic",
    )
    return torch.cat([pos_embed[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def hf_tokens(model: nn.Module, pixels: torch.Tensor, block: int, registers: int = 0) -> torch.Tensor:
    """Reference: patch tokens after block `block` (0-based, no final norm) from transformers itself."""
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[block + 1][:, 1 + registers :]
