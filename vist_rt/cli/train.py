"""`vist-rt train`: fit Vi-ST on a dataset file with a preset recipe, writing best and last checkpoints."""

from __future__ import annotations

import argparse
from typing import Any

from vist_rt.cli.options import float_in, int_at_least


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `train`."""
    p = sub.add_parser("train", help="train Vi-ST on a dataset (the published recipe, presets paper / cpu-small)")
    p.add_argument("data", help="dataset file (.h5, docs/data.md)")
    p.add_argument("--train-movie", required=True, action="append",
                   help="movie to train on; repeat it to train on several (no window spans two)")  # fmt: skip
    p.add_argument("--test-movie", help="held-out movie for the CC tracked each epoch (default: the training movie)")
    p.add_argument(
        "--out", required=True, help="best checkpoint, e.g. m.safetensors; the last goes to m.last.safetensors"
    )
    p.add_argument("--preset", choices=("cpu-small", "paper"), default="cpu-small", help="default cpu-small")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed (weights, windows)")
    p.add_argument("--ablation", action="append", choices=("no-c3tcn", "single-window", "no-rf"), default=[],
                   help="train the model without a module (repeatable): no-c3tcn (no dilated temporal layers), "
                   "single-window (one CMST window per block), no-rf (no RF conditioning)")  # fmt: skip
    p.add_argument("--loss", choices=("vist", "rmse", "poisson"),
                   help="training loss: vist (published: RMSE + negativity + soft-DTW), rmse, poisson (NLL); "
                   "default: the recipe's (vist)")  # fmt: skip
    p.add_argument("--cache", metavar="DIR", help="reuse per-movie features from this folder")
    p.add_argument("--recipe", metavar="TOML", help="override the preset's recipe fields (docs/training.md)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (and run a ViT; cpu)")
    p.add_argument(
        "--resume", action="store_true", help="continue from m.state.pt (for --out m.safetensors; saved every epoch)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the outputs of an earlier run (m.safetensors, m.last.safetensors, m.state.pt); default: refuse",
    )
    from vist_rt.cli.options import add_extractor_args

    add_extractor_args(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train with a progress bar (loss, held-out CC) and print where the checkpoints went."""
    import dataclasses
    import os

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vist_rt.cli.options import extractor_from_args
    from vist_rt.train.schedule import PRESETS
    from vist_rt.train.trainer import recipe_from_toml, train

    recipe = recipe_from_toml(args.recipe, base=PRESETS[args.preset]) if args.recipe else None
    if args.loss is not None:
        recipe = dataclasses.replace(recipe or PRESETS[args.preset], loss=args.loss)
    vit = {"backend": "auto", "device": args.device, "precision": "fp32"}  # the features are computed once
    extractor = extractor_from_args(args, **vit) if args.extractor == "dinov2" else extractor_from_args(args)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 draws
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}  held-out CC {task.fields[cc]}"), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not main_rank) as progress:
        task = progress.add_task("train", total=None, loss="-", cc="-")

        def log(line: str) -> None:
            if main_rank:
                progress.console.print(line)

        def on_epoch(entry: dict[str, float]) -> None:
            progress.update(task, cc=f"{entry['cc']:.3f}")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        res = train(args.data, args.train_movie, args.out, test_movie=args.test_movie, preset=args.preset,
                    recipe=recipe, ablations=tuple(args.ablation), extractor=extractor, seed=args.seed,
                    cache_dir=args.cache, device=args.device,
                    resume=args.resume, force=args.force, command="vist-rt " + " ".join(args.argv), log=log,
                    on_step=on_step, on_epoch=on_epoch)  # fmt: skip
    if main_rank:
        print(f"best held-out CC {res.best_cc:.3f}: {res.best}; last: {res.last}")
    return 0


def _alpha(text: str) -> float:
    """argparse type: the SD-KL bandwidth factor, a finite number in (0, ALPHA_MAX]."""
    from vist_rt.train.evaluate import ALPHA_MAX  # (here: torch is not imported to parse flags)

    return float_in(0.0, ALPHA_MAX, open_low=True)(text)


