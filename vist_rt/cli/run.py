"""`vist-rt run`: the real-time pipeline (live, replay or lock-step), settings from flags and/or TOML."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS, TEMPORAL
from vist_rt.cli.options import float_in, int_at_least
from vist_rt.net import DEFAULT_CONTROL, DEFAULT_PUB

S = argparse.SUPPRESS  # flags not given do not override the TOML file or the defaults


_positive_float = float_in(0.0, open_low=True)  # a finite number > 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `run`."""
    p = sub.add_parser("run", help="run the retina emulator: frames in, rates out over ZeroMQ", argument_default=S)
    p.add_argument("--config", metavar="TOML",
                   help="settings from a [run] table (and several streams from [[stream]] tables); flags given "
                   "override it")  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", help="camera:N, rtsp://.., video:PATH, images:DIR, synthetic[:SEED], zmq:ENDPOINT")
    src.add_argument("--lockstep", action="store_true", help="no source: one control `predict` = one model tick")
    p.add_argument("--checkpoint", metavar="PATH", help="vist-rt checkpoint (.safetensors)")
    vit = p.add_mutually_exclusive_group()
    vit.add_argument("--vit-weights", metavar="PATH", help="DINOv2 weights the checkpoint's features need")
    vit.add_argument("--random-vit", type=int_at_least(0), metavar="SEED",
                     help="the checkpoint's ViT with random seeded weights instead (same cost; the rates are NOT "
                     "the model's: for timing without the weights)")  # fmt: skip
    p.add_argument("--rf", metavar="NPY", help="an RF set for the checkpoint, .npy [C, g, g] (default: its own)")
    p.add_argument("--backend", choices=BACKENDS, help="feature backend (default auto: best available, shown)")
    p.add_argument("--device", choices=DEVICES, help="default cpu")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="of the ViT (default auto: the fastest path this CPU runs natively within the accuracy "
                   "bounds, shown; fp32 is exact)")  # fmt: skip
    p.add_argument("--temporal", choices=TEMPORAL, help="CPU temporal model: torch (default) or native (C kernels)")
    p.add_argument("--pub", metavar="ENDPOINT", help=f"PUB endpoint (default {DEFAULT_PUB})")
    p.add_argument("--control", metavar="ENDPOINT", help=f"control REP endpoint (default {DEFAULT_CONTROL})")
    p.add_argument("--replay", action="store_true", help="every frame of a file source, in order, at the model rate")
    p.add_argument("--realtime", action="store_true", help="pace a --replay to real time")
    p.add_argument("--paused", action="store_true", help="start paused; a control `resume` starts the ticks")
    p.add_argument("--max-frames", type=int_at_least(1), metavar="N", help="stop after N model ticks")
    p.add_argument("--record", metavar="PATH", help="also record everything published to an HDF5 file")
    p.add_argument("--lsl", action="store_true", help="also stream the rates as an LSL outlet (pylsl extra)")
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="periodic status lines instead")
    p.add_argument("--allow-remote", action="store_true", help="allow binding beyond loopback (explicit choice)")
    p.add_argument("--curve-keys", metavar="DIR", help="CurveZMQ server keys (vist-rt keys DIR makes them)")
    p.add_argument("--fps", type=_positive_float, help="source frame rate where the source has none (images:)")
    p.add_argument("--width", type=int_at_least(1), help="camera width")
    p.add_argument("--height", type=int_at_least(1), help="camera height")
    p.add_argument("--engines", metavar="DIR", help="cache of ONNX graphs and engines (engines/)")
    p.add_argument("--threads", type=int_at_least(1), help="CPU threads for torch / ONNX Runtime")
    p.add_argument("--hwm", type=int_at_least(1), help="ZeroMQ send high-water mark, messages (1000)")
    p.add_argument("--low-latency", action="store_true",
                   help="keep the CPUs out of deep idle states while running (Linux PM QoS; root or access "
                   "to /dev/cpu_dma_latency): lower, steadier latency, more power")  # fmt: skip
    p.add_argument("--rt-priority", type=int_at_least(1), metavar="N",
                   help="run the tick thread under the real-time scheduler (SCHED_FIFO, priority 1-99; Linux, root "
                   "or an rtprio limit): other threads no longer take its CPU in the middle of a tick")  # fmt: skip
    p.add_argument("--tick-cpu", type=int_at_least(0), metavar="CPU",
                   help="pin the tick thread (clock, temporal step, publish) to this CPU; the run's other threads "
                   "keep off it (Linux)")  # fmt: skip
    p.add_argument("--io-cpu", type=int_at_least(0), metavar="CPU", help="pin ZeroMQ's I/O thread to this CPU (Linux)")
    p.add_argument("--meta-every", dest="meta_every_s", type=_positive_float, metavar="S", help="meta period (5 s)")
    p.add_argument("--status-every", dest="status_every_s", type=_positive_float, metavar="S", help="status (5 s)")
    p.set_defaults(func=run)

    k = sub.add_parser("keys", help="make CurveZMQ keys for a non-loopback --pub/--control")
    k.add_argument("dir", help="folder to write server.key (give it to clients) and server.key_secret into")
    k.add_argument("--force", action="store_true", help="replace keys already in DIR (clients need the new key)")
    k.set_defaults(func=run_keys)


