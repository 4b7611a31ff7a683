"""`vist-rt bench ...`: measured figures, printed as a table and optionally written as JSON."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from vist_rt.choices import PRECISIONS, TEMPORAL
from vist_rt.cli.options import add_backend_args, add_extractor_args, float_in, int_at_least
from vist_rt.errors import VistError

_positive, _non_negative = int_at_least(1), int_at_least(0)


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
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "native"),
        default="torch",
        help="what runs the streaming step: PyTorch, the exported step graph on ONNX Runtime, or PyTorch matmuls "
        "+ compiled C kernels (default torch)",
    )
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    p.set_defaults(func=run_temporal)

    f = kinds.add_parser("features", help="per-frame ViT latency of each CPU path, its accuracy and compute floor")
    add_extractor_args(f, default_backbone="vits14", default_extractor="dinov2")  # it measures a ViT
    add_backend_args(f, backend=False)
    which = f.add_mutually_exclusive_group()
    which.add_argument("--paths", metavar="LIST", help="backend:precision paths to compare, first = reference "
                       "(default on the CPU: every path this CPU runs natively, torch:fp32 first)")  # fmt: skip
    which.add_argument("--backends", metavar="LIST", help="backends to compare at --precision, first = reference")
    f.add_argument("--frames", type=_positive, default=200, help="timed frames per backend (default 200)")
    f.add_argument("--warmup", type=_non_negative, default=20, help="untimed frames first (default 20)")
    f.add_argument("--accuracy-frames", type=int_at_least(2), default=320, metavar="N",
                   help="consecutive synthetic-movie frames for each path's accuracy: tokens, and the rates of a Vi-ST "
                   "on them (default 320; the rates' bound needs >= 300)")  # fmt: skip
    f.add_argument("--frame-size", default="640x480", metavar="WxH", help="size of the uint8 input frames (640x480)")
    f.add_argument("--seed", type=int, default=0, help="seed of the random frames")
    f.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    f.set_defaults(func=run_features)

    pl = kinds.add_parser("pipeline", help="live run latency table, pipeline overhead and ZeroMQ delivery latency")
    pl.add_argument("--checkpoint", metavar="PATH", help="model to run (default: the shipped demo model)")
    pl.add_argument("--source", default="synthetic", help="frame source (default synthetic, live at 30 Hz)")
    pl.add_argument("--ticks", type=_positive, default=1000, help="timed model ticks (default 1000)")
    pl.add_argument("--warmup", type=_non_negative, default=60, help="untimed ticks first (default 60)")
    pl.add_argument(
        "--baseline",
        type=_non_negative,
        default=300,
        help="bare ZeroMQ messages after the run, the machine's delivery floor (default 300; 0: none)",
    )
    pl.add_argument("--temporal", choices=TEMPORAL, default="torch", help="CPU temporal model (default torch)")
    pl.add_argument("--precision", choices=PRECISIONS, default="auto",
                    help="as `vist-rt run --precision`: of a DINOv2 checkpoint's ViT (default auto)")  # fmt: skip
    pl.add_argument("--random-vit", type=_non_negative, metavar="SEED",
                    help="as `vist-rt run --random-vit`: the ViT with random seeded weights (same cost)")  # fmt: skip
    pl.add_argument("--vit-weights", metavar="PATH", help="as `vist-rt run --vit-weights`")
    pl.add_argument("--threads", type=_positive, help="as `vist-rt run --threads`")
    pl.add_argument("--engines", default="engines", metavar="DIR", help="as `vist-rt run --engines` (engines/)")
    pl.add_argument("--low-latency", action="store_true",
                    help="as `vist-rt run --low-latency` (PM QoS; the floor is measured under it too)")  # fmt: skip
    pl.add_argument("--rt-priority", type=_positive, metavar="N",
                    help="as `vist-rt run --rt-priority` (the floor's sender runs under it too)")  # fmt: skip
    pl.add_argument("--tick-cpu", type=_non_negative, metavar="CPU",
                    help="as `vist-rt run --tick-cpu` (the floor's sender is pinned there too)")  # fmt: skip
    pl.add_argument("--io-cpu", type=_non_negative, metavar="CPU",
                    help="as `vist-rt run --io-cpu` (the floor's I/O thread too)")  # fmt: skip
    pl.add_argument("--record", action="store_true",
                    help="as `vist-rt run --record` (a temporary file): its cost shows in housekeeping")  # fmt: skip
    pl.add_argument("--width", type=_positive, help="as `vist-rt run --width` (the synthetic movie: 640)")
    pl.add_argument("--height", type=_positive, help="as `vist-rt run --height` (the synthetic movie: 480)")
    pl.add_argument(
        "--streams",
        type=_stream_counts,
        default=(1,),
        metavar="N[,N...]",
        help="named streams per run (default 1); several counts (1,2,4): one run each, compared",
    )
    pl.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    pl.set_defaults(func=run_pipeline)

    so = kinds.add_parser("soak", help="a long live run: memory growth, missed/stale ticks, recording completeness")
    so.add_argument("--minutes", type=float_in(0.0, open_low=True), default=30.0, help="how long (default 30)")
    so.add_argument("--checkpoint", metavar="PATH", help="model to run (default: the shipped demo model)")
    so.add_argument("--source", default="synthetic", help="frame source (default synthetic, live at 30 Hz)")
    so.add_argument("--fuzz-hz", type=float_in(0.0), default=2.0,
                    help="malformed control requests per second meanwhile (default 2; 0: none)")  # fmt: skip
    so.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    so.set_defaults(func=run_soak)

    g = kinds.add_parser("gpu", help="the device check: ViT and temporal step on CUDA, eager vs CUDA graphs (TensorRT)")
    g.add_argument("--frames", type=_positive, default=500, help="timed frames per variant (default 500)")
    g.add_argument("--warmup", type=_non_negative, default=50, help="untimed frames first (default 50)")
    g.add_argument("--engines", default="engines", metavar="DIR", help="cache of ONNX graphs and engines (engines/)")
    g.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    g.set_defaults(func=run_gpu)


def _stream_counts(text: str) -> tuple[int, ...]:
    """ "1,2,4" -> (1, 2, 4): increasing counts from 1 to 64."""
    try:
        counts = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4, got {text!r}") from None
    if not counts or any(not 1 <= n <= 64 for n in counts) or list(counts) != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"expected increasing counts from 1 to 64, like 1,2,4; got {text!r}")
    return counts


def _console():  # type: ignore[no-untyped-def]
    """A rich console; at least 120 columns when not a terminal (logs, pipes), so tables are not cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 120))


