"""`vist-rt bench pipeline`: a live run measured the field's way, plus the pipeline's own overhead and
ZeroMQ delivery latency to a subscriber on loopback (in its own process, as a rig would be)."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.bench.stats import machine_info
from vist_rt.latency import summarize

TARGETS = {"overhead_p99_ms": 0.5, "delivery_p99_ms": 0.3}


OVERHEAD_GROWTH_LIMIT_MS = 0.1  # the pipeline's overhead p99 may grow by this much per extra stream


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _subscribe(endpoint: str, results: Any, stop: Any, ready: Any) -> None:
    """In its own process (as a rig would be): receive rates; note each one's delivery latency (off the socket,
    as the bare floor is measured) and the time the subscriber then took to decode it, in ms."""
    from vist_rt.client import Subscriber

    delivery: list[float] = []
    decode: list[float] = []
    headers: list[dict[str, Any]] = []
    with Subscriber(endpoint, timeout_ms=100) as sub:
        ready.set()
        while not stop.is_set():
            msg = sub.recv(100)
            if msg is None or msg.topic != "rates":
                continue
            decoded = time.time_ns()
            delivery.append((msg.t_recv_ns - msg.header["t_pub_ns"]) / 1e6)
            decode.append((decoded - msg.t_recv_ns) / 1e6)
            headers.append(msg.header)
    results.put((delivery, decode, headers))


def _bare_subscribe(endpoint: str, n: int, results: Any, ready: Any) -> None:
    """In its own process: receive n bare messages, note each one's one-way latency (ns stamp in frame 1)."""
    import zmq

    out: list[float] = []
    with zmq.Context() as ctx, ctx.socket(zmq.SUB) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        ready.set()
        while len(out) < n and sock.poll(5000):
            frames = sock.recv_multipart()
            out.append((time.time_ns() - int.from_bytes(frames[1], "little")) / 1e6)
    results.put(out)


def bare_zmq_delivery(
    messages: int = 300,
    hz: float = 30.0,
    size: int = 80,
    *,
    tick_cpu: int | None = None,
    io_cpu: int | None = None,
    rt_priority: int | None = None,
) -> dict[str, float] | None:
    """The machine's own floor for delivery: bare pyzmq PUB -> SUB in another process, `messages` messages of
    `size` bytes at `hz`, no encoding, no model; one-way latency summary in ms (None when messages is 0).
    `tick_cpu` / `io_cpu`: the sending thread / ZeroMQ's I/O thread pinned as a run's would be; `rt_priority`: the
    sending thread under SCHED_FIFO as a run's tick thread would be."""
    import zmq

    from vist_rt.runtime.affinity import io_context, pin_tick
    from vist_rt.runtime.lowlatency import ClockPriority

    if messages <= 0:
        return None
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    mp = multiprocessing.get_context("spawn")
    results, ready = mp.Queue(), mp.Event()
    with (
        io_context(io_cpu) if io_cpu is not None else zmq.Context() as ctx,
        ctx.socket(zmq.PUB) as pub,
    ):
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 1000)
        pub.bind(endpoint)
        listener = mp.Process(target=_bare_subscribe, args=(endpoint, messages, results, ready), daemon=True)
        listener.start()  # before the pinning below: the subscriber, as a rig's would, runs anywhere
        ready.wait(timeout=60.0)
        time.sleep(0.5)  # the subscription reaches the publisher (slow joiner)
        with (
            pin_tick(tick_cpu, io_cpu) if tick_cpu is not None else contextlib.nullcontext(),
            ClockPriority(rt_priority) if rt_priority is not None else contextlib.nullcontext(),
        ):
            got = _send_bare(pub, messages, hz, size, results)
        listener.join(timeout=10.0)
    return summarize(np.asarray(got) / 1e3) if got else None


def _send_bare(pub: Any, messages: int, hz: float, size: int, results: Any) -> list[float]:
    """Send the floor's messages at `hz`; the subscriber's latencies (ms)."""
    payload = bytes(size)
    start = time.perf_counter()
    for i in range(messages):
        time.sleep(max(0.0, start + i / hz - time.perf_counter()))
        pub.send_multipart([b"bare", time.time_ns().to_bytes(8, "little"), payload])
    return list(results.get(timeout=60.0))


