"""`vist-rt engine ...`: build, identify and list cached TensorRT engines."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from vist_rt.errors import VistError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `engine` and its subcommands."""
    engine = sub.add_parser("engine", help="build and inspect TensorRT engines (cached under ./engines)")
    actions = engine.add_subparsers(dest="engine", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("onnx", metavar="ONNX", help="a vist-rt ONNX file (features or temporal-step)")
        p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="default fp16")
        p.add_argument("--engines", metavar="DIR", default="engines", help="engine cache directory (default ./engines)")
        p.add_argument(
            "--shape",
            action="append",
            default=[],
            metavar="NAME=SHAPE",
            help="input shape, e.g. pixels=1x3x224x224, or a range pixels=1x3x224x224:1x3x224x224:8x3x224x224 "
            "(dynamic dims default to 1); repeatable",
        )

    p = actions.add_parser("build", help="build the engine for an ONNX file, or reuse the cached one")
    common(p)
    p.add_argument("--force", action="store_true", help="rebuild even if the cache holds a matching engine")
    p.add_argument("--workspace-gib", type=float, default=4.0, metavar="N", help="builder workspace (default 4)")
    p.set_defaults(func=run_build)

    p = actions.add_parser("key", help="print the cache key and cache status (no TensorRT needed with overrides)")
    common(p)
    p.add_argument("--gpu-name", help="GPU name (default: the CUDA device's, from torch.cuda)")
    p.add_argument("--compute-capability", metavar="MAJOR.MINOR", help="e.g. 8.9 (default: the CUDA device's)")
    p.add_argument("--trt-version", help="TensorRT version (default: the installed tensorrt's)")
    p.add_argument("--json", action="store_true", help="print the key and status as JSON")
    p.set_defaults(func=run_key)

    p = actions.add_parser("list", help="list cached engines and the key each was built for")
    p.add_argument("--engines", metavar="DIR", default="engines", help="engine cache directory (default ./engines)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_list)


# ------------------------------------------------------------------------------------------- helpers


def _shapes(args: argparse.Namespace) -> dict[str, Any]:
    from vist_rt.trt.cache import parse_shape_arg

    shapes: dict[str, Any] = {}
    for text in args.shape:
        name, value = parse_shape_arg(text)
        if name in shapes:
            raise VistError(f"--shape given twice for {name!r}")
        shapes[name] = value
    return shapes


def _checked_shapes(args: argparse.Namespace) -> dict[str, Any]:
    """Parse --shape and check it, and the ONNX file, before anything needs a GPU (mistakes first)."""
    from vist_rt.export.onnx import read_meta
    from vist_rt.trt.cache import resolve_profile

    shapes = _shapes(args)
    resolve_profile(read_meta(args.onnx)["inputs"], shapes)
    return shapes


def _compute_capability(text: str) -> tuple[int, int]:
    major, dot, minor = text.strip().partition(".")
    if not (major.isdigit() and dot and minor.isdigit()):
        raise VistError(f"--compute-capability must be MAJOR.MINOR, e.g. 8.9; got {text!r}")
    return int(major), int(minor)


def _identity(args: argparse.Namespace) -> tuple[str, str, tuple[int, int]]:
    """(TensorRT version, GPU name, compute capability): overrides first, else the installed ones."""
    from vist_rt.trt.cache import device_identity, tensorrt_version

    overridable = hasattr(args, "trt_version")  # `engine key` takes overrides; `engine build` needs the real ones
    cc = _compute_capability(args.compute_capability) if getattr(args, "compute_capability", None) else None
    gpu = getattr(args, "gpu_name", None)
    try:
        if gpu is None or cc is None:
            found_gpu, found_cc = device_identity()
            gpu = found_gpu if gpu is None else gpu
            cc = found_cc if cc is None else cc
        version = getattr(args, "trt_version", None) or tensorrt_version()
    except VistError as exc:
        if not overridable:
            raise
        raise VistError(f"{exc} (or give --trt-version, --gpu-name and --compute-capability)") from None
    return version, gpu, cc


class _RichProgress:
    """A `BuildProgress` that shows TensorRT's build phases as rich progress bars."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.depth: dict[str, int] = {}
        self.lock = threading.Lock()

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        with self.lock:
            depth = self.depth.get(parent, -1) + 1 if parent else 0
            self.depth[phase] = depth
            self.tasks[phase] = self.progress.add_task("  " * depth + phase, total=max(num_steps, 1))

    def step_complete(self, phase: str, step: int) -> bool:
        with self.lock:
            if phase in self.tasks:
                self.progress.update(self.tasks[phase], completed=step + 1)
        return True

    def phase_finish(self, phase: str) -> None:
        with self.lock:
            task = self.tasks.pop(phase, None)
            self.depth.pop(phase, None)
            if task is not None:
                self.progress.remove_task(task)


# ------------------------------------------------------------------------------------------ commands


def run_build(args: argparse.Namespace) -> int:
    """Build (or reuse) the engine; print its path and whether it was reused or built."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vist_rt.trt.build import build_engine, get_or_build

    if args.workspace_gib <= 0:
        raise VistError(f"--workspace-gib must be > 0, got {args.workspace_gib}")
    shapes = _checked_shapes(args)
    trt_version, gpu, cc = _identity(args)
    console = Console(stderr=True)
    built: list[bool] = []

    def builder(*a: Any, **kw: Any) -> bytes:
        built.append(True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            return build_engine(*a, **{**kw, "progress": _RichProgress(bar)})

    path = get_or_build(
        args.onnx,
        args.precision,
        input_shapes=shapes,
        engines=args.engines,
        trt_version=trt_version,
        gpu_name=gpu,
        compute_capability=cc,
        builder=builder,
        force=args.force,
        workspace_gib=args.workspace_gib,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(f"{path}\t{'built' if built else 'reused'}")
    return 0


def run_key(args: argparse.Namespace) -> int:
    """Print the engine key for an ONNX file and what the cache holds for it."""
    from vist_rt.trt.cache import EngineCache, engine_key

    shapes = _checked_shapes(args)
    trt_version, gpu, cc = _identity(args)
    key = engine_key(
        args.onnx,
        precision=args.precision,
        input_shapes=shapes,
        trt_version=trt_version,
        gpu_name=gpu,
        compute_capability=cc,
    )
    state = EngineCache(args.engines).status(key)
    if args.json:
        out = {
            "key": key.to_dict(),
            "digest": key.digest,
            "filename": key.filename,
            "path": str(state.path),
            "status": state.status,
            "reason": state.reason,
            "stale_path": str(state.stale_path) if state.stale_path else None,
        }
        print(json.dumps(out, indent=2))
        return 0
    for field, value in key.to_dict().items():
        print(f"{field:20} {value if isinstance(value, str) else json.dumps(value)}")
    print(f"{'digest':20} {key.digest}")
    print(f"{'engine':20} {state.path}")
    print(f"{'status':20} {state.status}" + (f" ({state.reason})" if state.reason else ""))
    return 0


def run_list(args: argparse.Namespace) -> int:
    """List the engines in the cache directory with the key recorded for each."""
    from vist_rt.trt.cache import EngineCache

    cache = EngineCache(args.engines)
    if not cache.root.is_dir():
        raise VistError(f"engine directory not found: {cache.root}")
    entries = cache.entries()
    rows = []
    for e in entries:
        k = e.key or {}
        cc = k.get("compute_capability")
        rows.append(
            {
                "engine": e.path.name,
                "onnx": k.get("onnx_name", "?"),
                "kind": k.get("kind", "?"),
                "precision": k.get("precision", "?"),
                "trt_version": k.get("trt_version", "?"),
                "gpu": k.get("gpu_name", "?"),
                "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, list) and len(cc) == 2 else "?",
                "size_mib": round(e.size / (1 << 20), 2),
                "created": e.created,
                "problem": e.problem,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no engines in {cache.root}")
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"engines in {cache.root}"))
    for column in ("engine", "onnx", "precision", "trt_version", "gpu", "compute_capability", "size_mib", "created"):
        table.add_column(column.replace("_", " "))
    for row in rows:
        cells = [str(row[c]) for c in ("engine", "onnx", "precision", "trt_version", "gpu")]
        cells += [row["compute_capability"], str(row["size_mib"]), row["created"]]
        if row["problem"]:
            cells[0] += f" (unusable: {row['problem']})"
        table.add_row(*(escape(c) for c in cells))
    Console(width=200).print(table)
    return 0
