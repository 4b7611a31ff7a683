"""`vist-rt mei`: a stimulus optimized through the emulator to drive chosen cells."""

from __future__ import annotations

import argparse

from vist_rt.cli.options import float_in, int_at_least


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `mei`."""
    p = sub.add_parser("mei", help="optimize a clip through the emulator to drive chosen cells (MEI / MDS)")
    p.add_argument("checkpoint", help="a vist-rt checkpoint (.safetensors)")
    p.add_argument("--cell", action="append", required=True, metavar="ID",
                   help="the target cell's id (repeat for a group: their mean rate)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="folder for stimulus.npy/.avi, report.json, figure.png")
    p.add_argument("--objective", choices=("mei", "mds", "target"), default="mei",
                   help="mei: the cells' mean rate over the last frames; mds: minus the others'; target: the "
                   "first cell's rate to --target's time course (mei)")  # fmt: skip
    p.add_argument("--target", metavar="TRACE.npy", help="--objective target: the wanted rate per frame [T]")
    p.add_argument("--frames", type=int_at_least(1), default=30, help="frames in the clip (30)")
    p.add_argument("--window", type=int_at_least(1), default=10, help="the last frames the objective scores (10)")
    p.add_argument("--color", action="store_true", help="an RGB clip (default grey)")
    p.add_argument("--data", metavar="DATA.h5",
                   help="the dataset whose movie sets the bar (its frame size; a `vist-rt simulate` file also gives "
                   "the known retina's response); default: the synthetic movie at the model's resolution")  # fmt: skip
    p.add_argument("--movie", help="the movie of --data (default its first)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the start (and synthetic movie) (0)")
    p.add_argument("--steps", type=int_at_least(1), default=150, help="at most this many optimizer steps (150)")
    p.add_argument("--lr", type=float_in(0, open_low=True), default=0.05, help="Adam's learning rate (0.05)")
    p.add_argument("--patience", type=int_at_least(1), default=40,
                   help="stop when the objective has not risen for this many steps (40)")  # fmt: skip
    p.add_argument("--contrast", type=float_in(0, 127, open_low=True), default=127.0,
                   help="pixels stay within 128 +- this many grey levels (127: the whole range)")  # fmt: skip
    p.add_argument("--smooth", type=float_in(0), default=0.0, help="weight of the temporal smoothness penalty (0)")
    p.add_argument("--energy", type=float_in(0), default=0.0, help="weight of the contrast energy penalty (0)")
    p.add_argument("--vit-weights", metavar="PATH", help="the DINOv2 weights of a DINOv2 checkpoint")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="the ViT's precision (fp32)")
    p.add_argument("--force", action="store_true", help="replace the outputs of an earlier run in --out")
    p.set_defaults(func=run_mei_cli)


def run_mei_cli(args: argparse.Namespace) -> int:
    """Optimize with a progress bar; print the report's figures."""
    from rich.progress import Progress, TextColumn

    from vist_rt.insilico import Regularizers, Settings
    from vist_rt.insilico.experiment import run_mei

    regs = Regularizers(contrast=args.contrast, smooth=args.smooth, energy=args.energy)
    opts = Settings(steps=args.steps, lr=args.lr, patience=args.patience, seed=args.seed)
    with Progress(*Progress.get_default_columns(), TextColumn("objective {task.fields[value]}"), transient=True) as bar:
        task = bar.add_task("optimizing", total=args.steps, value="-")

        def progress(step: int, steps: int, value: float) -> None:
            bar.update(task, completed=step, value=f"{value:.3f}")

        report = run_mei(
            args.checkpoint, args.cell, args.out, objective=args.objective, target=args.target, frames=args.frames,
            window=args.window, color=args.color, data=args.data, movie=args.movie, regularizers=regs, settings=opts,
            vit_weights=args.vit_weights, precision=args.precision, progress=progress, overwrite=args.force,
        )  # fmt: skip
    line = (
        f"{', '.join(report['cells'])} ({report['objective']}, {report['steps']} steps, {report['stopped']}): "
        f"predicted {report['pred_stimulus']:.2f} {report['units']} on the clip vs {report['pred_natural_max']:.2f} "
        f"at best on {report['natural']}"
    )
    if "true_stimulus" in report:
        line += f"; known retina {report['true_stimulus']:.2f} vs {report['true_natural_max']:.2f}"
        if not report["retina_is_the_checkpoints"]:
            line += " (NOT the retina this checkpoint was trained on)"
    elif "true_missing" in report:
        line += f"; no known-retina figures ({report['true_missing']})"
    print(line + f"; written to {args.out}")
    return 0
