"""Edge cases of the run-time pipeline: a failed start after the recorder, repeated source indices, a paused
start, the source's description, a slow replay source, a failing backend in replay, a source that ends."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from tests.runtime.helpers import wait_for, write_video
from tests.runtime.test_pipeline import _live, failing_engine, smooth_frames
from vist_rt.errors import VistError
from vist_rt.runtime import sources
from vist_rt.runtime.engine import Engine
from vist_rt.runtime.pipeline import Runtime, check_new_file
from vist_rt.runtime.record import read_recording

SIZE = (60, 80)


def run_in_thread(rt: Runtime, timeout: float = 20.0) -> dict[str, Any]:
    """rt.run() in a thread; fails (after stopping the run) if it has not returned within `timeout` s."""
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["summary"] = rt.run()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        st = rt.status()
        rt.stop()
        worker.join(10)
        pytest.fail(f"the run did not end within {timeout} s (ticks {st['ticks']}, features {st['features']})")
    if "error" in out:
        raise out["error"]
    return out["summary"]


def wait_until(cond: Callable[[], bool]) -> bool:
    return wait_for(cond, timeout=15.0)  # a run starts slower than a capture thread


class SameIndex(sources.SyntheticSource):
    """A rig that stamps every frame with index 5 (different pixels each time)."""

    def _read(self, timeout: float) -> sources.Frame | None:
        frame = super()._read(timeout)
        return None if frame is None else sources.Frame(5, frame.t_ns, frame.image)


def test_the_recording_is_closed_before_the_lsl_outlet(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    """liblsl has crashed in an outlet's teardown: by then every recorded row must be on disk."""
    from vist_rt.runtime import lsl, record

    order: list[str] = []
    outlets: list[Any] = []

    class FakeLsl:
        def __init__(self, meta: dict[str, Any], name: str = "vist-rt") -> None:
            self.pushed = 0
            outlets.append(self)

        def push(self, rates: np.ndarray, age_s: float) -> None:
            self.pushed += 1

        def __enter__(self) -> FakeLsl:
            return self

        def __exit__(self, *exc: object) -> None:
            order.append(f"lsl closed; recording has {len(read_recording(rec)['rates'])} rows")

    real_exit = record.Recorder.__exit__

    def recorder_exit(self, *exc):  # type: ignore[no-untyped-def]
        real_exit(self, *exc)
        order.append("recorder closed")

    monkeypatch.setattr(lsl, "LslOutlet", FakeLsl)
    monkeypatch.setattr(record.Recorder, "__exit__", recorder_exit)
    rec = tmp_path / "order.h5"
    cfg = _live(run_checkpoint, source="synthetic", lsl=True, record=str(rec), max_frames=5)
    rt = Runtime.from_config(cfg, log=lambda _: None)
    rt.run()
    assert order == ["recorder closed", "lsl closed; recording has 5 rows"] and [o.pushed for o in outlets] == [5]


def test_a_failing_lsl_outlet_leaves_no_recording(tmp_path: Path, run_checkpoint: Path, monkeypatch):
    from vist_rt.runtime import lsl

    class NoLsl:
        def __init__(self, meta: dict[str, Any], name: str = "vist-rt") -> None:
            raise VistError('--lsl needs pylsl: pip install "vist-rt[lsl]" (simulated)')

    monkeypatch.setattr(lsl, "LslOutlet", NoLsl)
    rec = tmp_path / "lsl.h5"
    cfg = _live(run_checkpoint, source="synthetic", lsl=True, record=str(rec))
    with pytest.raises(VistError, match="needs pylsl"):
        Runtime.from_config(cfg, log=lambda _: None).run()
    assert not rec.exists()
    check_new_file(str(rec))  # a retry (say without --lsl) is not refused with "exists"


def test_live_tells_frames_apart_when_the_source_repeats_its_index(run_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "make_source", lambda *a, **k: SameIndex(size=SIZE, max_frames=20))
    summary = run_in_thread(Runtime.from_config(_live(run_checkpoint, source="synthetic"), log=lambda _: None))
    assert summary["features"] >= 5, summary  # not only the first frame with index 5
    assert summary["ticks"] - summary["stale"] >= 5, summary  # and its ticks were fresh


def test_replay_uses_every_frame_when_the_source_repeats_its_index(
    tmp_path: Path, run_checkpoint: Path, monkeypatch
) -> None:
    monkeypatch.setattr(sources, "make_source", lambda *a, **k: SameIndex(size=SIZE, live=False, max_frames=10))
    cfg = _live(run_checkpoint, source="synthetic:replay", replay=True, record=str(tmp_path / "r.h5"))
    summary = run_in_thread(Runtime.from_config(cfg, log=lambda _: None))
    rec = read_recording(tmp_path / "r.h5")
    assert summary["features"] == 10 and summary["ticks"] == 10
    assert list(rec["frame"]) == [5] * 10  # the published `frame` is still the source's index
    assert len({r.tobytes() for r in rec["rates"]}) == 10