def _finish(args: argparse.Namespace, result: dict[str, Any], table: Callable[[dict[str, Any]], None]) -> int:
    """Record the command line, print the table, write the JSON if asked."""
    from vist_rt.bench.stats import write_json

    result["command"] = "vist-rt " + shlex.join(args.argv)
    table(result)
    if args.json:
        write_json(args.json, result)
    return 0


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def _table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"vist-rt bench temporal ({result['backend']}, CPU, float32, ms)")
    table.add_column("what", no_wrap=True)
    for col in ("n", "min", "p50", "p90", "p99", "max", "jitter"):
        table.add_column(col, justify="right")
    for label, key in (("streaming step", "step_ms"), (f"window of {result['window_frames']}", "window_ms")):
        s = result[key]
        table.add_row(label, str(s["n"]), *(_ms(s[c]) for c in ("min", "p50", "p90", "p99", "max", "jitter")))
    console = _console()
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
            backend=args.backend,
        )
    except ValueError as exc:
        raise VistError(str(exc)) from None
    return _finish(args, result, _table)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise VistError(f"--frame-size must look like 640x480, got {text!r}") from None
    if w < 1 or h < 1:
        raise VistError(f"--frame-size must be positive, got {text!r}")
    return h, w


def _features_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"vist-rt bench features: {result['described']} (ms per frame)")
    table.add_column("stage / path", no_wrap=True)
    for col in ("n", "min", "p50", "p90", "p99", "max", "jitter", "x floor", "cos mean", "cos min", "rates CC min"):
        table.add_column(col, justify="right")
    cols = ("min", "p50", "p90", "p99", "max", "jitter")
    for name, r in result["backends"].items():
        rt, s, acc = r["runtime"], r["vit_ms"], r["accuracy"]
        label = f"ViT {name} ({rt['backend']}, {rt['device']}, {rt['precision']})"
        cos = [f"{acc['mean_cos']:.6f}", f"{acc['min_cos']:.6f}"]
        if not acc["within"]:
            cos = [f"[red]{c}[/]" for c in cos]
        rates = acc["rates"]
        cc = "n/a" if rates["min_cc"] is None else f"{rates['min_cc']:.6f}"
        cc = f"[red]{cc}[/]" if rates["within"] is False else cc
        table.add_row(label, str(s["n"]), *(_ms(s[c]) for c in cols), f"{r['vit_over_floor']:.2f}", *cos, cc)
    first = next(iter(result["backends"].values()))["preprocess_ms"]
    h, w = result["frame_shape"]
    table.add_row(f"preprocess {w}x{h} -> {result['extractor']['image_size']}", str(first["n"]),
                  *(_ms(first[c]) for c in cols), "", "", "", "")  # fmt: skip
    console = _console()
    console.print(table)
    floors = ", ".join(f"{p} {result['floor_ms'][p]:.2f} ms ({g:.0f} G/s)" for p, g in result["matmul_gflops"].items())
    console.print(f"floor: {result['flops_per_frame'] / 1e9:.2f} GFLOP per frame at each precision's matmul rate: "
                  f"{floors}")  # fmt: skip
    for pair, ratio in result.get("ratio_p50", {}).items():
        console.print(f"ratio {pair} (p50): [bold]{ratio:.2f}x[/]")
    for path, ratio in result.get("speedup_vs_onnxruntime_fp32", {}).items():
        console.print(f"{path}: {ratio:.2f}x faster than onnxruntime fp32 (p50)")
    b = result["bounds"]
    console.print(f"accuracy vs {result['reference']} on {result['accuracy_set']}; bounds: mean cos >= "
                  f"{b['mean_cos']}, every token >= {b['min_cos']}; rates of a published-size Vi-ST (random weights) "
                  f"on the tokens: CC >= {b['rate_cc']} for every cell over >= {b['rate_frames']} frames")  # fmt: skip
    console.print(f"precision auto here: {result['auto']['path']} ({result['auto']['why']})")
    m = result["machine"]
    console.print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads")


