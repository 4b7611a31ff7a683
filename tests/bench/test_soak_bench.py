"""`vist-rt bench soak` and `bench pipeline --record` run end to end and report their figures (not timed tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vist_rt.bench.soak import rss_bytes, slope_per_minute
from vist_rt.cli import main


def test_slope_and_rss() -> None:
    t = np.arange(0, 600, 5.0)
    assert slope_per_minute(t, 1000.0 + 2.0 * t) == pytest.approx(120.0)
    assert slope_per_minute(t[:1], t[:1]) == 0.0
    before = rss_bytes()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB touched
    held = rss_bytes()
    del block  # unmapped (above malloc's mmap threshold)
    after = rss_bytes()
    # either edge shows it (the kernel may reclaim other pages of a busy test process meanwhile)
    assert held - before > 32 << 20 or held - after > 32 << 20, (before, held, after)


@pytest.mark.slow
def test_bench_soak_reports_its_figures(tmp_path: Path, run_checkpoint: Path, capsys) -> None:
    out = tmp_path / "soak.json"
    args = ["bench", "soak", "--minutes", "0.2", "--checkpoint", str(run_checkpoint), "--source",
            "synthetic", "--fuzz-hz", "20", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["bench"] == "soak" and r["ticks"] >= 200 and r["command"].startswith("vist-rt bench soak")
    assert r["recording"] == {"rows": r["ticks"], "ticks": r["ticks"], "complete": True}
    assert r["control"]["unanswered"] == 0 and r["control"]["malformed_sent"] >= 100
    assert r["control"]["answered"] >= r["control"]["malformed_sent"]
    assert r["subscriber"]["lost"] == 0 and r["subscriber"]["rates"] >= r["ticks"] - 5
    assert len(r["samples"]) >= 3 and r["rss_mib"]["max"] >= r["rss_mib"]["first"] > 0
    assert {"rss_growth_pct", "rss_fit_growth_pct", "rss_slope_kib_per_min", "missed", "stale"} <= set(r)
    assert "memory growth < 1 %" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_pipeline_record_shows_the_recorders_cost(tmp_path: Path, run_checkpoint: Path, capsys) -> None:
    out = tmp_path / "p.json"
    args = ["bench", "pipeline", "--checkpoint", str(run_checkpoint), "--ticks", "40", "--warmup", "5",
            "--baseline", "0", "--record", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    rec = r["recording"]
    assert rec["rows"] == rec["ticks"] == 45 and rec["complete"] is True
    assert rec["add_ms"]["n"] == 40 and 0 < rec["add_ms"]["p50"] <= r["housekeeping_ms"]["p50"] + 1e-9
    assert "of which the recorder's" in capsys.readouterr().out
