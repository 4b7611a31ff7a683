"""`vist-rt bench pipeline` runs end to end and reports every figure it names (not a timed test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vist_rt.cli import main


@pytest.mark.slow
def test_bench_pipeline_reports_its_figures(tmp_path: Path, run_checkpoint: Path, capsys, monkeypatch) -> None:
    from vist_rt.runtime import lowlatency

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the native kernels are compiled there
    dev = tmp_path / "cpu_dma_latency"  # stands in for the PM QoS device
    dev.write_bytes(b"")
    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(dev))
    out = tmp_path / "p.json"
    cpu = max(os.sched_getaffinity(0))
    args = ["bench", "pipeline", "--checkpoint", str(run_checkpoint), "--ticks", "30", "--warmup", "5",
            "--baseline", "20", "--temporal", "native", "--low-latency", "--tick-cpu", str(cpu), "--io-cpu", str(cpu),
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["temporal"] == "native"
    assert r["low_latency"] is True and dev.read_bytes() == bytes(4)  # --low-latency: the request was made
    assert r["tick_cpu"] == r["io_cpu"] == cpu and r["pinning"] == f"tick thread on CPU {cpu}, ZeroMQ I/O on CPU {cpu}"
    assert r["housekeeping_ms"]["n"] == r["tick_work_ms"]["n"] == 30
    o, h, both = r["overhead_ms"], r["housekeeping_ms"], r["tick_work_ms"]  # both = o + h, tick by tick
    assert o["min"] + h["min"] - 1e-9 <= both["min"] and both["max"] <= o["max"] + h["max"] + 1e-9
    assert all(both[q] >= max(o[q], h[q]) - 1e-9 for q in ("min", "p50", "p90", "p99", "max"))
    assert r["ticks"] == 30 and r["warmup"] == 5 and r["checkpoint"] == str(run_checkpoint)
    assert 25 <= r["received"] <= 30  # the subscriber got (nearly) every timed tick
    assert r["delivery_ms"]["n"] == r["subscriber_decode_ms"]["n"] == r["received"] and r["overhead_ms"]["n"] == 30
    assert r["off_cpu_ms"]["n"] == r["overhead_cpu_ms"]["n"] == 30 and r["off_cpu_ms"]["min"] >= 0
    assert 0 < r["overhead_cpu_ms"]["p50"] <= o["p50"] + 0.01  # its own CPU time: at most the wall time
    assert r["subscriber_decode_ms"]["min"] > 0 and r["delivery_ms"]["min"] > 0
    assert r["stages_ms"]["e2e"]["p50"] > 0 and set(r["met"]) == {"overhead", "delivery"}
    bare = r["bare_zmq_delivery_ms"]
    assert bare["n"] == 20 and 0 < bare["min"] <= bare["p99"] and r["delivery_p99_vs_bare"] > 0
    out_text = capsys.readouterr().out
    assert "pipeline overhead" in out_text and "bare ZeroMQ" in out_text and "decode" in out_text
    assert "not running" in out_text
    assert f"tick thread on CPU {cpu}" in out_text


@pytest.mark.slow
def test_bench_pipeline_times_a_dinov2_checkpoint_on_random_vit_weights(tmp_path: Path, dinov2_checkpoint, capsys):
    ckpt, _ = dinov2_checkpoint
    out = tmp_path / "p.json"
    args = ["bench", "pipeline", "--checkpoint", str(ckpt), "--random-vit", "2", "--precision", "fp32",
            "--ticks", "20", "--warmup", "3", "--baseline", "0", "--engines", str(tmp_path / "eng"),
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert "RANDOM" in r["extractor"] and "ViT-S/14 block 0" in r["extractor"]
    assert r["feature_runtime"]["precision"] == "fp32" and "chosen" not in r["feature_runtime"]
    assert 0 <= r["stale_timed"] <= r["received"] <= 20 and r["stale_timed"] <= r["stale"]
    assert r["stages_ms"]["vit"]["n"] == r["received"] - r["stale_timed"]
    text = capsys.readouterr().out
    assert "timed ticks" in text and "(fp32)" in text and "RANDOM" in text
    assert any((tmp_path / "eng" / "onnx").glob("*.onnx"))  # --engines


@pytest.mark.slow
def test_bench_pipeline_streams_compares_counts_in_one_run(tmp_path: Path, run_checkpoint: Path, capsys) -> None:
    out = tmp_path / "s.json"
    args = ["bench", "pipeline", "--checkpoint", str(run_checkpoint), "--ticks", "20", "--warmup", "5",
            "--baseline", "10", "--streams", "1,2", "--width", "96", "--height", "64", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    one, two = r["runs"]
    assert one["streams"] == 1 and two["streams"] == 2
    assert len(two["sources"]) == 2 and all("96x64" in s for s in one["sources"] + two["sources"])
    assert 2 * 15 <= two["received"] <= 2 * 20  # every stream's timed ticks reached the subscriber
    rows = r["streams"]["rows"]
    assert [row["streams"] for row in rows] == [1, 2] and rows[0]["per_stream_cost_vs_1"] == pytest.approx(1.0)
    assert rows[1]["per_stream_cost_vs_1"] > 0 and rows[1]["overhead_p99_ms"] > 0
    growth = r["streams"]["overhead_p99_growth_ms_per_stream"]
    own = r["streams"]["overhead_cpu_p99_growth_ms_per_stream"]
    assert own == pytest.approx(rows[1]["overhead_cpu_p99_ms"] - rows[0]["overhead_cpu_p99_ms"])
    assert growth == pytest.approx(rows[1]["overhead_p99_ms"] - rows[0]["overhead_p99_ms"])
    assert r["streams"]["overhead_growth_met"] == (growth <= 0.1)
    p50 = r["streams"]["overhead_p50_growth_ms_per_stream"]
    assert p50 == pytest.approx(rows[1]["overhead_p50_ms"] - rows[0]["overhead_p50_ms"])
    assert "overhead growth per extra stream: p99" in capsys.readouterr().out
    assert r["streams"]["largest_streams_holding_clock"] in (None, 1, 2)


def test_bench_pipeline_streams_refuses_bad_counts(capsys) -> None:
    for bad in ("0", "2,1", "a", "1,1"):
        with pytest.raises(SystemExit):
            main(["bench", "pipeline", "--streams", bad])
        err = capsys.readouterr().err
        assert "increasing counts" in err or "expected counts like" in err, err