def _window(runtime: Any, stage: str) -> tuple[np.ndarray, int]:
    """The run's latency samples of `stage` (ms) and how many were added."""
    w = runtime.stats.latency[stage]
    return w.values, w.count


def _timed(values: np.ndarray, count: int, warmup: int) -> dict[str, float]:
    """Summary of a run's latency window (ms, one sample per tick, `count` added) without the first `warmup`."""
    return summarize(values[warmup : min(count, len(values))] / 1e3)


def run_pipeline_bench(
    checkpoint: str | None = None,
    *,
    ticks: int = 1000,
    warmup: int = 60,
    source: str = "synthetic",
    baseline: int = 300,
    temporal: str = "torch",
    low_latency: bool = False,
    tick_cpu: int | None = None,
    io_cpu: int | None = None,
    rt_priority: int | None = None,
    record: bool = False,
    streams: int = 1,
    width: int | None = None,
    height: int | None = None,
    precision: str = "auto",
    random_vit: int | None = None,
    vit_weights: str | None = None,
    threads: int | None = None,
    engines: str = "engines",
) -> dict[str, Any]:
    """A live run of warmup + ticks model ticks with a subscriber attached, then `baseline` bare ZeroMQ
    messages at the same rate (the machine's delivery floor, same run); every figure as a dict.

    `streams` > 1: that many named streams (s0, s1, ...) of `source` with different seeds for the synthetic movie,
    on one checkpoint: one batch per tick.
    `low_latency`: the run holds its PM QoS request (`vist-rt run --low-latency`), and so does the
    floor's measurement, so that both are measured alike; `tick_cpu` / `io_cpu` likewise pin both, and
    `rt_priority` puts both sending threads under SCHED_FIFO. `record`: the
    run records to a temporary file, as `--record` (the recorder's per-tick cost is part of `housekeeping`).
    `width` / `height`: the source's frame size, as `vist-rt run --width/--height`; `precision`, `random_vit`,
    `vit_weights`: of a DINOv2 checkpoint's ViT, and `threads`, `engines`, as `vist-rt run`'s flags."""
    from vist_rt.demo import demo_checkpoint
    from vist_rt.runtime.config import RunConfig

    ckpt = checkpoint or str(demo_checkpoint())
    pub = f"tcp://127.0.0.1:{free_port()}"
    tmp = tempfile.TemporaryDirectory(prefix="vist-bench-") if record else contextlib.nullcontext(None)
    with tmp as folder:
        path = str(Path(folder) / "bench.h5") if folder else None
        many = ({"source": None, "streams": stream_configs(source, streams, width, height)} if streams > 1
                else {"source": source, "width": width, "height": height})  # fmt: skip
        cfg = RunConfig.from_dict(dict(checkpoint=ckpt, pub=pub, control=f"tcp://127.0.0.1:{free_port()}",
                                       max_frames=warmup + ticks, dashboard=False, status_every_s=1e9, meta_every_s=1.0,
                                       temporal=temporal, low_latency=low_latency, tick_cpu=tick_cpu, io_cpu=io_cpu,
                                       rt_priority=rt_priority, record=path, precision=precision,
                                       random_vit=random_vit, vit_weights=vit_weights, threads=threads,
                                       engines=engines,
                                       **many))  # fmt: skip
        result = _pipeline_run(cfg, ticks=ticks, warmup=warmup, baseline=baseline)
        if path:
            from vist_rt.runtime.pipeline import record_paths
            from vist_rt.runtime.record import read_recording

            rows = sum(len(read_recording(p)["rates"]) for p in record_paths(cfg).values())
            result["recording"]["rows"] = rows
            result["recording"]["complete"] = rows == result["recording"]["ticks"] * streams
    result.update({"checkpoint": "demo model (vist_rt/demo)" if checkpoint is None else checkpoint, "source": source,
                   "streams": streams, "width": width, "height": height})  # fmt: skip
    return result