def test_live_started_paused_begins_its_clock_at_the_resume(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "make_source", lambda *a, **k: sources.SyntheticSource(size=SIZE))
    cfg = _live(run_checkpoint, source="synthetic", paused=True, max_frames=5, record=str(tmp_path / "p.h5"))
    rt = Runtime.from_config(cfg, log=lambda _: None)
    threading.Timer(0.8, lambda: rt.request("resume")).start()
    summary = run_in_thread(rt)
    ticks = list(read_recording(tmp_path / "p.h5")["tick"])
    assert ticks[0] == 0, ticks  # not ~24 ticks "served" while paused
    assert summary["paused_ticks"] == 0 and summary["ticks"] == 5


def test_the_source_is_described_once_open(tmp_path: Path, run_checkpoint: Path) -> None:
    # a zmq source on port 0 reports the port it bound
    rt = Runtime.from_config(_live(run_checkpoint, source="zmq:tcp://127.0.0.1:0"), log=lambda _: None)
    worker = threading.Thread(target=rt.run, daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: rt.capture is not None and rt.capture.running)
        assert wait_until(lambda: "zmq frames" in rt.meta["source"])
        port = int(re.search(r"tcp://127\.0\.0\.1:(\d+)", rt.status()["source"]).group(1))  # type: ignore[union-attr]
        assert port != 0 and rt.meta["source"] == rt.status()["source"]
    finally:
        rt.stop()
        worker.join(15)
    assert not worker.is_alive()
    # a video reports its size and rate, in the status and in a meta message published after it opened
    video = write_video(tmp_path / "d.avi", smooth_frames(6), fps=30.0)
    cfg = _live(run_checkpoint, source=f"video:{video}", replay=True, record=str(tmp_path / "d.h5"), meta_every_s=100.0)
    rt = Runtime.from_config(cfg, log=lambda _: None)
    run_in_thread(rt)
    desc = rt.status()["source"]
    assert "128x96" in desc and "30 fps" in desc, desc
    metas = read_recording(tmp_path / "d.h5")["meta"]
    assert metas[-1]["source"] == desc, [m["source"] for m in metas]


def test_replay_answers_control_while_it_waits_for_a_slow_source(run_checkpoint: Path, monkeypatch) -> None:
    gate = threading.Event()

    class Slow(sources.SyntheticSource):
        def _read(self, timeout: float) -> sources.Frame | None:
            if self._next >= 3 and not gate.is_set():  # frame 3 is slow to come
                gate.wait(timeout)
                return None
            return super()._read(timeout)

    monkeypatch.setattr(sources, "make_source", lambda *a, **k: Slow(size=SIZE, live=False, max_frames=6))
    cfg = _live(run_checkpoint, source="synthetic:replay", replay=True)
    rt = Runtime.from_config(cfg, log=lambda _: None)
    worker = threading.Thread(target=rt.run, daemon=True)
    worker.start()
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    try:
        assert wait_until(lambda: rt.tick >= 2)  # ticks 0 and 1 are out; tick 2 waits for frame 3
        time.sleep(0.3)
        req.connect(cfg.control)
        req.send_json({"cmd": "status"})
        assert req.poll(2_000), "no control reply while the replay waits for its source"
        reply = req.recv_json()
        assert reply["ok"] and reply["ticks"] == 2
    finally:
        req.close()
        ctx.term()
        gate.set()
        worker.join(15)
    assert not worker.is_alive() and rt.stats.ticks == 6


def test_replay_stops_with_one_line_when_the_feature_stage_fails(run_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        sources, "make_source", lambda *a, **k: sources.SyntheticSource(size=SIZE, live=False, max_frames=20)
    )
    engine = failing_engine(run_checkpoint, "CUDA out of memory (simulated)\nmore detail")
    cfg = _live(run_checkpoint, source="synthetic:replay", replay=True)
    with pytest.raises(VistError, match=r"^the feature stage failed: RuntimeError: CUDA out of memory \(simulated\)$"):
        run_in_thread(Runtime.from_engine(cfg, engine, log=lambda _: None))


