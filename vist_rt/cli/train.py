"""`vist-rt train`: fit Vi-ST on a dataset file with a preset recipe, writing best and last checkpoints."""

from __future__ import annotations

import argparse

from vist_rt.cli.options import int_at_least


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `train`."""
    p = sub.add_parser("train", help="train Vi-ST on a dataset (the published recipe, presets paper / cpu-small)")
    p.add_argument("data", help="dataset file (.h5, docs/data.md)")
    p.add_argument("--train-movie", required=True, help="movie to train on")
    p.add_argument("--test-movie", help="held-out movie for the CC tracked each epoch (default: the training movie)")
    p.add_argument(
        "--out", required=True, help="best checkpoint (.safetensors); the last goes to <out>.last.safetensors"
    )
    p.add_argument("--preset", choices=("cpu-small", "paper"), default="cpu-small", help="default cpu-small")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed (weights, windows)")
    p.add_argument("--cache", metavar="DIR", help="reuse per-movie features from this folder")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train and print where the checkpoints went."""
    from vist_rt.train.trainer import train

    res = train(args.data, args.train_movie, args.out, test_movie=args.test_movie, preset=args.preset,
                seed=args.seed, cache_dir=args.cache)  # fmt: skip
    print(f"best held-out CC {res.best_cc:.3f}: {res.best}; last: {res.last}")
    return 0
