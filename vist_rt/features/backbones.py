"""The DINOv2 backbones, defined through timm (no hand-written ViT)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vist_rt.errors import VistError

PATCH = 14


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One DINOv2 architecture: its timm name and the facts used to recognise its weights."""

    name: str  # ours: vits14, vitb14, vitl14, vitg14, with "_reg" for the 4-register variants
    timm_name: str
    title: str  # human name, e.g. "ViT-L/14"
    dim: int
    depth: int
    registers: int
    swiglu: bool

    def describe(self) -> str:
        """E.g. 'ViT-L/14 (1024-dim, 24 blocks, no registers)'."""
        regs = f"{self.registers} registers" if self.registers else "no registers"
        return f"{self.title} ({self.dim}-dim, {self.depth} blocks, {regs})"


def _table() -> dict[str, Backbone]:
    sizes = {
        "vits14": ("vit_small_patch14", "ViT-S/14", 384, 12, False),
        "vitb14": ("vit_base_patch14", "ViT-B/14", 768, 12, False),
        "vitl14": ("vit_large_patch14", "ViT-L/14", 1024, 24, False),
        "vitg14": ("vit_giant_patch14", "ViT-g/14", 1536, 40, True),
    }
    out: dict[str, Backbone] = {}
    for name, (stem, title, dim, depth, swiglu) in sizes.items():
        out[name] = Backbone(name, f"{stem}_dinov2", title, dim, depth, 0, swiglu)
        out[f"{name}_reg"] = Backbone(f"{name}_reg", f"{stem}_reg4_dinov2", title, dim, depth, 4, swiglu)
    return out


BACKBONES: dict[str, Backbone] = _table()


def get_backbone(name: str) -> Backbone:
    """The backbone called `name` (accepts 'dinov2_' prefixes and '_reg4'), else a one-line error."""
    key = name.lower().removeprefix("dinov2_").replace("_reg4", "_reg")
    if key not in BACKBONES:
        raise VistError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[key]


def build_vit(backbone: Backbone, image_size: int, depth: int | None = None) -> nn.Module:
    """A timm VisionTransformer for `backbone` whose position embedding is fixed at `image_size`.

    `depth` keeps only the first blocks (the later ones are never computed). Weights are timm's
    default initialisation: load real ones with `vist_rt.features.weights`.
    """
    import timm

    if image_size % PATCH:
        raise VistError(f"image size must be a multiple of {PATCH}, got {image_size}")
    return timm.create_model(
        backbone.timm_name,
        pretrained=False,
        img_size=image_size,
        num_classes=0,
        depth=depth if depth is not None else backbone.depth,
        dynamic_img_size=False,
    )


def resample_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch position embeddings `[1, M*M, D]` -> `[1, grid*grid, D]`, as DINOv2 itself does it at run time.

    DINOv2 (`interpolate_pos_encoding`) resizes bicubically with scale factor (grid + 0.1) / M, no
    antialiasing, in float32; doing the same once at load time gives the very features its own
    code gives for a `grid * 14` input.
    """
    n = pos.shape[1]
    m = round(n**0.5)
    if m * m != n:
        raise VistError(f"position embedding with {n} patch positions is not a square grid")
    if m == grid:
        return pos
    dim = pos.shape[-1]
    x = pos.float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
    scale = (grid + 0.1) / m
    x = torch.nn.functional.interpolate(x, scale_factor=(scale, scale), mode="bicubic", align_corners=False)
    if x.shape[-2:] != (grid, grid):
        raise VistError(f"cannot resample a {m}x{m} position embedding to {grid}x{grid}")
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos.dtype)
