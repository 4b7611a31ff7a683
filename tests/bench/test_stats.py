import numpy as np
import pytest

from vist_rt.bench.stats import matmul_gflops, time_calls
from vist_rt.errors import VistError
from vist_rt.latency import summarize


def test_summary_in_milliseconds() -> None:
    s = summarize(np.arange(1, 101) / 1e3)  # 1..100 ms
    assert s["n"] == 100 and s["min"] == pytest.approx(1) and s["max"] == pytest.approx(100)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["jitter"] == pytest.approx(s["p99"] - s["p50"])
    assert s["mean"] == pytest.approx(50.5)


def test_empty_is_an_error() -> None:
    with pytest.raises(VistError):
        summarize([])


def test_time_calls_counts_warmup_separately() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), 5, warmup=3)
    assert len(times) == 5 and len(calls) == 8 and all(t >= 0 for t in times)


def test_matmul_rate_is_plausible() -> None:
    assert 0.1 < matmul_gflops(n=128, repeats=3) < 1e5
