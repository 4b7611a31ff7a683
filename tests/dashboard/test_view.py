"""The dashboard's drawing, rendered into a recording Console of fixed width (no terminal, no threads)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from rich.console import Console

from vist_rt.dashboard.view import AMBER, OK, RED, SPARK, Snapshot, health, render, sparkline
from vist_rt.runtime.stats import RunStats


def status(**kw: Any) -> dict[str, Any]:
    stats = RunStats()
    for ms in np.linspace(1.0, 3.0, 50):
        stats.add_latencies({"capture": 0.1, "preprocess": 0.2, "vit": ms, "temporal": 1.5, "publish": 0.05,
                             "e2e": ms + 2.0, "overhead": 0.1})  # fmt: skip
    s = stats.snapshot()
    s.update(ticks=300, stale=4, missed=0, messages=305, mode="live", paused=False, source="synthetic (seed 0)",
             source_state="running", dropped=2, source_errors=0, target_hz=30.0, rate_hz=30.0,
             pub="tcp://127.0.0.1:5556", control="tcp://127.0.0.1:5557", record=None, torch_threads=1,
             extractor="raw grey pixel patches (196-dim, no ViT): NOT DINOv2 features",
             runtime={"backend": "torch", "device": "cpu", "precision": "fp32"})  # fmt: skip
    s.update(kw)
    return s


META = {"n": 3, "fps": 30.0, "units": "spikes/s", "cell_ids": ["on-1", "off-2", "on-3"], "dinov2": False,
        "model": {"checkpoint": "demo.safetensors", "demo": True}, "device": "cpu",
        "rf_centres": [[0.05, 0.05], [0.95, 0.95], None]}  # fmt: skip


def snap(history: np.ndarray | None = None, **kw: Any) -> Snapshot:
    h = np.tile(np.array([[1.0, 8.0, 0.0]], np.float32), (20, 1)) if history is None else history
    recent = {k: kw.pop(k, 0) for k in ("missed_recent", "stale_recent")}
    return Snapshot(status=status(**kw), meta=META, history=h, picks=(0, 1), uptime_s=12.0,
                    log=("reset: done (tick 100)",), **recent)  # fmt: skip


def _lat(**p99: float) -> dict[str, Any]:
    """status()'s latency_ms with the given stages' p99 replaced (ms)."""
    lat = status()["latency_ms"]
    return {k: ({**v, "p99": p99[k]} if k in p99 and v else v) for k, v in lat.items()}


def text_of(renderable: Any, width: int = 120) -> str:
    console = Console(record=True, width=width, height=40, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_everything_a_lab_needs_is_on_screen() -> None:
    out = text_of(render(snap(), 120, 40))
    for want in ("demo model (simulated retina, cpu-small): 3 cells at 30 Hz", "NOT DINOv2", "torch / cpu / fp32",
                 "synthetic (seed 0) (running) live", "pub tcp://127.0.0.1:5556", "control tcp://127.0.0.1:5557",
                 "up 12 s", "q quit, r reset, p pause/resume", "30.00 / 30.00 Hz", "stale 4", "missed 0",
                 "dropped 2", "published 305", "population", "on-1", "off-2", "reset: done"):  # fmt: skip
        assert want in out, want
    for stage in ("capture", "preprocess", "vit", "temporal", "publish", "e2e", "overhead"):
        assert any(line.strip("│ ").startswith(stage) for line in out.splitlines()), stage
    e2e = next(line for line in out.splitlines() if line.strip("│ ").startswith("e2e"))
    assert "4.00" in e2e and "5.00" in e2e  # p50 and max of 3..5 ms


def test_low_latency_is_shown_only_while_held() -> None:
    assert "low latency" not in text_of(render(snap(), 120, 40))
    assert "torch threads 1   low latency (PM QoS)" in text_of(render(snap(low_latency=True), 120, 40))
    assert "torch threads 1, ViT threads 3" in text_of(render(snap(vit_threads=3), 120, 40))


def test_pinned_cpus_are_shown_when_pinned() -> None:
    assert "CPU" not in text_of(render(snap(tick_cpu=None, io_cpu=None), 120, 40))
    pinned = text_of(render(snap(low_latency=True, tick_cpu=0, io_cpu=3), 140, 40), width=140)
    assert "low latency (PM QoS)   tick CPU 0   I/O CPU 3" in pinned
    assert "tick CPU 1" in text_of(render(snap(tick_cpu=1), 120, 40)) and "I/O CPU" not in text_of(
        render(snap(tick_cpu=1), 120, 40)
    )


def test_mosaic_puts_cells_at_their_rf_centres() -> None:
    lines = text_of(render(snap(), 120, 40)).splitlines()
    rows = [i for i, line in enumerate(lines) if "●" in line]
    assert len(rows) == 2  # the third cell has no RF: not drawn
    top, bottom = lines[rows[0]], lines[rows[1]]
    # cell 0 top-left, cell 1 bottom-right of the map (the right-hand panel)
    assert top.index("●") < bottom.index("●") and rows[0] < rows[1]


def test_sparkline_scales_and_keeps_the_newest() -> None:
    assert sparkline(np.array([0.0, 1.0, 2.0]), 10) == SPARK[0] + SPARK[4] + SPARK[-1]
    assert sparkline(np.arange(100.0), 5)[-1] == SPARK[-1] and len(sparkline(np.arange(100.0), 5)) == 5
    assert sparkline(np.zeros(4), 8) == SPARK[0] * 4 and sparkline(np.zeros(0), 8) == ""
    assert sparkline(np.array([np.inf, np.nan, 1.0]), 8) == SPARK[0] * 2 + SPARK[-1]  # non-finite: drawn as 0


def test_non_finite_rates_draw() -> None:
    h = np.array([[np.inf, np.nan, 1.0], [1.0, 2.0, -np.inf]], np.float32)
    assert "population" in text_of(render(snap(history=h), 120, 40))


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({}, OK),
        ({"missed": 3}, AMBER),  # missed some earlier, keeping up now
        ({"missed": 3, "missed_recent": 2}, RED),  # missing now
        ({"rate_hz": 25.0}, RED),
        ({"rate_hz": 29.5}, AMBER),
        ({"mode": "replay", "rate_hz": 300.0}, OK),  # replay runs as fast as it can
        ({"latency_ms": _lat(e2e=32.0)}, OK),  # live e2e includes the wait for the next tick: not judged
        ({"latency_ms": _lat(temporal=20.0)}, AMBER),  # a tick's work over half the 33-ms period
        ({"latency_ms": _lat(temporal=30.0, overhead=5.0)}, RED),  # over a whole period
        ({"stale_recent": 3}, AMBER),  # the features lag the clock now
    ],
)
def test_colours_turn_when_the_clock_cannot_be_held(kw: dict[str, Any], want: str) -> None:
    assert health(snap(**kw)) == want


def test_red_is_drawn_in_colour() -> None:
    console = Console(record=True, width=120, height=40, color_system="truecolor", force_terminal=True)
    console.print(render(snap(rate_hz=20.0, missed=50, missed_recent=5), 120, 40))
    assert "\x1b[31m" in console.export_text(styles=True)  # red


def test_a_small_terminal_gets_one_line_not_a_traceback() -> None:
    out = text_of(render(snap(), 40, 10), width=40)
    assert "terminal too small (40x10" in out and "tick 300" in out


def test_empty_history_and_paused() -> None:
    out = text_of(render(snap(history=np.zeros((0, 3), np.float32), paused=True), 100, 30), width=100)
    assert "PAUSED" in out and "last 0 ticks" in out


def test_several_streams_get_one_row_each() -> None:
    rows = [
        {"name": "left", "source": "camera 0", "source_state": "running", "stopped": None, "paused": False,
         "ticks": 290, "stale": 3, "paused_ticks": 0, "dropped": 1, "source_errors": 0},
        {"name": "right", "source": "zmq", "source_state": "ended", "stopped": "the source ended (zmq)",
         "paused": False, "ticks": 120, "stale": 0, "paused_ticks": 0, "dropped": 0, "source_errors": 7},
        {"name": "rig3", "source": "camera 1", "source_state": "running", "stopped": None, "paused": True,
         "ticks": 44, "stale": 2, "paused_ticks": 9, "dropped": 0, "source_errors": 0},
    ]  # fmt: skip
    ramp = np.linspace(0.0, 4.0, 30, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    s = Snapshot(status=status(streams=rows), meta=META, history=ramp, picks=(0,),
                 stream_history=(ramp, ramp[:0], ramp * 0))  # fmt: skip
    out = text_of(render(s, 120, 40))
    lines = {name: next(line for line in out.splitlines() if f" {name} " in line) for name in ("left", "right", "rig3")}
    assert "running" in lines["left"] and "290" in lines["left"] and SPARK[-1] in lines["left"]
    assert "stopped" in lines["right"] and "120" in lines["right"] and "7" in lines["right"]
    assert "PAUSED" in lines["rig3"] and "44" in lines["rig3"]
    one = text_of(render(snap(), 120, 40))  # one stream: no streams panel
    assert "streams (population rate)" in out and "streams (population rate)" not in one
