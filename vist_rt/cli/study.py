"""`vist-rt study NAME DATA.h5 --out DIR`: the paper's studies, each arm an ordinary train + eval run."""

from __future__ import annotations

import argparse
from typing import Any

from vist_rt.cli.options import int_at_least

STUDY_NAMES = ("ablation", "loss", "blocks", "population", "durations")  # vist_rt.train.study.STUDIES


def _ints(text: str) -> list[int]:
    """argparse type: '1,6,11' -> [1, 6, 11]."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `study`."""
    p = sub.add_parser("study", help="rerun one of the paper's studies on a dataset (ablation, loss, blocks, "
                       "population, durations)")  # fmt: skip
    p.add_argument("name", choices=STUDY_NAMES, help="which study")
    p.add_argument("data", help="dataset file (.h5)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the study's folder: plan.json, arms/, study.json, figures (rerun to resume)")  # fmt: skip
    p.add_argument("--seeds", type=int_at_least(1), default=1, help="seeds per arm (default 1)")
    p.add_argument("--preset", choices=("cpu-small", "paper"), default="cpu-small", help="default cpu-small")
    p.add_argument("--recipe", metavar="TOML", help="override the preset's recipe fields (docs/training.md)")
    p.add_argument("--train-movie", help="movie to train on (default the dataset's first)")
    p.add_argument("--test-movie", help="movie that picks the best epoch (default the next)")
    p.add_argument("--eval-movie", help="movie scored (default the next; the test movie if there is none)")
    p.add_argument("--blocks", type=_ints, metavar="B,B,...",
                   help="blocks study: 0-based DINOv2 blocks (default first, middle, last)")  # fmt: skip
    p.add_argument("--sizes", type=_ints, metavar="N,N,...",
                   help="population study: numbers of cells modelled together (default 2, 4, 8, ... all)")  # fmt: skip
    p.add_argument("--scored-cells", type=int_at_least(1), metavar="K",
                   help="population study: the K cells scored in every arm (default the smallest size)")  # fmt: skip
    p.add_argument("--cache", metavar="DIR", help="feature cache (default DIR/features)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (and run a ViT; cpu)")
    from vist_rt.cli.options import add_extractor_args

    add_extractor_args(p)
    p.set_defaults(func=run_study_cli)


def run_study_cli(args: argparse.Namespace) -> int:
    """Plan, run the unfinished arms with progress bars, print the groups' figures."""
    import os
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vist_rt.cli.options import extractor_from_args
    from vist_rt.data.dataset import open_dataset
    from vist_rt.errors import VistError
    from vist_rt.train.schedule import PRESETS
    from vist_rt.train.study import StudyRun, default_movies, plan_study, run_durations, run_study
    from vist_rt.train.trainer import recipe_from_toml

    command = "vist-rt " + " ".join(args.argv)
    if args.name == "durations":
        study = run_durations(Path(args.data), Path(args.out), command=command)
        windows = ", ".join(str(list(b)) for b in study["suggested_windows"])
        peaks = ", ".join(f"{p:.1f}" for p in study["peaks_frames"])
        print(f"{study['n_durations']} peak durations; histogram peaks at {peaks} frames; "
              f"suggested CMST windows {windows or 'none'}; {args.out}/study.json, durations.png")  # fmt: skip
        return 0
    specific = {"blocks": args.blocks, "sizes": args.sizes, "scored_cells": args.scored_cells}
    for key, value in specific.items():
        owner = "blocks" if key == "blocks" else "population"
        if value is not None and args.name != owner:
            raise VistError(f"--{key.replace('_', '-')} applies to the {owner} study, not {args.name}")
    recipe = recipe_from_toml(args.recipe, base=PRESETS[args.preset]) if args.recipe else PRESETS[args.preset]
    vit = {"backend": "auto", "device": args.device, "precision": "fp32"}
    extractor = extractor_from_args(args, **vit) if args.extractor == "dinov2" else extractor_from_args(args)
    with open_dataset(args.data) as ds:
        movies = default_movies(ds.movies, args.train_movie, args.test_movie, args.eval_movie)
        cell_ids = list(ds.cell_ids)
    plan = plan_study(args.name, cell_ids=cell_ids, movies=movies, seeds=args.seeds, extractor=extractor,
                      recipe=recipe, preset=args.preset, blocks=args.blocks, sizes=args.sizes,
                      scored=args.scored_cells)  # fmt: skip
    main_rank = os.environ.get("RANK", "0") == "0"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not main_rank) as progress:
        arms = progress.add_task(f"study {args.name}: arms", total=len(plan.arms))
        steps = progress.add_task("train", total=None)

        def on_arm(done: int, total: int, arm: Any) -> None:
            progress.update(arms, completed=done)
            progress.update(steps, description=f"train {arm.key}", completed=0)

        def on_step(step: int, total: int, _loss: float) -> None:
            progress.update(steps, completed=step, total=total)

        run = StudyRun(Path(args.data), Path(args.out), extractor, recipe, args.preset, vit_weights=args.vit_weights,
                       device=args.device, cache=Path(args.cache) if args.cache else None, command=command,
                       log=progress.console.print if main_rank else (lambda _l: None), on_arm=on_arm,
                       on_step=on_step)  # fmt: skip
        study = run_study(plan, run)
        progress.update(arms, completed=len(plan.arms))
    if main_rank:
        for g in study["groups"]:
            sd = f" +- {g['cc_sd']:.3f}" if g["seeds"] > 1 else ""
            seeds = f"{g['seeds']} seed{'s' if g['seeds'] > 1 else ''}"
            print(f"{g['group']:>28}: CC {g['cc_mean']:.3f}{sd}, SD-KL {g['sdkl_mean']:.2f} ({seeds})")
        print(f"{args.out}/study.json, study.png")
    return 0
