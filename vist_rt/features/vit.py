"""The token-producing part of a DINOv2 ViT: pixels in, the patch tokens of one block out."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from vist_rt.errors import VistError
from vist_rt.features.backbones import PATCH, Backbone, build_vit
from vist_rt.tensorfile import tensors_sha256


def resolve_block(block: int, backbone: Backbone) -> int:
    """A 0-based block index (negative counts from the end) -> 0..depth-1, else a one-line error."""
    depth = backbone.depth
    if isinstance(block, numbers.Integral) and not isinstance(block, bool):
        block = int(block)
    if not isinstance(block, int) or isinstance(block, bool) or not -depth <= block < depth:
        raise VistError(
            f"block {block!r} is out of range for {backbone.title} ({depth} blocks: 0..{depth - 1} or -{depth}..-1)"
        )
    return block % depth


RANDOM_INITS = ("scaled", "timm")  # random weights: timm's init with every block's layer scales drawn, or timm's as is
LAYER_SCALE_STD = 0.3


def draw_layer_scales(vit: nn.Module, std: float = LAYER_SCALE_STD) -> None:
    """Every block's layer scales drawn |N(0, std)|, block by block from the first, from torch's global RNG.

    timm's initial 1e-5 leaves each block's output ~ its input: random tokens would then be ~ the patch embedding
    whatever the block, and a low-precision path would look exact. Trained DINOv2 scales are far from 1e-5."""
    with torch.no_grad():
        for blk in vit.blocks:
            for ls in (blk.ls1, blk.ls2):
                ls.gamma.copy_(torch.randn(ls.gamma.shape).abs_() * std)


class DINOv2Tokens(nn.Module):
    """pixels `[N, 3, S, S]` -> patch tokens `[N, (S/14)^2, D]` after block `block` (final norm only if `norm`).

    Only the blocks up to `block` exist (later ones are never computed). Position embeddings are
    fixed at `image_size` when built: nothing is interpolated at run time.
    """

    def __init__(
        self, backbone: Backbone, block: int, image_size: int = 224, norm: bool = False, full_init: bool = False
    ) -> None:
        """full_init: initialise all blocks, then drop the unused ones, so that random weights of a block do
        not depend on which block is chosen (slower; only random extractors need it)."""
        super().__init__()
        self.backbone = backbone
        self.block = resolve_block(block, backbone)
        self.image_size = image_size
        self.norm = norm
        self.vit = build_vit(backbone, image_size, depth=None if full_init else self.block + 1)
        if full_init:
            self.vit.prune_intermediate_layers([self.block], prune_norm=False, prune_head=True)
        self.vit.eval()

    @property
    def tokens(self) -> int:
        """Patch tokens per frame."""
        return (self.image_size // PATCH) ** 2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [N, 3, S, S] normalised RGB -> [N, tokens, D]."""
        out = self.vit.forward_intermediates(
            pixels, indices=[self.block], norm=self.norm, output_fmt="NLC", intermediates_only=True
        )
        return out[0]


def state_sha256(module: nn.Module) -> str:
    """Hex SHA-256 of a module's tensors: an identity of its weights."""
    return tensors_sha256(module.state_dict())
