"""Command-line options shared by several subcommands (feature extractor, backend)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS
from vist_rt.errors import VistError


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum, else a usage error (exit 2, no traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def float_in(low: float, high: float = math.inf, *, open_low: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] ((low, high] with open_low), else a usage error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > low if open_low else value >= low) and value <= high):
            bound = f"{'>' if open_low else '>='} {low:g}" if high == math.inf else (
                f"in {'(' if open_low else '['}{low:g}, {high:g}]"
            )  # fmt: skip
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        return value

    return parse


# the one default of `features`, `train` and `export` (a feature cache filled with the defaults of one is the
# other's): grey pixel patches run anywhere, with no weights to fetch; DINOv2 is `--extractor dinov2`
DEFAULT_EXTRACTOR = "patches"
DEFAULT_PATCH_CHANNELS = "grey"


def add_extractor_args(
    p: argparse.ArgumentParser,
    *,
    default_backbone: str = "vitl14",
    default_extractor: str = DEFAULT_EXTRACTOR,
    default_patch_channels: str = DEFAULT_PATCH_CHANNELS,
) -> None:
    """--extractor, --backbone, --vit-weights / --random-vit, --block, --norm, --image-size, --crop,
    --patch-channels."""
    g = p.add_argument_group("feature extractor")
    g.add_argument("--extractor", choices=("dinov2", "patches"), default=default_extractor,
                   help=f"default: {default_extractor}")  # fmt: skip
    patch_help = f"--extractor patches: rgb or grey 14x14 patches (default {default_patch_channels})"
    g.add_argument("--patch-channels", choices=("rgb", "grey"), default=None, help=patch_help)
    p.set_defaults(patch_channels_default=default_patch_channels)
    g.add_argument("--backbone", default=None, help=f"DINOv2 backbone (default {default_backbone})")
    p.set_defaults(backbone_default=default_backbone)
    w = g.add_mutually_exclusive_group()
    w.add_argument("--vit-weights", metavar="PATH", help="DINOv2 weights: Meta .pth, timm file, or HF folder")
    w.add_argument("--random-vit", type=int, metavar="SEED", help="random, seeded ViT weights (NOT DINOv2 features)")
    g.add_argument("--block", type=int, default=-1, help="0-based block whose tokens are used (default -1: last)")
    g.add_argument("--norm", action="store_true", help="apply the ViT's final norm to the block's tokens")
    g.add_argument("--image-size", type=int_at_least(14), default=224, help="ViT input side in pixels (224)")
    g.add_argument("--crop", choices=("center", "letterbox"), default="center", help="frame to square (center)")


def add_backend_args(p: argparse.ArgumentParser, *, backend: bool = True, precision: str = "auto") -> None:
    """--backend (unless backend=False), --device, --precision (default `precision`), --engines, --threads."""
    g = p.add_argument_group("backend")
    if backend:
        g.add_argument("--backend", choices=BACKENDS, default="auto", help="default auto (best available, shown)")
    g.add_argument("--device", choices=DEVICES, default="cpu", help="default cpu")
    why = "the fastest path this CPU runs natively within the accuracy bounds, shown"
    why = why if precision == "auto" else "exact features"
    g.add_argument("--precision", choices=PRECISIONS, default=precision, help=f"ViT (default {precision}: {why})")
    g.add_argument("--engines", default="engines", metavar="DIR", help="cache of ONNX graphs and engines (engines/)")
    g.add_argument("--threads", type=int_at_least(1), help="CPU threads for torch / ONNX Runtime")


def extractor_from_args(args: argparse.Namespace, **runtime: Any) -> Any:
    """The extractor the options describe; `runtime` = backend, device, precision, ... (DINOv2 only)."""
    from vist_rt.features import DINOv2Extractor, PatchesExtractor

    if args.extractor == "patches":
        vit_only = {
            "--vit-weights": args.vit_weights is not None,
            "--random-vit": args.random_vit is not None,
            "--block": args.block != -1,
            "--norm": args.norm,
            "--backbone": args.backbone is not None,
        }
        given = [flag for flag, used in vit_only.items() if used]
        if given:
            raise VistError(f"{', '.join(given)} only apply to --extractor dinov2, not patches")
        channels = args.patch_channels or args.patch_channels_default
        return PatchesExtractor(image_size=args.image_size, channels=channels, crop=args.crop)
    if args.patch_channels is not None:
        raise VistError("--patch-channels only applies to --extractor patches, not dinov2")
    return DINOv2Extractor(
        args.backbone or args.backbone_default,
        args.vit_weights,
        block=args.block,
        image_size=args.image_size,
        seed=args.random_vit,
        norm=args.norm,
        crop=args.crop,
        **runtime,
    )