def run_features(args: argparse.Namespace) -> int:
    """Run the feature benchmark."""
    import torch

    from vist_rt.bench.features import FeaturePath, native_cpu_paths, parse_paths, run_features_bench
    from vist_rt.bench.stats import write_json
    from vist_rt.cli.options import extractor_from_args
    from vist_rt.features.backends import resolve

    if args.extractor != "dinov2":
        raise VistError("bench features measures a ViT: use --extractor dinov2")
    labels = None
    if args.backends is not None:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        allowed = ("torch", "onnxruntime", "tensorrt")
        if not backends or any(b not in allowed for b in backends):
            raise VistError(f"--backends must list some of {', '.join(allowed)}, got {args.backends!r}")
        if len(set(backends)) != len(backends):
            raise VistError(f"--backends lists a backend twice: {args.backends!r}")
        paths = [FeaturePath(*resolve(b, args.device, args.precision)[:2]) for b in backends]
        labels = backends
    elif args.paths is not None:
        try:
            paths = parse_paths(args.paths)
        except ValueError as exc:
            raise VistError(str(exc)) from None
        for p in paths:
            resolve(p.backend, args.device, p.precision)  # each checked before any work
    elif args.device == "cpu":
        paths = native_cpu_paths()
    else:
        paths = [FeaturePath(*resolve("auto", args.device, args.precision)[:2])]
    frame_shape = _parse_size(args.frame_size)
    if args.vit_weights is None and args.random_vit is None:
        args.random_vit = 0  # timing does not depend on the weights' values; --vit-weights to use real ones
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        write_json(args.json, {"bench": "features", "status": "running"})

    def make(path: FeaturePath):  # type: ignore[no-untyped-def]
        return extractor_from_args(
            args,
            backend=path.backend,
            device=args.device,
            precision=path.precision,
            cache_dir=args.engines,
            threads=args.threads,
            log=print,
        )

    try:
        result = run_features_bench(make, paths, frames=args.frames, warmup=args.warmup, frame_shape=frame_shape,
                                    seed=args.seed, labels=labels, accuracy_set=args.accuracy_frames)  # fmt: skip
    except ValueError as exc:
        raise VistError(str(exc)) from None
    return _finish(args, result, _features_table)