def settings(args: argparse.Namespace) -> Any:
    """The RunConfig the flags (and --config file) describe."""
    from vist_rt.runtime.config import RunConfig

    given = {k: v for k, v in vars(args).items() if k not in ("func", "argv", "command", "config")}
    if given.get("lockstep"):
        given["source"] = None
    return RunConfig.from_toml(args.config, **given) if getattr(args, "config", None) else RunConfig.from_dict(given)


def run(args: argparse.Namespace) -> int:
    """Run until --max-frames, the end of a replay, Ctrl-C or SIGTERM; always closes sockets and flushes."""
    from vist_rt.runtime.pipeline import Runtime

    cfg = settings(args)
    if cfg.allow_remote and not cfg.curve_keys:
        print("vist-rt: warning: binding beyond loopback without --curve-keys: anyone on the network can read "
              "and control this run", file=sys.stderr)  # fmt: skip
    dashboard = cfg.dashboard
    if dashboard and not sys.stdout.isatty():
        print("vist-rt: no terminal on stdout: running headless (status lines, then a summary)", file=sys.stderr)
        dashboard = False
    # SIGTERM and SIGHUP (a closed terminal or SSH session) stop the run cleanly from here on, model loading (and
    # any engine build) included: the run ends its tick, and every published row is recorded
    terminated: list[str] = []
    started: list[Any] = []

    def on_signal(signum: int, _frame: Any) -> None:
        terminated.append(signal.Signals(signum).name)
        for runtime in started:
            runtime.stop()

    main_thread = threading.current_thread() is threading.main_thread()
    stoppers = (signal.SIGTERM, signal.SIGHUP) if main_thread else ()
    previous = {signum: signal.signal(signum, on_signal) for signum in stoppers}
    try:
        runtime = Runtime.from_config(cfg, log=print)
        started.append(runtime)
        if terminated:
            print(f"vist-rt: stopped by {terminated[0]} before the run started; nothing was published")
            return 0
        print(describe(runtime))
        with _dashboard(runtime) if dashboard else contextlib.nullcontext():
            summary = runtime.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _summary(summary)
    return 0


def _dashboard(runtime: Any) -> Any:
    from vist_rt.dashboard import Dashboard

    return Dashboard(runtime)


def describe(runtime: Any) -> str:
    """One line saying honestly what runs: model (demo or not), features (DINOv2 or not), backend, device."""
    from vist_rt.dashboard.view import model_line
    from vist_rt.features.backends import describe_runtime

    rt = runtime.engine.extractor.runtime
    n = len(runtime.streams)
    batches = f"{n} streams in {len(runtime.groups)} batch(es)"
    sources = f"source: {runtime.source_desc}" if n == 1 else f"{batches}: {runtime.source_desc}"
    return (
        f"model: {model_line(runtime.meta)}; features: {runtime.engine.extractor.describe()}; "
        f"{describe_runtime(rt)}; temporal model: {runtime.meta.get('temporal')}; "
        + sources
        + ("; low latency: idle CPUs kept polling (PM QoS) while it runs" if runtime.cfg.low_latency else "")
        + (f"; tick thread at real-time priority {runtime.cfg.rt_priority}" if runtime.cfg.rt_priority else "")
        + (f"; {runtime.cfg.pinning}" if runtime.cfg.pinning else "")
    )


def _summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vist-rt run ({s['mode']}): {s['ticks']} ticks, {s['messages']} messages")
    for col in ("stage", "n", "min", "p50", "p90", "p99", "max", "jitter"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    cols = ("min", "p50", "p90", "p99", "max", "jitter")
    for stage, lat in s["latency_ms"].items():
        if lat:
            table.add_row(stage, str(lat["n"]), *(f"{lat[c]:.2f}" for c in cols))
    console = Console()
    console.print(table)
    console.print(
        f"rate {s['rate_hz']:.2f} / {s['target_hz']:.2f} Hz, stale {s['stale']}, missed {s['missed']}, "
        f"dropped {s['dropped']}, source errors {s['source_errors']}; features: {s['extractor']}"
    )


def run_keys(args: argparse.Namespace) -> int:
    """Write a CurveZMQ key pair for the server and one for a client."""
    from vist_rt.runtime.publish import make_curve_keys

    public, secret = make_curve_keys(args.dir, overwrite=args.force)
    print(f"server public key: {public}\nserver secret key: {secret} (keep it private)")
    return 0
