"""`vist-rt bench ...`: measured figures, printed as a table and optionally written as JSON."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from vist_rt.errors import VistError


def _int_at_least(minimum: int):  # type: ignore[no-untyped-def]
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


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `bench` and its subcommands."""
    bench = sub.add_parser("bench", help="measure performance (figures for docs/benchmarks.md)")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = kinds.add_parser("temporal", help="streaming step vs recomputing a window; step vs compute floor")
    p.add_argument("--config", metavar="TOML", help="model config (a [model] table); default: published sizes")
    p.add_argument("--steps", type=_positive, default=300, help="timed streaming steps (default 300)")
    p.add_argument("--windows", type=_positive, default=20, help="timed window recomputes (default 20)")
    p.add_argument("--window-frames", type=_positive, default=128, help="frames per recomputed window (128)")
    p.add_argument("--warmup", type=_non_negative, default=30, help="untimed steps first (default 30)")
    p.add_argument("--batch", type=_positive, default=1, help="independent streams stepped together (default 1)")
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    p.set_defaults(func=run_temporal)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vist-rt bench temporal (CPU, float32, ms)")
    table.add_column("what", no_wrap=True)
    for col in ("n", "min", "p50", "p90", "p99", "max", "jitter"):
        table.add_column(col, justify="right")
    for label, key in (("streaming step", "step_ms"), (f"window of {result['window_frames']}", "window_ms")):
        s = result[key]
        table.add_row(label, str(s["n"]), *(_ms(s[c]) for c in ("min", "p50", "p90", "p99", "max", "jitter")))
    console = Console()
    console.print(table)
    met = result["met"]
    console.print(
        f"ratio window/step (p50): [bold]{result['ratio_p50']:.0f}x[/] "
        f"(target >= {result['targets']['ratio_min']:.0f}: {'met' if met['ratio'] else 'NOT met'})"
    )
    console.print(
        f"floor: {result['macs_per_step'] / 1e6:.0f} M MACs at {result['matmul_gflops']:.0f} GFLOP/s "
        f"= {result['floor_ms']:.3f} ms; step p50 = [bold]{result['step_over_floor']:.2f}x[/] floor "
        f"(target <= {result['targets']['step_over_floor_max']:.0f}x: {'met' if met['floor'] else 'NOT met'})"
    )
    m = result["machine"]
    console.print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads")


def run_temporal(args: argparse.Namespace) -> int:
    """Run the temporal benchmark."""
    import torch

    from vist_rt.bench.stats import write_json
    from vist_rt.bench.temporal import run_temporal_bench
    from vist_rt.model.config import ViSTConfig

    cfg = ViSTConfig.from_toml(args.config) if args.config else ViSTConfig()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:  # fail before the long measurement, not after
        write_json(args.json, {"bench": "temporal", "status": "running"})
    try:
        result = run_temporal_bench(
            cfg,
            steps=args.steps,
            windows=args.windows,
            window_frames=args.window_frames,
            warmup=args.warmup,
            batch=args.batch,
            seed=args.seed,
        )
    except ValueError as exc:
        raise VistError(str(exc)) from None
    result["command"] = "vist-rt " + shlex.join(args.argv)
    _table(result)
    if args.json:
        write_json(args.json, result)
    return 0
