"""The dashboard around a real Runtime: keys become requests the tick thread runs; an injected clock."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from tests.runtime.helpers import free_port
from vist_rt.dashboard import Dashboard
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.pipeline import Runtime


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _runtime(run_checkpoint: Path) -> Runtime:
    cfg = RunConfig(checkpoint=str(run_checkpoint), lockstep=True, source=None, pub=f"tcp://127.0.0.1:{free_port()}",
                    control=f"tcp://127.0.0.1:{free_port()}", meta_every_s=1e6, status_every_s=1e6)  # fmt: skip
    return Runtime.from_config(cfg, log=lambda _line: None)


def _text(dash: Dashboard) -> str:
    dash.console.print(dash.frame())
    return dash.console.export_text()


def test_frame_keys_and_clock(run_checkpoint: Path) -> None:
    rt = _runtime(run_checkpoint)
    clock = FakeClock()
    console = Console(record=True, width=110, height=40, color_system=None)
    dash = Dashboard(rt, console=console, clock=clock, stdin=io.StringIO())
    assert not dash.keys  # no TTY on stdin: no key reader, and the header does not offer keys
    clock.t += 42.0
    out = _text(dash)
    assert "up 42 s" in out and "tiny.safetensors: 5 cells at 30 Hz" in out and "keys:" not in out
    assert dash.picks == (0, 1, 2, 3)
    # ticks arrive: the history the mosaic and sparklines draw
    for v in (1.0, 2.0, 3.0):
        rt.history.push(np.full(5, v, np.float32))
    assert "last 3 ticks" in _text(dash)
    dash.on_key("p")
    assert not rt.paused  # requests run on the tick thread, at its next housekeeping
    rt._last_meta = time.perf_counter()  # no periodic meta due (the sockets are not open in this test)
    rt.housekeeping()
    assert rt.paused
    dash.on_key("P")  # case does not matter
    dash.on_key("r")
    dash.on_key("x")  # ignored
    rt.housekeeping()
    assert not rt.paused and len(rt.history.recent()) == 0  # reset clears what is drawn
    dash.on_key("q")
    assert rt.stopping


def test_a_stuck_drawing_never_holds_up_the_ticks(run_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """Drawing runs on its own thread: with every frame stuck, a replay still runs all its ticks at full speed."""
    import threading

    from tests.runtime.helpers import write_video

    frames = np.random.default_rng(0).integers(0, 255, size=(40, 48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "v.avi", frames, 30.0)
    cfg = RunConfig(checkpoint=str(run_checkpoint), source=f"video:{tmp_path / 'v.avi'}", replay=True,
                    pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}")  # fmt: skip
    rt = Runtime.from_config(cfg, log=lambda _line: None)
    stuck, drawn = threading.Event(), threading.Event()
    console = Console(record=True, width=110, height=40, color_system=None)
    dash = Dashboard(rt, console=console, refresh_hz=50.0, stdin=io.StringIO())
    first = dash.frame()  # the opening screen draws normally

    def frame_stuck():  # type: ignore[no-untyped-def]
        drawn.set()
        stuck.wait(30.0)
        return first

    with dash:
        monkeypatch.setattr(dash, "frame", frame_stuck)
        assert drawn.wait(10.0)  # the refresh thread is inside a stuck frame
        t0 = time.perf_counter()
        summary = rt.run()
        took = time.perf_counter() - t0
        stuck.set()
    assert summary["ticks"] == 40 and summary["mode"] == "replay" and took < 20.0
    assert not dash._threads[0].is_alive()


def test_drawing_errors_are_logged_not_fatal_and_start_up_failures_restore_the_runtime(run_checkpoint: Path) -> None:
    rt = _runtime(run_checkpoint)
    original_log = rt.log
    console = Console(record=True, width=110, height=40, color_system=None)
    dash = Dashboard(rt, console=console, refresh_hz=100.0, stdin=io.StringIO())
    calls = {"n": 0}

    def broken():  # type: ignore[no-untyped-def]
        calls["n"] += 1
        raise ValueError("bad frame")

    with dash:
        dash.frame = broken  # type: ignore[method-assign]
        deadline = time.monotonic() + 5.0
        while calls["n"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls["n"] >= 3 and dash._threads[0].is_alive()  # it keeps trying; the screen is not frozen dead
    assert [line for line in dash.lines if "cannot draw (ValueError: bad frame)" in line]  # said once
    assert sum("cannot draw" in line for line in dash.lines) == 1
    assert rt.log is original_log and rt.status_lines

    failing = Dashboard(rt, console=console, stdin=io.StringIO())
    failing.frame = broken  # type: ignore[method-assign]
    try:
        failing.__enter__()
    except ValueError:
        pass
    else:
        raise AssertionError("a failing first frame must propagate")
    assert rt.log is original_log and rt.status_lines  # the runtime is given back as it was


def test_two_quick_pauses_cancel_out_and_the_rate_excludes_paused_time(run_checkpoint: Path) -> None:
    rt = _runtime(run_checkpoint)
    rt._last_meta = time.perf_counter()
    dash = Dashboard(rt, console=Console(record=True, width=110), stdin=io.StringIO())
    dash.on_key("p")
    dash.on_key("p")
    rt.housekeeping()
    assert not rt.paused  # pause then resume, decided on the tick thread
    rt.pauses.restart()
    rt.handle({"cmd": "pause"}, None)
    time.sleep(0.3)
    s = rt.status()
    assert s["paused_s"] >= 0.29 and s["elapsed_s"] - s["paused_s"] < 0.1
    rt.handle({"cmd": "resume"}, None)
    rt.stats.ticks = 3
    time.sleep(0.1)
    s = rt.status()
    assert 0.29 <= s["paused_s"] < s["elapsed_s"] and s["rate_hz"] > 3 / s["elapsed_s"]
