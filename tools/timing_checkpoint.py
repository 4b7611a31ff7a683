"""Write a Vi-ST checkpoint on a random, seeded DINOv2 ViT for timing the live pipeline (docs/benchmarks.md).

    python tools/timing_checkpoint.py OUT.safetensors [--backbone vits14] [--block -1] [--image-size 224]

The published model sizes (90 cells, 6 C3TCN layers, CMST windows) on the backbone's token width, random seeded
weights everywhere (the ViT's: `DINOv2Extractor(seed=...)`, its spec says RANDOM). Its cost per tick is a real
checkpoint's; its rates mean nothing. `vist-rt run --random-vit SEED` times a real checkpoint the same way.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from vist_rt.features import DINOv2Extractor
from vist_rt.model import ViST, ViSTConfig, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--backbone", default="vits14")
    ap.add_argument("--block", type=int, default=-1)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ext = DINOv2Extractor(args.backbone, block=args.block, image_size=args.image_size, seed=args.seed)
    cfg = dataclasses.replace(ViSTConfig(), feature_dim=ext.dim, grid=ext.spec["grid"])
    torch.manual_seed(args.seed)
    model = ViST(cfg).eval()
    g = cfg.grid
    centres = torch.rand(cfg.cells, 2, generator=torch.Generator().manual_seed(args.seed)) * (g - 1)
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    rf = torch.exp(-d2 / (2 * 1.5**2))  # a Gaussian RF per cell, sigma 1.5 tokens
    save_checkpoint(args.out, model, rf=rf, fps=30.0, extractor=ext.spec, timing_only=True)
    ext.close()
    print(f"{args.out}: {ext.describe()}, {cfg.cells} cells; for timing only")


if __name__ == "__main__":
    main()
