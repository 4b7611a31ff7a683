"""`vist-rt bench soak`: a long live run with a recording, a subscriber, status requests and malformed control
requests, watched for memory growth, missed and stale ticks, and recording completeness."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.bench.pipeline import free_port
from vist_rt.bench.stats import machine_info
from vist_rt.errors import VistError

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _count(endpoint: str, results: Any, stop: Any, ready: Any) -> None:
    """In its own process (a rig): count the rates messages and the seq gaps seen on both topics."""
    from vist_rt.client import Subscriber

    rates = 0
    with Subscriber(endpoint, timeout_ms=100) as sub:
        ready.set()
        while not stop.is_set():
            msg = sub.recv(100)
            if msg is not None and msg.topic == "rates":
                rates += 1
        while (msg := sub.recv(200)) is not None:
            rates += msg.topic == "rates"
        results.put({"rates": rates, "lost": sub.lost, "first_seq": sub.first_seq, "last_seq": sub.last_seq})


def slope_per_minute(t_s: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of `values` over `t_s` (seconds), per minute."""
    if len(t_s) < 2:
        return 0.0
    return float(np.polyfit(t_s, values, 1)[0] * 60.0)


def run_soak(
    minutes: float,
    *,
    checkpoint: str | None = None,
    source: str = "synthetic",
    fuzz_hz: float = 2.0,
    sample_s: float = 5.0,
    warmup_s: float = 60.0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """A live run of `minutes` with --record, a subscriber process, a status request per sample and `fuzz_hz`
    malformed control requests per second; RSS sampled every `sample_s` (the first `warmup_s` left out of the
    slope and growth, while allocators and caches settle). Every figure as a dict."""
    import zmq

    from vist_rt.bench.fuzz import malformed_request
    from vist_rt.demo import demo_checkpoint
    from vist_rt.runtime.config import RunConfig
    from vist_rt.runtime.pipeline import Runtime
    from vist_rt.runtime.record import read_recording

    if not Path("/proc/self/statm").exists():
        raise VistError("bench soak reads the resident memory from /proc/self/statm (Linux); there is none here")
    duration = minutes * 60.0
    warmup_s = min(warmup_s, duration / 4)
    with tempfile.TemporaryDirectory(prefix="vist-soak-") as tmp:
        record = Path(tmp) / "soak.h5"
        pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        cfg = RunConfig(source=source, checkpoint=checkpoint or str(demo_checkpoint()), pub=pub, control=ctl,
                        record=str(record), dashboard=False, status_every_s=1e9)  # fmt: skip
        runtime = Runtime.from_config(cfg, log=log)
        mp = multiprocessing.get_context("spawn")
        results, stop, ready = mp.Queue(), mp.Event(), mp.Event()
        listener = mp.Process(target=_count, args=(pub, results, stop, ready), daemon=True)
        listener.start()
        ready.wait(timeout=60.0)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["summary"] = runtime.run()
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="vist-soak-run", daemon=True)
        worker.start()
        rng = np.random.default_rng(0)
        samples: list[tuple[float, int]] = []
        answered = unanswered = fuzz_sent = 0
        ctx = zmq.Context()
        req = None
        try:
            while runtime.stats.ticks == 0 and worker.is_alive():
                time.sleep(0.05)
            start = time.perf_counter()
            next_sample, next_fuzz = start, start
            while worker.is_alive() and (now := time.perf_counter()) - start < duration:
                if req is None:
                    req = ctx.socket(zmq.REQ)
                    req.setsockopt(zmq.LINGER, 0)
                    req.connect(ctl)
                if now >= next_sample:
                    samples.append((now - start, rss_bytes()))
                    parts, next_sample = [b'{"cmd": "status"}'], next_sample + sample_s
                    if len(samples) % 12 == 1:
                        log(f"{(now - start) / 60:.1f} min: RSS {samples[-1][1] / 2**20:.1f} MiB, "
                            f"ticks {runtime.stats.ticks}, missed {runtime.stats.missed}")  # fmt: skip
                elif fuzz_hz > 0 and now >= next_fuzz:
                    parts, next_fuzz = malformed_request(rng)[1], next_fuzz + 1.0 / fuzz_hz
                    fuzz_sent += 1
                else:
                    time.sleep(min(next_sample, next_fuzz if fuzz_hz > 0 else next_sample) - now)
                    continue
                req.send_multipart(parts)
                if req.poll(5000):
                    req.recv_multipart()
                    answered += 1
                else:  # a REQ socket without its reply is stuck: a new one
                    unanswered += 1
                    req.close(0)
                    req = None
            samples.append((time.perf_counter() - start, rss_bytes()))
        finally:
            if req is not None:
                req.close(0)
            ctx.term()
            runtime.stop()
            worker.join(timeout=60.0)
            time.sleep(0.5)
            stop.set()
        counted = results.get(timeout=60.0)
        listener.join(timeout=10.0)
        if "error" in outcome:
            raise outcome["error"]
        summary = outcome["summary"]
        rec = read_recording(record)
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples], dtype=np.float64)
    settled = t >= warmup_s
    base = float(rss[settled][0]) if settled.any() else float(rss[0])
    slope = slope_per_minute(t[settled], rss[settled])
    settled_minutes = (t[settled][-1] - t[settled][0]) / 60.0 if settled.sum() > 1 else 0.0
    rows = len(rec["rates"])
    return {
        "bench": "soak",
        "machine": machine_info(),
        "minutes": minutes,
        "source": source,
        "checkpoint": "demo model (vist_rt/demo)" if checkpoint is None else checkpoint,
        "extractor": summary["extractor"],
        "ticks": summary["ticks"],
        "target_hz": summary["target_hz"],
        "rate_hz": summary["rate_hz"],
        "missed": summary["missed"],
        "stale": summary["stale"],
        "dropped": summary["dropped"],
        "rss_mib": {
            k: float(v) / 2**20
            for k, v in (("first", rss[0]), ("settled", base), ("last", rss[-1]), ("max", rss.max()))
        },
        "rss_slope_kib_per_min": slope / 1024,
        "rss_growth_pct": 100.0 * (rss[-1] - base) / base,
        "rss_fit_growth_pct": 100.0 * slope * settled_minutes / base,
        "warmup_s": warmup_s,
        "samples": [[round(a, 1), int(b)] for a, b in samples],
        "recording": {"rows": rows, "ticks": summary["ticks"], "complete": rows == summary["ticks"]},
        "subscriber": counted,
        "control": {"answered": answered, "unanswered": unanswered, "malformed_sent": fuzz_sent},
        "housekeeping_ms": summary["latency_ms"].get("housekeeping"),
        "targets": {"rss_growth_pct": 1.0},
        "met": {"memory": abs(100.0 * (rss[-1] - base) / base) < 1.0 and rows == summary["ticks"]},
    }