def stream_configs(source: str, n: int, width: int | None = None, height: int | None = None) -> tuple[Any, ...]:
    """n streams s0..s{n-1} of `source` (the synthetic movie: seeds 0..n-1, so that their frames differ), frames
    of `width` x `height` where given."""
    from vist_rt.runtime.config import StreamConfig

    def spec(i: int) -> str:
        return f"synthetic:{i}" if source == "synthetic" else source

    return tuple(StreamConfig(name=f"s{i}", source=spec(i), width=width, height=height) for i in range(n))


def compare_streams(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures across runs of 1..N streams measured in one invocation: per-tick work and model compute per
    stream relative to one stream, the overhead p99's growth per extra stream, the largest N that held the clock."""
    base = results[0]

    def per_tick_model(r: dict[str, Any]) -> float:  # p50 ms of the batched temporal step + the batched ViT call
        st = r["stages_ms"]
        return sum(st[k]["p50"] for k in ("temporal", "preprocess", "vit") if st.get(k))

    rows = []
    for r in results:
        n = r["streams"]
        rows.append({
            "streams": n,
            "tick_work_p99_ms": r["tick_work_ms"]["p99"],
            "overhead_p50_ms": r["overhead_ms"]["p50"],
            "overhead_p99_ms": r["overhead_ms"]["p99"],
            "overhead_cpu_p50_ms": r["overhead_cpu_ms"]["p50"],
            "overhead_cpu_p99_ms": r["overhead_cpu_ms"]["p99"],
            "off_cpu_p99_ms": r["off_cpu_ms"]["p99"],
            "model_p50_ms": per_tick_model(r),
            "per_stream_cost_vs_1": (per_tick_model(r) + r["tick_work_ms"]["p50"]) / n
            / (per_tick_model(base) + base["tick_work_ms"]["p50"]),
            "missed": r["missed"],
            "stale": r["stale"],
            "held_clock": r["missed"] == 0 and r["rate_hz"] >= 0.99 * r["target_hz"],
        })  # fmt: skip

    def growth(key: str) -> float | None:  # the largest growth per extra stream, over the counts measured
        per = [(r[key] - rows[0][key]) / (r["streams"] - rows[0]["streams"]) for r in rows[1:]]
        return max(per) if per else None

    held = [r["streams"] for r in rows if r["held_clock"]]
    p99 = growth("overhead_p99_ms")
    return {
        "rows": rows,
        "overhead_p99_growth_ms_per_stream": p99,
        "overhead_p50_growth_ms_per_stream": growth("overhead_p50_ms"),
        "overhead_growth_met": None if p99 is None else p99 <= OVERHEAD_GROWTH_LIMIT_MS,
        # the same for the clock thread's own CPU time (what the pipeline itself adds per stream, scheduling aside)
        "overhead_cpu_p99_growth_ms_per_stream": growth("overhead_cpu_p99_ms"),
        "overhead_cpu_p50_growth_ms_per_stream": growth("overhead_cpu_p50_ms"),
        "largest_streams_holding_clock": max(held) if held else None,
    }


def _pipeline_run(cfg: Any, *, ticks: int, warmup: int, baseline: int) -> dict[str, Any]:
    """The run of `run_pipeline_bench`, its subscriber and the bare floor after it."""
    from vist_rt.runtime.lowlatency import CpuLatencyRequest
    from vist_rt.runtime.pipeline import Runtime
    from vist_rt.runtime.stats import RunStats

    pub, low_latency, tick_cpu, io_cpu = cfg.pub, cfg.low_latency, cfg.tick_cpu, cfg.io_cpu
    runtime = Runtime.from_config(cfg, log=lambda _: None)
    runtime.stats = RunStats(window=warmup + ticks + 64)  # every tick kept (the default window is a ring)
    mp = multiprocessing.get_context("spawn")
    results, stop, ready = mp.Queue(), mp.Event(), mp.Event()
    listener = mp.Process(target=_subscribe, args=(pub, results, stop, ready), daemon=True)
    listener.start()
    ready.wait(timeout=60.0)
    try:
        summary = runtime.run()
        time.sleep(0.3)  # the last messages reach the subscriber
    finally:
        stop.set()
    delivery, decode, headers = results.get(timeout=60.0)
    listener.join(timeout=10.0)
    kept = [(h, d, c) for h, d, c in zip(headers, delivery, decode) if h["tick"] >= warmup]
    # several streams: the same batched step is in each stream's header; one sample per tick (the first stream's)
    first = {h["stream"] for h, _, _ in kept if "stream" in h}
    one = sorted(first)[0] if first else None
    per_tick = [(h, d, c) for h, d, c in kept if h.get("stream") == one]
    stages = {}
    for stage in ("preprocess", "vit", "temporal", "e2e"):
        values = [h["lat_ms"][stage] / 1e3 for h, _, _ in per_tick
                  if not h["stale"] and h["lat_ms"].get(stage) is not None]  # fmt: skip
        stages[stage] = summarize(values) if values else None
    windows = [runtime.stats.latency[k] for k in ("overhead", "housekeeping")]
    overhead, housekeeping = (_timed(w.values, w.count, warmup) for w in windows)
    off_cpu, overhead_cpu = (_timed(*_window(runtime, k), warmup) for k in ("off_cpu", "overhead_cpu"))
    total = windows[0].values + windows[1].values  # all of a tick's work outside model compute
    tick_work = _timed(total, windows[0].count, warmup)
    deliver = summarize(np.asarray([d for _, d, _ in kept]) / 1e3)
    decoding = summarize(np.asarray([c for _, _, c in kept]) / 1e3)
    with CpuLatencyRequest(0) if low_latency else contextlib.nullcontext():
        bare = bare_zmq_delivery(baseline, hz=summary["target_hz"], tick_cpu=tick_cpu, io_cpu=io_cpu,
                                 rt_priority=cfg.rt_priority)  # fmt: skip
    return {
        "bench": "pipeline",
        "machine": machine_info(),
        "extractor": summary["extractor"],
        "feature_runtime": runtime.engine.extractor.runtime,  # backend, device, precision (and why, where auto)
        "sources": [s["source"] for s in summary["streams"]],  # as described once open (size, rate)
        "temporal": runtime.meta["temporal"],
        "recording": None
        if not cfg.record
        else {"ticks": summary["ticks"], "add_ms": _timed(*_window(runtime, "record"), warmup)},
        "low_latency": summary["low_latency"],
        "rt_priority": summary["rt_priority"],
        "tick_cpu": summary["tick_cpu"],
        "io_cpu": summary["io_cpu"],
        "pinning": cfg.pinning,
        "ticks": ticks,
        "warmup": warmup,
        "received": len(kept),
        "target_hz": summary["target_hz"],
        "rate_hz": summary["rate_hz"],
        "stale": summary["stale"],
        "stale_timed": sum(bool(h["stale"]) for h, _, _ in per_tick),  # of the timed ticks (warmup excluded)
        "missed": summary["missed"],
        "dropped": summary["dropped"],
        "stages_ms": stages,
        "overhead_ms": overhead,
        "overhead_cpu_ms": overhead_cpu,  # the clock thread's CPU time in it, model compute's excluded
        "off_cpu_ms": off_cpu,  # of the wake-up-to-send window: the clock thread not running (preempted, GIL)
        "housekeeping_ms": housekeeping,
        "tick_work_ms": tick_work,
        "delivery_ms": deliver,
        "subscriber_decode_ms": decoding,
        "bare_zmq_delivery_ms": bare,
        "delivery_p99_vs_bare": deliver["p99"] / bare["p99"] if bare else None,
        "targets": TARGETS,
        "met": {
            "overhead": overhead["p99"] <= TARGETS["overhead_p99_ms"],
            "delivery": deliver["p99"] <= TARGETS["delivery_p99_ms"],
        },
    }