def test_live_stops_when_its_source_ends_while_paused(run_checkpoint: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "make_source", lambda *a, **k: sources.SyntheticSource(size=SIZE, max_frames=20))
    logs: list[str] = []
    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic"), log=logs.append)

    def pause_after_a_few_ticks() -> None:
        if wait_until(lambda: rt.tick >= 3):
            rt.request("pause")

    threading.Thread(target=pause_after_a_few_ticks, daemon=True).start()
    summary = run_in_thread(rt, timeout=10.0)
    assert summary["paused"] and any("the source ended" in line for line in logs)
    # started paused and never resumed: it stops too
    logs.clear()
    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic", paused=True), log=logs.append)
    summary = run_in_thread(rt, timeout=10.0)
    assert summary["ticks"] == 0 and any("the source ended" in line for line in logs)


def test_live_stops_when_its_last_frame_fails_in_the_feature_stage(run_checkpoint: Path, monkeypatch) -> None:
    class DarkEnd(sources.SyntheticSource):
        """The last frame is black: the feature stage below rejects it."""

        def _read(self, timeout: float) -> sources.Frame | None:
            frame = super()._read(timeout)
            if frame is not None and frame.index == 11:
                frame = sources.Frame(frame.index, frame.t_ns, np.zeros_like(frame.image))
            return frame

    monkeypatch.setattr(sources, "make_source", lambda *a, **k: DarkEnd(size=SIZE, max_frames=12))
    engine = Engine.from_files(run_checkpoint, log=lambda _: None)
    fast = engine.features

    def picky(image, color="bgr"):  # type: ignore[no-untyped-def]
        if not image.any():
            raise VistError("a black frame (simulated)")
        return fast(image, color)

    engine.features = picky  # type: ignore[method-assign]
    logs: list[str] = []
    summary = run_in_thread(
        Runtime.from_engine(_live(run_checkpoint, source="synthetic"), engine, log=logs.append), 10.0
    )
    assert any("the source ended" in line for line in logs)
    assert any("black frame" in e for e in summary["errors"]), summary["errors"]


def test_the_feature_thread_does_not_spin_after_the_source_ended(run_checkpoint: Path) -> None:
    class Ended:
        ended, calls = True, 0

        def latest(self, after: int | None = None, *, timeout: float = 0.0) -> None:
            self.calls += 1
            return None  # at once, as CaptureThread.latest does once the capture has ended

    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic"), log=lambda _: None)
    ended = rt.streams[0].capture = Ended()  # type: ignore[assignment]
    worker = threading.Thread(target=rt.groups[0].feature_loop, args=(rt.stop_event, rt.stats), daemon=True)
    worker.start()
    time.sleep(0.5)
    rt.stop()
    worker.join(5)
    assert not worker.is_alive() and ended.calls <= 20, ended.calls


def test_work_after_the_send_is_housekeeping_not_overhead(run_checkpoint: Path, monkeypatch) -> None:
    """Periodic work (meta, flushes, status lines) runs after the send: it delays no rates, and is reported apart."""
    periodic = Runtime.periodic

    def slow_periodic(self: Runtime) -> None:
        time.sleep(0.005)  # a slow disk flush
        periodic(self)

    monkeypatch.setattr(sources, "make_source", lambda *a, **k: sources.SyntheticSource(size=SIZE))
    monkeypatch.setattr(Runtime, "periodic", slow_periodic)
    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic", max_frames=12), log=lambda _: None)
    summary = run_in_thread(rt)
    lat = summary["latency_ms"]
    assert lat["overhead"]["n"] == lat["housekeeping"]["n"] == 12
    assert lat["housekeeping"]["min"] >= 5.0 > lat["overhead"]["p50"]
    assert lat["e2e"]["max"] < 1e3 / 30 + 5.0  # the send is not behind the 5 ms (e2e <= one period + work)


def test_a_key_pressed_during_the_wait_acts_on_that_tick(run_checkpoint: Path, monkeypatch) -> None:
    """pause from the dashboard (queued while the clock waits) stops the very next tick, as before the send."""
    monkeypatch.setattr(sources, "make_source", lambda *a, **k: sources.SyntheticSource(size=SIZE))
    rt = Runtime.from_config(_live(run_checkpoint, source="synthetic"), log=lambda _: None)
    wait = rt.poll_control

    def poll(seconds: float) -> None:
        if rt.stats.ticks == 10 and not rt.paused and "queued" not in rt.__dict__:
            rt.__dict__["queued"] = True
            rt.request("toggle-pause")
        wait(seconds)

    rt.poll_control = poll  # type: ignore[method-assign]
    worker = threading.Thread(target=rt.run, daemon=True)
    worker.start()
    try:
        assert wait_until(lambda: rt.stats.paused_ticks >= 3)
    finally:
        rt.stop()
        worker.join(10)
    assert rt.stats.ticks == 10  # the tick whose wait saw the key was not published