def _gpu_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"vist-rt bench gpu on {result['gpu']['name']} (ms per frame; CUDA events / wall)")
    for col in ("stage", "variant", "n", "p50", "p99", "max", "wall p50", "wall p99"):
        table.add_column(col, justify="left" if col in ("stage", "variant") else "right", no_wrap=True)

    def add(stage: str, variant: str, r: dict[str, Any]) -> None:
        if "skipped" in r:
            table.add_row(stage, variant, "", "", "", "", "", r["skipped"][:40])
            return
        g, w = r["gpu_ms"], r["wall_ms"]
        table.add_row(stage, variant, str(g["n"]), *(_ms(g[c]) for c in ("p50", "p99", "max")),
                      _ms(w["p50"]), _ms(w["p99"]))  # fmt: skip

    for backbone, rows in result["vit"].items():
        for variant, r in rows.items():
            add(f"ViT {backbone} fp16", variant, r)
    for variant, r in result["temporal"].items():
        if isinstance(r, dict):
            add("temporal step fp32", variant, r)
    e2e = result["end_to_end"]
    for key in ("preprocess", "vit", "temporal", "end_to_end"):
        s = e2e[key]
        table.add_row(f"frame: {key}", "wall clock", str(s["n"]), _ms(s["p50"]), _ms(s["p99"]), _ms(s["max"]), "", "")
    console = _console()
    console.print(table)
    diff = result["temporal"]["graph_vs_eager_max_abs"]
    console.print(f"temporal CUDA graph vs eager over 200 steps, max abs difference: {diff:.2e}")


def run_gpu(args: argparse.Namespace) -> int:
    """Run the device-check benchmark (needs CUDA)."""
    from vist_rt.bench.gpu import run_gpu_bench
    from vist_rt.bench.stats import write_json

    if args.json:
        write_json(args.json, {"bench": "gpu", "status": "running"})
    result = run_gpu_bench(args.frames, args.warmup, args.engines)
    return _finish(args, result, _gpu_table)


