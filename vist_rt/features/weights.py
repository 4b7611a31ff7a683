"""DINOv2 weights from the files people hold, converted to timm's names, checked, and identified.

Accepted: Meta's torch-hub `.pth` (e.g. dinov2_vitl14_pretrain.pth, also inside a training
checkpoint's `teacher`/`model`), timm's `.safetensors`/`.bin`, and a Hugging Face
`facebook/dinov2-*` folder (config.json + model.safetensors, in the Hub's names or the renamed
ones of transformers >= 5). Torch files are read with `weights_only`; nothing else is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vist_rt.errors import VistError
from vist_rt.features.backbones import BACKBONES, PATCH, Backbone, resample_pos_embed
from vist_rt.model.tensors import mismatch_report
from vist_rt.tensorfile import read_tensor_file, tensors_sha256

WRAPPERS = ("teacher", "model", "state_dict", "student")


class WeightsError(VistError):
    """Weights that cannot be read, or are not the backbone asked for."""


@dataclasses.dataclass(frozen=True)
class Weights:
    """DINOv2 weights in timm's names (position embedding at the file's own grid)."""

    tensors: dict[str, torch.Tensor]
    source_format: str  # "meta", "timm" or "huggingface"
    path: Path
    sha256: str  # of the converted tensors: the same weights give the same hash in every file format

    @property
    def found(self) -> str:
        """What the file holds, in words."""
        return describe_tensors(self.tensors)

    def backbone(self) -> Backbone | None:
        """The backbone these weights are for, if it is one we know."""
        return _match(self.tensors)


def _architecture(t: Mapping[str, torch.Tensor]) -> tuple[int, int, int, bool, int, bool]:
    """(dim, depth, registers, SwiGLU, patch size, layer scale): what tells DINOv2 backbones apart."""
    dim = int(t["cls_token"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"blocks\.(\d+)\.", k)))
    registers = int(t["reg_token"].shape[1]) if "reg_token" in t else 0
    fc1, fc2 = t["blocks.0.mlp.fc1.weight"], t["blocks.0.mlp.fc2.weight"]
    patch = int(t["patch_embed.proj.weight"].shape[-1]) if "patch_embed.proj.weight" in t else 0
    return dim, depth, registers, bool(fc1.shape[0] == 2 * fc2.shape[1]), patch, "blocks.0.ls1.gamma" in t


def describe_tensors(t: Mapping[str, torch.Tensor]) -> str:
    """E.g. 'DINOv2 ViT-B/14 (768-dim, 12 blocks, no registers)' or the raw architecture if unknown."""
    b = _match(t)
    if b is not None:
        return f"DINOv2 {b.describe()} weights (backbone {b.name})"
    dim, depth, regs, swiglu, patch, scale = _architecture(t)
    mlp = "SwiGLU" if swiglu else "MLP"
    extra = "" if scale else ", no layer scale"
    return f"a {dim}-dim, {depth}-block ViT/{patch} with {regs} registers and {mlp}{extra} (not a DINOv2 backbone)"


def _match(t: Mapping[str, torch.Tensor]) -> Backbone | None:
    """The DINOv2 backbone these tensors are for, if any."""
    arch = _architecture(t)
    for b in BACKBONES.values():
        if (b.dim, b.depth, b.registers, b.swiglu, PATCH, True) == arch:
            return b
    return None


def _unwrap(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The ViT's own tensors, whatever they are wrapped in: a `teacher`/`model`/`state_dict` dict, and
    any key prefix (`backbone.`, `teacher.backbone.`, `module.`, `_orig_mod.`, HF's `dinov2.`), next to
    other tensors (DINO/iBOT heads, a classifier) that are dropped. The teacher is preferred to the student."""
    for key in WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    marks = [k for k in tensors if k == "cls_token" or k.endswith(".cls_token")]
    if not marks:
        return tensors
    mark = min(marks, key=lambda k: ("teacher" not in k, len(k)))
    prefix = mark[: -len("cls_token")]
    prefix = prefix.removesuffix("embeddings.")  # Hugging Face names start at embeddings.
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _hf_to_meta(t: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face Dinov2(WithRegisters)Model names -> Meta's names."""
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "embeddings.cls_token": "cls_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    layer = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.output.dense": "attn.proj",
        "attention.o_proj": "attn.proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.weights_in": "mlp.w12",
        "mlp.weights_out": "mlp.w3",
        "mlp.down_proj": "mlp.w3",
    }
    qkv = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2}
    qkv |= {"attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}
    parts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    gate_up: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for k, v in t.items():
        if k in fixed:
            out[fixed[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", k)
        if m is None:
            continue  # mask_token, pooler: not part of the features
        i, name, kind = int(m.group(1)), m.group(2), m.group(3)
        if name in ("layer_scale1", "layer_scale2"):
            out[f"blocks.{i}.ls{name[-1]}.gamma"] = v
        elif name in layer:
            out[f"blocks.{i}.{layer[name]}.{kind}"] = v
        elif name in qkv:
            parts.setdefault((i, kind), {})[qkv[name]] = v
        elif name in ("mlp.gate_proj", "mlp.up_proj"):
            gate_up.setdefault((i, kind), {})[0 if name == "mlp.gate_proj" else 1] = v
        else:
            raise WeightsError(f"unknown Hugging Face DINOv2 tensor {k}")
    for (i, kind), p in parts.items():
        if len(p) != 3:
            raise WeightsError(f"layer {i} lacks one of query/key/value {kind}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([p[0], p[1], p[2]])
    for (i, kind), p in gate_up.items():
        if len(p) != 2:
            raise WeightsError(f"layer {i} lacks one of gate_proj/up_proj {kind}")
        out[f"blocks.{i}.mlp.w12.{kind}"] = torch.cat([p[0], p[1]])
    return out


def _meta_to_timm(t: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's names -> timm's (as timm's own DINOv2 conversion: registers and cls stay off the pos grid)."""
    t = dict(t)
    out: dict[str, torch.Tensor] = {}
    t.pop("mask_token", None)
    if "register_tokens" in t:
        out["reg_token"] = t.pop("register_tokens")
        pos = t.pop("pos_embed")
        out["cls_token"] = t.pop("cls_token") + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    for k, v in t.items():
        out[re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k))] = v
    return out


def read_weights(path: str | Path) -> Weights:
    """Read DINOv2 weights from a file or Hugging Face folder; one-line WeightsError if that fails."""
    path = Path(path)
    fmt = None
    if path.is_dir():
        config = path / "config.json"
        files = [path / "model.safetensors", path / "pytorch_model.bin"]
        found = next((f for f in files if f.is_file()), None)
        if not config.is_file() or found is None:
            raise WeightsError(f"{path} is not a Hugging Face model folder (needs config.json and model.safetensors)")
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise WeightsError(f"{config} is not a JSON object") from None
        if model_type not in ("dinov2", "dinov2_with_registers"):
            raise WeightsError(f"{path} holds a Hugging Face {model_type!r} model, not DINOv2")
        tensors = _unwrap(read_tensor_file(found, "DINOv2 weights", WeightsError))
    elif not path.exists():
        raise WeightsError(f"DINOv2 weights not found: {path}")
    else:
        tensors = _unwrap(read_tensor_file(path, "DINOv2 weights", WeightsError))
    if any(k.startswith("embeddings.") for k in tensors):
        tensors, fmt = _hf_to_meta(tensors), "huggingface"
    if "cls_token" not in tensors or "blocks.0.mlp.fc1.weight" not in _meta_to_timm(tensors):
        some = ", ".join(sorted(tensors)[:4]) or "no tensors"
        raise WeightsError(f"{path} does not hold DINOv2 weights (found {some})")
    if fmt is None:
        fmt = "timm" if "reg_token" in tensors or "mask_token" not in tensors else "meta"
    timm_tensors = _meta_to_timm(tensors)
    return Weights(timm_tensors, fmt, path, tensors_sha256(timm_tensors))


def load_into(vit: nn.Module, weights: Weights, backbone: Backbone, image_size: int) -> None:
    """Copy `weights` into a timm ViT built for `backbone` (maybe with fewer blocks); position embedding
    resampled once to `image_size`. A file for another backbone is a one-line WeightsError."""
    if weights.backbone() != backbone:
        raise WeightsError(f"{weights.path} holds {weights.found}, not DINOv2 {backbone.describe()}")
    t = dict(weights.tensors)
    keep = len(vit.blocks)  # type: ignore[arg-type]
    t = {k: v for k, v in t.items() if not (m := re.match(r"blocks\.(\d+)\.", k)) or int(m.group(1)) < keep}
    grid = image_size // PATCH
    pos = t["pos_embed"]
    cls_rows = 0 if backbone.registers else 1  # timm keeps the class token's row only without registers
    t["pos_embed"] = torch.cat([pos[:, :cls_rows], resample_pos_embed(pos[:, cls_rows:], grid)], dim=1)
    problem = mismatch_report(t, vit)
    if problem:
        raise WeightsError(f"{weights.path} does not fit DINOv2 {backbone.describe()}: {problem}")
    vit.load_state_dict(t, strict=True)
