"""`vist-rt bench pipeline`: a live run measured the field's way, plus the pipeline's own overhead and
ZeroMQ delivery latency to a subscriber on loopback (in its own process, as a rig would be)."""

from __future__ import annotations

import multiprocessing
import socket
import time
from typing import Any

import numpy as np

from vist_rt.bench.stats import machine_info, summarize

TARGETS = {"overhead_p99_ms": 0.5, "delivery_p99_ms": 0.3}


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _subscribe(endpoint: str, results: Any, stop: Any, ready: Any) -> None:
    """In its own process (as a rig would be): receive rates, note each one's delivery latency."""
    from vist_rt.client import Subscriber

    delivery: list[float] = []
    headers: list[dict[str, Any]] = []
    with Subscriber(endpoint, timeout_ms=100) as sub:
        ready.set()
        while not stop.is_set():
            msg = sub.recv(100)
            if msg is None or msg.topic != "rates":
                continue
            delivery.append((time.time_ns() - msg.header["t_pub_ns"]) / 1e6)
            headers.append(msg.header)
    results.put((delivery, headers))


def run_pipeline_bench(
    checkpoint: str | None = None, *, ticks: int = 1000, warmup: int = 60, source: str = "synthetic"
) -> dict[str, Any]:
    """A live run of warmup + ticks model ticks with a subscriber attached; every figure as a dict."""
    from vist_rt.demo import demo_checkpoint
    from vist_rt.runtime.config import RunConfig
    from vist_rt.runtime.pipeline import Runtime

    ckpt = checkpoint or str(demo_checkpoint())
    pub = f"tcp://127.0.0.1:{free_port()}"
    cfg = RunConfig(source=source, checkpoint=ckpt, pub=pub, control=f"tcp://127.0.0.1:{free_port()}",
                    max_frames=warmup + ticks, dashboard=False, status_every_s=1e9, meta_every_s=1.0)  # fmt: skip
    runtime = Runtime.from_config(cfg, log=lambda _: None)
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
    delivery, headers = results.get(timeout=60.0)
    listener.join(timeout=10.0)
    kept = [(h, d) for h, d in zip(headers, delivery) if h["tick"] >= warmup]
    stages = {}
    for stage in ("preprocess", "vit", "temporal", "e2e"):
        values = [h["lat_ms"][stage] / 1e3 for h, _ in kept if not h["stale"] and h["lat_ms"].get(stage) is not None]
        stages[stage] = summarize(values) if values else None
    window = runtime.stats.latency["overhead"]
    overhead = summarize(window.values[warmup : min(window.count, len(window.values))] / 1e3)
    deliver = summarize(np.asarray([d for _, d in kept]) / 1e3)
    return {
        "bench": "pipeline",
        "machine": machine_info(),
        "checkpoint": "demo model (vist_rt/demo)" if checkpoint is None else checkpoint,
        "extractor": summary["extractor"],
        "source": source,
        "ticks": ticks,
        "warmup": warmup,
        "received": len(kept),
        "target_hz": summary["target_hz"],
        "rate_hz": summary["rate_hz"],
        "stale": summary["stale"],
        "missed": summary["missed"],
        "dropped": summary["dropped"],
        "stages_ms": stages,
        "overhead_ms": overhead,
        "delivery_ms": deliver,
        "targets": TARGETS,
        "met": {
            "overhead": overhead["p99"] <= TARGETS["overhead_p99_ms"],
            "delivery": deliver["p99"] <= TARGETS["delivery_p99_ms"],
        },
    }