def _pipeline_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from vist_rt.features.backends import describe_runtime

    table = Table(title=f"vist-rt bench pipeline: {result['received']} ticks received (ms)")
    table.add_column("what", no_wrap=True)
    for col in ("n", "min", "p50", "p90", "p99", "max", "jitter"):
        table.add_column(col, justify="right")
    rows = [(f"stage {k}", v) for k, v in result["stages_ms"].items() if v]
    rows += [("pipeline overhead (wake to send, model compute excluded)", result["overhead_ms"])]
    rows += [("  its CPU time (the clock thread's, model compute's excluded)", result["overhead_cpu_ms"])]
    rows += [("  wake to send with the clock's thread not running (preempted, GIL)", result["off_cpu_ms"])]
    rows += [("housekeeping after the send (record, meta, ...)", result["housekeeping_ms"])]
    rows += [("both: a tick's work outside model compute", result["tick_work_ms"])]
    if result.get("recording"):
        rows += [("  of which the recorder's (journal write + flushes)", result["recording"]["add_ms"])]
    rows += [("ZeroMQ delivery to a subscriber (send to off the socket)", result["delivery_ms"])]
    rows += [("then the subscriber's decode (Message built)", result["subscriber_decode_ms"])]
    if result.get("bare_zmq_delivery_ms"):
        rows += [("bare ZeroMQ PUB->SUB, same rate (floor)", result["bare_zmq_delivery_ms"])]
    for label, s in rows:
        table.add_row(label, str(s["n"]), *(_ms(s[c]) for c in ("min", "p50", "p90", "p99", "max", "jitter")))
    console = _console()
    console.print(table)
    met, t = result["met"], result["targets"]
    console.print(
        f"rate {result['rate_hz']:.2f}/{result['target_hz']:.0f} Hz, stale {result['stale_timed']} of "
        f"{result['received']} timed ticks ({result['stale']} with the warmup), missed "
        f"{result['missed']}, dropped {result['dropped']}; overhead p99 {result['overhead_ms']['p99']:.3f} ms "
        f"(target <= {t['overhead_p99_ms']}: {'met' if met['overhead'] else 'NOT met'}), delivery p99 "
        f"{result['delivery_ms']['p99']:.3f} ms (target <= {t['delivery_p99_ms']}: "
        f"{'met' if met['delivery'] else 'NOT met'}"
        + (f"; {result['delivery_p99_vs_bare']:.2f}x bare ZeroMQ's" if result.get("delivery_p99_vs_bare") else "")
        + f"); features: {result['extractor']}, {describe_runtime(result['feature_runtime'])}"
        + ("; low latency (PM QoS held)" if result["low_latency"] else "")
        + (f"; real-time priority {result['rt_priority']}" if result.get("rt_priority") else "")
        + (f"; {result['pinning']}" if result.get("pinning") else "")
    )
    if result.get("recording"):
        r = result["recording"]
        state = "complete" if r["complete"] else "INCOMPLETE"
        console.print(f"recording: {r['rows']} rows for {r['ticks']} ticks ({state})")


def run_pipeline(args: argparse.Namespace) -> int:
    """Run the pipeline benchmark (a live run with a subscriber)."""
    from vist_rt.bench.pipeline import run_pipeline_bench
    from vist_rt.bench.stats import write_json

    if args.json:
        write_json(args.json, {"bench": "pipeline", "status": "running"})
    runs = [
        run_pipeline_bench(args.checkpoint, ticks=args.ticks, warmup=args.warmup, source=args.source,
                           baseline=args.baseline, temporal=args.temporal, low_latency=args.low_latency,
                           tick_cpu=args.tick_cpu, io_cpu=args.io_cpu, rt_priority=args.rt_priority,
                           record=args.record, streams=n, precision=args.precision, random_vit=args.random_vit,
                           vit_weights=args.vit_weights, threads=args.threads,
                           engines=args.engines,
                           width=args.width, height=args.height)
        for n in args.streams
    ]  # fmt: skip
    if len(runs) == 1:
        return _finish(args, runs[0], _pipeline_table)
    from vist_rt.bench.pipeline import compare_streams

    result = {"bench": "pipeline", "runs": runs, "streams": compare_streams(runs)}
    return _finish(args, result, _streams_table)


