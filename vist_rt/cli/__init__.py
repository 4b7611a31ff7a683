"""The `vist-rt` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import vist_rt
from vist_rt.errors import VistError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands register themselves)."""
    from vist_rt.cli import bench, checkpoint, data, doctor, engine, export, insilico, listen, run, study, train

    parser = argparse.ArgumentParser(prog="vist-rt", description="Real-time retina emulator (Vi-ST).")
    parser.add_argument("--version", action="version", version=f"vist-rt {vist_rt.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench.register(sub)
    checkpoint.register(sub)
    engine.register(sub)
    export.register(sub)
    run.register(sub)
    listen.register(sub)
    data.register(sub)
    train.register(sub)
    train.register_eval(sub)
    train.register_features(sub)
    doctor.register(sub)
    insilico.register(sub)
    study.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; a user's mistake is one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for provenance in outputs
    try:
        return int(args.func(args) or 0)
    except VistError as exc:
        print(f"vist-rt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vist-rt: interrupted", file=sys.stderr)
        return 130
