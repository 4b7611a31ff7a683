"""CaptureThread: newest frame in drop mode, every frame in order without drop, no torn frames, clean stop."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import numpy as np
import pytest

from tests.runtime.helpers import wait_for
from vist_rt.errors import VistError
from vist_rt.runtime.capture import CaptureThread
from vist_rt.runtime.sources import Frame, Source, SyntheticSource

H, W = 32, 40


class CountingSource(Source):
    """Frame i has every pixel equal to i % 256. Optionally gated (one frame per `release()`), finite, resizing."""

    live = True

    def __init__(
        self,
        n: int | None = None,
        shape: tuple[int, ...] | None = (H, W),
        gated: bool = False,
        resize_at: int | None = None,
        fail_at: int | None = None,
        step: int = 1,
    ) -> None:
        super().__init__()
        self.step = step
        self.n, self._shape, self.gated, self.resize_at, self.fail_at = n, shape, gated, resize_at, fail_at
        self.gate = threading.Semaphore(0)
        self.i = 0
        self.closed = 0
        self._buf: np.ndarray | None = None

    def describe(self) -> str:
        return "counting"

    def _open(self) -> None:
        self.shape = self._shape
        self.i = 0

    def _close(self) -> None:
        self.closed += 1

    def _read(self, timeout: float) -> Frame | None:
        if self.n is not None and self.i >= self.n:
            self._finish()
            return None
        if self.gated and not self.gate.acquire(timeout=timeout):
            return None
        if self.fail_at is not None and self.i == self.fail_at:
            raise RuntimeError("boom")
        shape = (H, W) if self._shape is None else self._shape
        if self.resize_at is not None and self.i == self.resize_at:
            shape = (H + 2, W)
        if self.borrow and self._buf is not None and self._buf.shape == shape:
            image = self._buf
            image.fill(self.i % 256)
        else:
            image = np.full(shape, self.i % 256, np.uint8)
            if self.borrow:
                self._buf = image
        frame = Frame(self.i * self.step, self.i * 1000, image)
        self.i += 1
        return frame


def test_latest_is_the_newest_frame_and_waits_for_new_ones():
    src = CountingSource(gated=True)
    with CaptureThread(src, ring=4) as cap:
        assert cap.shape == (H, W) and src.borrow
        assert cap.latest() is None and cap.latest(timeout=0.02) is None
        for _ in range(3):
            src.gate.release()
        assert wait_for(lambda: cap.captured == 3)
        f = cap.latest()
        assert (f.index, f.t_ns, f.seq) == (2, 2000, 2) and np.all(f.image == 2)
        assert cap.latest(after=f.seq) is None  # nothing newer
        threading.Timer(0.05, src.gate.release).start()
        g = cap.latest(after=f.seq, timeout=2.0)  # waits for the next one
        assert g is not None and g.index == 3
        out = np.empty((H, W), np.uint8)
        assert cap.latest(out=out).image is out and np.all(out == 3)
        assert cap.state == "running"
    assert not cap.running and src.closed == 1 and cap.state == "stopped"


def test_latest_after_a_seq_whatever_the_source_indices():
    src = CountingSource(gated=True, step=10)  # indices 0, 10, 20, ... (a source that skips frames)
    with CaptureThread(src, ring=4) as cap:
        src.gate.release()
        f = cap.latest(timeout=2.0)
        assert f is not None and (f.index, f.seq) == (0, 0)
        assert cap.latest(after=0) is None
        src.gate.release()
        g = cap.latest(after=f.seq, timeout=2.0)
        assert g is not None and (g.index, g.seq) == (10, 1)
        assert cap.latest(after=g.seq) is None
        assert cap.latest(after=10**9).index == 10  # any other seq: the newest frame


def test_latest_tells_frames_apart_by_seq_when_a_rig_repeats_its_index():
    src = CountingSource(gated=True, step=0)  # every frame has index 0 (a rig that repeats its index)
    with CaptureThread(src, ring=4) as cap:
        last, got = None, []
        for _ in range(5):
            threading.Timer(0.02, src.gate.release).start()
            f = cap.latest(after=last, timeout=2.0)
            assert f is not None, "a new frame with a repeated index was not seen"
            got.append(f)
            last = f.seq
        assert [f.index for f in got] == [0] * 5 and [f.seq for f in got] == list(range(5))
        assert [int(f.image[0, 0]) for f in got] == list(range(5))  # five different frames
        assert cap.latest(after=last) is None


def test_drop_mode_fast_source_slow_consumer_counts_overwrites():
    src = CountingSource(n=400)
    with CaptureThread(src, ring=4, drop=True) as cap:
        got = []
        while not cap.ended:
            f = cap.latest(after=got[-1].seq if got else None, timeout=0.5)
            if f is not None:
                got.append(f)
            time.sleep(0.01)  # a slow consumer
        assert wait_for(lambda: cap.ended)
        last = cap.latest()
        assert last.index == 399 and last.seq == 399 and cap.captured == 400
        # every frame overwritten unconsumed was counted; at most `ring` are still in the ring at the end
        consumed = len({f.seq for f in got})
        assert cap.overwritten > 0
        assert 400 - consumed - 4 <= cap.overwritten <= 400 - consumed
        assert all(b.index > a.index for a, b in itertools.pairwise(got))
        assert cap.state == "ended"


def test_no_drop_mode_delivers_every_frame_in_order():
    src = CountingSource(n=300)
    with CaptureThread(src, ring=4, drop=False) as cap:
        got = []
        for k in range(400):
            f = cap.next_in_order(timeout=2.0)
            if f is None:
                break
            got.append(f)
            if k % 50 == 0:
                time.sleep(0.02)  # the capture side must wait, not overwrite
        assert [f.index for f in got] == list(range(300))
        assert all(np.all(f.image == f.index % 256) for f in got)
        assert cap.overwritten == 0 and cap.captured == 300 and cap.ended
        assert cap.next_in_order(timeout=0.01) is None


def test_no_drop_stop_while_the_writer_waits_for_space():
    src = CountingSource()  # endless
    cap = CaptureThread(src, ring=2, drop=False).start()
    assert wait_for(lambda: cap.captured == 2)
    time.sleep(0.05)
    assert cap.captured == 2  # full ring, nobody consuming: the writer waits
    t0 = time.monotonic()
    assert cap.stop(timeout=2.0) and time.monotonic() - t0 < 1.0
    assert not cap.running and src.closed == 1


def test_no_torn_frames_under_stress():
    src = CountingSource(shape=(256, 256, 3))
    deadline = time.monotonic() + 10.0  # a bound, not a duration: stops at enough work
    checked = 0
    with CaptureThread(src, ring=2, drop=True) as cap:
        out = np.empty((256, 256, 3), np.uint8)
        enough = lambda: checked > 60 and cap.captured > 200 and cap.overwritten > 0  # noqa: E731
        while time.monotonic() < deadline and not enough():
            f = cap.latest(out=out if checked % 2 else None)
            if f is None:
                continue
            lo, hi = int(f.image.min()), int(f.image.max())
            assert lo == hi == f.index % 256, f"torn frame {f.index}: pixels {lo}..{hi}"
            g = cap.next_in_order(timeout=0.1)
            if g is not None:
                assert int(g.image.min()) == int(g.image.max()) == g.index % 256
            checked += 1
    assert checked > 60 and cap.captured > 200 and cap.overwritten > 0


def test_frame_of_another_size_is_skipped_and_counted():
    src = CountingSource(n=10, resize_at=4)
    with CaptureThread(src, ring=16, drop=False) as cap:
        got = [cap.next_in_order(timeout=2.0) for _ in range(9)]
        assert cap.next_in_order(timeout=0.05) is None
    assert [f.index for f in got] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert cap.skipped == 1 and cap.errors == 1 and "frame 4" in cap.last_error and "[34, 40]" in cap.last_error


def test_ring_allocated_at_first_frame_when_the_shape_is_not_known_at_open():
    src = CountingSource(n=3, shape=None, gated=True)
    with CaptureThread(src, ring=2, drop=False) as cap:
        assert cap.shape is None
        src.gate.release()
        f = cap.next_in_order(timeout=2.0)
        assert f.index == 0 and cap.shape == (H, W)


def test_source_failure_stops_the_thread_with_the_message():
    src = CountingSource(fail_at=3)
    with CaptureThread(src) as cap:
        assert wait_for(lambda: cap.ended)
        assert cap.state == "failed: RuntimeError: boom" and cap.captured == 3
        assert cap.latest().index == 2


def test_synthetic_live_through_the_ring_and_stop_joins():
    src = SyntheticSource(fps=200.0, size=(H, W), live=True)
    cap = CaptureThread(src, ring=3)
    with cap:
        f = cap.latest(timeout=2.0)
        assert f is not None and f.image.shape == (H, W)
        assert wait_for(lambda: cap.captured >= 5)
    assert not cap.running and not src.is_open and cap.state == "stopped"


def test_an_open_source_is_left_open_and_bad_ring():
    with pytest.raises(VistError):
        CaptureThread(CountingSource(), ring=1)
    with CountingSource(n=2) as src, CaptureThread(src, drop=False) as cap:
        assert cap.next_in_order(timeout=2.0).index == 0
        cap.stop()
        assert src.is_open  # the caller opened it, the caller closes it


def test_a_resolution_change_is_logged_in_a_few_lines_not_one_per_frame(caplog) -> None:
    class Resized(CountingSource):
        def _read(self, timeout: float) -> Frame | None:
            frame = super()._read(timeout)
            if frame is None or frame.index == 0:
                return frame
            return Frame(frame.index, frame.t_ns, np.zeros((H + 2, W), np.uint8))  # every frame after the first

    with (
        caplog.at_level(logging.WARNING, logger="vist_rt.runtime.capture"),
        CaptureThread(Resized(n=500), ring=4, drop=True) as cap,
    ):
        assert wait_for(lambda: cap.ended)
    assert cap.skipped == 499 and "frame 499" in cap.last_error  # every skip counted, the last one kept
    lines = [r.getMessage() for r in caplog.records if r.name == "vist_rt.runtime.capture"]
    assert 1 <= len(lines) <= 3 and "problems in the last" in lines[-1]