def register_eval(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `eval`."""
    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset movie (streaming model, CC, SD-KL, LN)")
    p.add_argument("checkpoint", help="vist-rt checkpoint (.safetensors)")
    p.add_argument("data", help="dataset file (.h5)")
    p.add_argument("--movie", required=True, help="movie to evaluate on")
    p.add_argument("--alpha", type=_alpha, default=0.3, help="SD-KL KDE bandwidth factor, in (0, 10] (default 0.3)")
    p.add_argument("--ln-train-movie", help="fit the LN baseline on this movie (default: the training movies)")
    p.add_argument("--vit-weights", metavar="PATH", help="DINOv2 weights, for checkpoints with DINOv2 features")
    p.add_argument("--cache", metavar="DIR", help="reuse per-movie features from this folder")
    p.add_argument("--json", metavar="PATH", help="write every figure to PATH (at the end; replaces PATH)")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate and print the headline figures."""
    from vist_rt.bench.stats import write_json
    from vist_rt.data.paths import check_output_dir
    from vist_rt.files import check_output_file
    from vist_rt.model import load_checkpoint
    from vist_rt.train.evaluate import evaluate_checkpoint, write_plots

    # every output is checked before the work, and nothing is written (or truncated) until the figures exist
    if args.json:
        check_output_file(args.json, overwrite=True, flag="--json")
    if args.plots:
        check_output_dir(args.plots, flag="--plots")
    if args.cache:
        check_output_dir(args.cache, flag="--cache")
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result, arrays = evaluate_checkpoint(args.checkpoint, args.data, args.movie, alpha=args.alpha,
                                             ln_train_movie=args.ln_train_movie, vit_weights=args.vit_weights,
                                             cache_dir=args.cache, progress=progress)  # fmt: skip
    v = result["vist"]
    line = (f"Vi-ST on {args.movie}: mean CC {v['cc_mean']:.3f}, mean SD-KL {v['sdkl_mean']:.2f} "
            f"({v['sdkl_capped']} of {len(v['sdkl'])} cells at the 1000 cap)")  # fmt: skip
    if v.get("cc_norm_mean") is not None:
        line += f", CC / noise ceiling {v['cc_norm_mean']:.2f} (ceiling {result['noise_ceiling_mean']:.3f})"
    if "ln" in result:
        line += f"; LN baseline mean CC {result['ln']['cc_mean']:.3f}"
    print(line)
    if args.plots:
        fps = load_checkpoint(args.checkpoint).fps
        result["plots"] = [str(p) for p in write_plots(result, arrays, args.plots, fps=fps)]
    if args.json:
        write_json(args.json, result)  # atomic: an earlier file is replaced whole, or kept
    return 0


def register_features(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `features`."""
    from vist_rt.cli.options import add_backend_args, add_extractor_args

    p = sub.add_parser("features", help="compute (and cache) per-frame features for every movie of a dataset")
    p.add_argument("data", help="dataset file (.h5)")
    p.add_argument("--cache", metavar="DIR", required=True, help="folder for the cached features (reused when current)")
    add_extractor_args(p)
    add_backend_args(p, precision="fp32")  # training features stay exact unless asked
    p.set_defaults(func=run_features)


def run_features(args: argparse.Namespace) -> int:
    """Features for every movie, with a progress bar; a movie whose cache entry is current is not recomputed."""
    from pathlib import Path

    from rich.progress import Progress

    from vist_rt.cli.options import extractor_from_args
    from vist_rt.data.dataset import open_dataset
    from vist_rt.data.paths import check_output_dir
    from vist_rt.train.trainer import feature_cache_path, movie_features, read_cache_entry, store_cache_entry

    check_output_dir(args.cache, flag="--cache")  # before any work
    runtime = {"backend": args.backend, "device": args.device, "precision": args.precision,
               "cache_dir": args.engines, "threads": args.threads}  # fmt: skip
    ext = extractor_from_args(args, **runtime) if args.extractor == "dinov2" else extractor_from_args(args)
    print(ext.describe())
    with open_dataset(args.data) as ds, Progress() as progress:
        for name in ds.movies:
            movie = ds.movie(name)
            path = feature_cache_path(Path(args.data), name, ext, Path(args.cache))
            cached, why = read_cache_entry(path, movie.T, ext)
            if cached is not None:
                progress.console.print(f"{name}: cached ({path})")
                continue
            if why:
                progress.console.print(f"{name}: {why}: recomputing it", soft_wrap=True)
            task = progress.add_task(name, total=movie.T)

            def advance(done: int, _total: int, task: Any = task) -> None:
                progress.update(task, completed=done)

            feats = movie_features(movie.stimulus, ext, progress=advance)
            store_cache_entry(path, feats)
            progress.console.print(f"{name}: {feats.shape[0]} frames -> {path}")
    return 0
