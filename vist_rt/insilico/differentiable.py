"""The whole path pixels -> features -> Vi-ST -> rates as one differentiable torch module."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, Extractor, PatchesExtractor
from vist_rt.features.backbones import PATCH
from vist_rt.model.checkpoint import Checkpoint

PRECISIONS = ("fp32", "bf16")


class PixelsToRates(nn.Module):
    """Frames float `[T, H, W]` (grey) or `[T, H, W, 3]` (RGB), values 0..255 -> predicted rates `[T, C]`.

    The same steps as a run: the preprocessing of the checkpoint's extractor (centre crop, resize to S x S,
    ImageNet normalisation), its tokens (pixel patches, or the DINOv2 module on torch), the offline Vi-ST. The
    resize is torch's (bicubic up, area down) on floats where a run uses OpenCV on uint8: identical when the
    frames are S x S already; otherwise close on smooth frames and further apart at sharp edges (the figures
    of a report are always computed through the run's own path). Only the input gets gradients.
    """

    def __init__(self, ckpt: Checkpoint, extractor: Extractor, size: tuple[int, int], precision: str = "fp32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise VistError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        spec = extractor.preprocess.spec
        if spec.crop != "center":
            raise VistError(f"in-silico stimuli need the centre crop; this checkpoint's features use {spec.crop!r}")
        if isinstance(extractor, DINOv2Extractor):
            if extractor.runtime["backend"] != "torch":
                raise VistError(
                    f"the {extractor.runtime['backend']} backend gives no gradients: "
                    "load the extractor with backend torch"
                )
            self.vit: nn.Module | None = extractor.module
            self.grey_patches = False
        elif isinstance(extractor, PatchesExtractor):
            self.vit = None
            self.grey_patches = extractor.channels == "grey"
        else:
            raise VistError(f"no gradients through the {type(extractor).__name__} here")
        self.model = ckpt.model
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("rf", ckpt.rf[None].float())
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)
        self.size = (int(size[0]), int(size[1]))
        h, w = self.size
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        visible = torch.zeros(h, w)
        visible[y0 : y0 + side, x0 : x0 + side] = 1.0
        self.register_buffer("visible", visible)  # [H, W] 1 where the model sees the frame (its centre crop)
        self.image_size = spec.image_size
        self.precision = precision
        self.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames `[T, H, W]` or `[T, H, W, 3]` (RGB) in 0..255 -> rates `[T, C]`."""
        if frames.ndim == 3:
            x = frames[:, None].expand(-1, 3, -1, -1)
        elif frames.ndim == 4 and frames.shape[-1] == 3:
            x = frames.permute(0, 3, 1, 2)
        else:
            raise VistError(f"frames must be [T, H, W] or [T, H, W, 3], got {list(frames.shape)}")
        if tuple(x.shape[2:]) != self.size:
            raise VistError(f"frames must be {self.size[0]}x{self.size[1]}, got {x.shape[2]}x{x.shape[3]}")
        h, w = self.size
        side, s = min(h, w), self.image_size
        y0, x0 = (h - side) // 2, (w - side) // 2
        x = x[:, :, y0 : y0 + side, x0 : x0 + side]
        if side > s:
            x = F.interpolate(x, size=(s, s), mode="area")
        elif side < s:
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        x = x * self.scale + self.shift  # [T, 3, S, S] normalised
        tokens = self._tokens(x)  # [T, N, D]
        return self.model(tokens[None].float(), self.rf)[0].T  # [T, C]

    def _tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vit is None:
            t, _, s, _ = pixels.shape
            g = s // PATCH
            if self.grey_patches:
                pixels = pixels.mean(dim=1, keepdim=True)
            c = pixels.shape[1]
            x = pixels.reshape(t, c, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5)
            return x.reshape(t, g * g, c * PATCH * PATCH)
        bf16 = self.precision == "bf16"
        with torch.autocast(pixels.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            return self.vit(pixels).float()
