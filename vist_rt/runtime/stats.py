"""Run-time counters and latency windows (fixed-size rings: nothing grows with run length)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from vist_rt.latency import summarize

# overhead: a tick's work from the clock's wake-up to the send, model compute excluded; housekeeping: the
# rest of a live tick, after the send (recording, counters, meta messages, flushes, status lines); record: the
# recorder's share of it (the journal write, and an HDF5 flush when one is due); off_cpu (live): of the clock's
# wake-up-to-send window, the time its thread did not run (preempted, or waiting for the GIL or a lock);
# overhead_cpu (live): the clock thread's CPU time in that window, the model's excluded (the pipeline's own work)
STAGES = ("capture", "preprocess", "vit", "temporal", "publish", "e2e", "overhead", "overhead_cpu", "off_cpu",
          "housekeeping", "record")  # fmt: skip


class LatencyWindow:
    """The last `size` samples (ms) of one stage, in a preallocated ring."""

    def __init__(self, size: int = 4096) -> None:
        self.values = np.zeros(size, np.float64)
        self.count = 0

    def add(self, ms: float) -> None:
        """Record one sample."""
        self.values[self.count % len(self.values)] = ms
        self.count += 1

    def summary(self) -> dict[str, float] | None:
        """min/p50/p90/p99/max/jitter over the window, or None before the first sample."""
        if self.count == 0:
            return None
        return summarize(self.values[: min(self.count, len(self.values))] / 1e3)


class RunStats:
    """What the status line, the control `status` command and the final summary report."""

    def __init__(self, window: int = 4096) -> None:
        self.lock = threading.Lock()
        self.latency = {stage: LatencyWindow(window) for stage in STAGES}
        self.ticks = 0  # rates messages published
        self.stale = 0
        self.missed = 0
        self.features = 0  # frames through the feature stage
        self.messages = 0  # every message published (rates and meta)
        self.paused_ticks = 0
        self.errors: list[str] = []  # the last few error lines (bounded)

    def add_latencies(self, lat: dict[str, float]) -> None:  # values in ms
        """Record one tick's per-stage latencies (ms); stages absent from `lat` are skipped."""
        with self.lock:
            for stage, ms in lat.items():
                if stage in self.latency:
                    self.latency[stage].add(ms)

    def error(self, line: str) -> None:
        """Remember an error line (the last 20)."""
        with self.lock:
            self.errors = [*self.errors[-19:], line]

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter and latency summary (percentiles computed outside the lock)."""
        with self.lock:
            windows = {k: (w.values.copy(), w.count) for k, w in self.latency.items()}
            counters = {
                "ticks": self.ticks,
                "stale": self.stale,
                "missed": self.missed,
                "features": self.features,
                "messages": self.messages,
                "paused_ticks": self.paused_ticks,
                "errors": list(self.errors),
            }
        latency = {k: None if n == 0 else summarize(v[: min(n, len(v))] / 1e3) for k, (v, n) in windows.items()}
        return {**counters, "latency_ms": latency}


class RateHistory:
    """The last `size` ticks' rates of every cell, `[size, C]`, in a preallocated ring (the dashboard's view)."""

    def __init__(self, cells: int, size: int = 240) -> None:
        self.lock = threading.Lock()
        self.ring = np.zeros((size, cells), np.float32)
        self.count = 0

    def push(self, rates: np.ndarray) -> None:
        """Store one tick's rates `[C]` (copied into the ring: nothing allocated)."""
        with self.lock:
            self.ring[self.count % len(self.ring)] = rates
            self.count += 1

    def clear(self) -> None:
        """Forget the history (after a reset)."""
        with self.lock:
            self.count = 0

    def recent(self) -> np.ndarray:
        """A copy of the stored ticks, oldest first, `[min(count, size), C]`."""
        with self.lock:
            n, size = self.count, len(self.ring)
            if n <= size:
                return self.ring[:n].copy()
            return np.roll(self.ring, -(n % size), axis=0)