def _streams_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from vist_rt.bench.pipeline import OVERHEAD_GROWTH_LIMIT_MS

    for run in result["runs"]:
        _pipeline_table(run)
    cmp = result["streams"]
    table = Table(title="vist-rt bench pipeline --streams: one run per N, same invocation")
    cols = ("streams", "model p50 ms", "tick work p99 ms", "overhead p50 ms", "overhead p99 ms",
            "its CPU p99 ms", "off-CPU p99 ms", "per-stream cost vs 1", "missed", "stale", "held 30 Hz")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for r in cmp["rows"]:
        table.add_row(str(r["streams"]), _ms(r["model_p50_ms"]), _ms(r["tick_work_p99_ms"]), _ms(r["overhead_p50_ms"]),
                      _ms(r["overhead_p99_ms"]), _ms(r["overhead_cpu_p99_ms"]), _ms(r["off_cpu_p99_ms"]),
                      f"{r['per_stream_cost_vs_1']:.2f}",
                      str(r["missed"]), str(r["stale"]), "yes" if r["held_clock"] else "NO")  # fmt: skip
    console = _console()
    console.print(table)
    p99, p50 = cmp["overhead_p99_growth_ms_per_stream"], cmp["overhead_p50_growth_ms_per_stream"]
    if p99 is None:
        console.print(f"one count only: no growth; largest N holding the clock: {cmp['largest_streams_holding_clock']}")
        return
    console.print(f"overhead growth per extra stream: p99 {p99:.3f} ms (limit {OVERHEAD_GROWTH_LIMIT_MS} ms: "
                  f"{'met' if cmp['overhead_growth_met'] else 'NOT met'}), p50 {p50:.3f} ms; its CPU time p99 "
                  f"{cmp['overhead_cpu_p99_growth_ms_per_stream']:.3f} ms, p50 "
                  f"{cmp['overhead_cpu_p50_growth_ms_per_stream']:.3f} ms; "
                  f"largest N holding the clock: {cmp['largest_streams_holding_clock']}")  # fmt: skip


def _soak_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    rss, rec, ctl, sub = result["rss_mib"], result["recording"], result["control"], result["subscriber"]
    table = Table(title=f"vist-rt bench soak: {result['minutes']:g} min live, recording ({result['source']})")
    table.add_column("what", no_wrap=True)
    table.add_column("value", justify="right")
    hk = result["housekeeping_ms"]
    for label, value in (
        ("ticks (rate / target Hz)", f"{result['ticks']} ({result['rate_hz']:.2f} / {result['target_hz']:.0f})"),
        ("missed / stale ticks", f"{result['missed']} / {result['stale']}"),
        ("RSS first / settled / last / max (MiB)",
         f"{rss['first']:.1f} / {rss['settled']:.1f} / {rss['last']:.1f} / {rss['max']:.1f}"),
        (f"RSS slope after {result['warmup_s']:.0f} s (KiB/min)", f"{result['rss_slope_kib_per_min']:.1f}"),
        ("RSS growth, settled to last (fit)",
         f"{result['rss_growth_pct']:+.3f} % ({result['rss_fit_growth_pct']:+.3f} %)"),
        ("recording rows / ticks",
         f"{rec['rows']} / {rec['ticks']} ({'complete' if rec['complete'] else 'INCOMPLETE'})"),
        ("subscriber: rates received, lost", f"{sub['rates']}, {sub['lost']}"),
        ("control: answered / unanswered (malformed sent)",
         f"{ctl['answered']} / {ctl['unanswered']} ({ctl['malformed_sent']})"),
        ("housekeeping p50 / p99 (ms)", f"{hk['p50']:.3f} / {hk['p99']:.3f}" if hk else "-"),
    ):  # fmt: skip
        table.add_row(label, value)
    console = _console()
    console.print(table)
    console.print(f"memory growth < {result['targets']['rss_growth_pct']:g} % and a complete recording: "
                  f"{'met' if result['met']['memory'] else 'NOT met'}; features: {result['extractor']}")  # fmt: skip


def run_soak(args: argparse.Namespace) -> int:
    """Run the soak benchmark."""
    from vist_rt.bench.soak import run_soak as soak
    from vist_rt.bench.stats import write_json

    if args.json:
        write_json(args.json, {"bench": "soak", "status": "running"})
    result = soak(args.minutes, checkpoint=args.checkpoint, source=args.source, fuzz_hz=args.fuzz_hz, log=print)
    return _finish(args, result, _soak_table)
