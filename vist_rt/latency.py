"""Latency summaries in the field's convention: min / p50 / p90 / p99 / max and jitter (p99 - p50), in ms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vist_rt.errors import VistError


def summarize(samples_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Durations in seconds -> {n, min, p50, p90, p99, max, mean, jitter} in milliseconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise VistError("no samples to summarise")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size),
        "min": float(ms.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
        "jitter": float(p99 - p50),
    }
