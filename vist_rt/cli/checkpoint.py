"""`vist-rt checkpoint ...`: look inside a checkpoint."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `checkpoint` and its subcommands."""
    ckpt = sub.add_parser("checkpoint", help="inspect vist-rt checkpoints")
    kinds = ckpt.add_subparsers(dest="checkpoint", metavar="ACTION", required=True)
    p = kinds.add_parser("info", help="validate a checkpoint and print what it holds")
    p.add_argument("path", help="checkpoint (.safetensors)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Load (which validates) and describe a checkpoint."""
    from vist_rt.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.path)
    summary = {
        "path": str(ckpt.path),
        "model": ckpt.config.to_dict(),
        "parameters": sum(p.numel() for p in ckpt.model.parameters()),
        "receptive_field_frames": ckpt.config.receptive_field,
        "fps": ckpt.fps,
        "cells": len(ckpt.cell_ids),
        "cell_ids": ckpt.cell_ids,
        "units": ckpt.units,
        "extractor": ckpt.extractor,
        "meta": ckpt.meta,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoint {ckpt.path}", show_header=False)
    for key, value in summary.items():
        if key == "cell_ids":
            ids = ckpt.cell_ids
            value = ", ".join(ids[:8]) + (f" ... ({len(ids)})" if len(ids) > 8 else "")
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    Console().print(table)
    return 0
