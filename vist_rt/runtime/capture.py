"""The capture thread: source.read() in its own thread, into a preallocated ring of frames.

Ring: uint8 `[ring, H, W(,C)]`, allocated once from the source's shape (after open, or at the first frame
for a source that only learns its shape then, like zmq). Each captured frame is copied into the next slot;
nothing is allocated per frame. Every captured frame gets a sequence number `seq` (0, 1, 2, ...).

Torn reads are impossible: each slot carries the seq of the frame in it, set to -1 while the slot is being
written (a seqlock). A reader copies the slot out, then checks the slot still holds the seq it wanted; if
the writer got there meanwhile, the copy is thrown away and it tries again. The writer never waits for a
reader. Consumers always get a copy (into `out=` when given, so the hot path can avoid allocating).

drop=True (live): the capture side never blocks; a slot that no one consumed is overwritten and counted in
`overwritten`. `latest(after=seq)` returns the newest frame if it is not the one the caller has (frames are
told apart by `seq`, never by the source's `index`, which a rig may repeat).
drop=False (replay): the capture side waits for a free slot, so nothing is lost; `next_in_order()` gives
every frame in capture order.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.sources import ErrorLog, Frame, Source

log = logging.getLogger(__name__)


class CaptureThread:
    """Runs `source.read()` in a daemon thread into a ring of `ring` preallocated frames."""

    def __init__(
        self, source: Source, *, ring: int = 8, drop: bool = True, poll: float = 0.1,
        notify: threading.Event | None = None,
    ) -> None:  # fmt: skip
        """`notify`: an event set on every frame written and when the thread ends (a consumer of several rings
        waits on one event)."""
        if ring < 2:
            raise VistError(f"capture ring must hold at least 2 frames, got {ring}")
        self.source = source
        self.ring, self.drop, self.poll = int(ring), bool(drop), float(poll)
        self.captured = 0  # frames written into the ring
        self.overwritten = 0  # frames overwritten before anyone consumed them (drop=True only)
        self.skipped = 0  # frames the ring could not take (other size/dtype than the ring's)
        self.last_skip: str | None = None
        self._log = ErrorLog(log)  # a source that changed resolution would skip (and log) every frame
        self.failure: str | None = None  # an unexpected exception that stopped the thread
        self._buf: np.ndarray | None = None  # [ring, H, W(,C)] uint8
        self._slot_seq = [-1] * self.ring  # seq of the frame in each slot; -1 = empty or being written
        self._slot_index = [0] * self.ring
        self._slot_t = [0] * self.ring
        self._slot_recv = [0] * self.ring  # wall clock ns when each slot's frame was taken from the source
        self._slot_color = ["bgr"] * self.ring  # channel order of each slot's frame
        self._slot_taken = [False] * self.ring
        self._written = 0  # frames published (newest seq = _written - 1)
        self._consumed = 0  # next seq for next_in_order()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened_source = False
        self._finished = False  # the thread left its loop (stream ended, stopped or failed)
        self._notify = notify

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> CaptureThread:
        """Open the source if needed (errors raise here, in the caller's thread) and start capturing."""
        if self._thread is not None:
            return self
        if not self.source.is_open:
            self.source.open()
            self._opened_source = True
        if self.source.shape is not None:
            self._allocate(tuple(self.source.shape))
        self.source.borrow = True  # every frame is copied into the ring, so the source may reuse its buffer
        self._thread = threading.Thread(target=self._run, name=f"capture: {self.source.describe()}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and join the thread (close the source if start() opened it); False if it did not end in time."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread did not stop within %g s (a blocking read?)", timeout)
                return False
        if self._opened_source:
            self.source.close()
            self._opened_source = False
        return True

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """The source is exhausted (or the thread stopped) and the thread has written its last frame."""
        return self._finished

    @property
    def errors(self) -> int:
        """The source's errors plus frames the ring had to skip."""
        return self.source.errors + self.skipped

    @property
    def last_error(self) -> str | None:
        return self.failure or self.last_skip or self.source.last_error

    @property
    def state(self) -> str:
        if self.failure:
            return f"failed: {self.failure}"
        if self._thread is None:
            return "idle"
        if self._finished:
            return "stopped" if self._stop.is_set() else "ended"
        return self.source.state  # "running", "reconnecting (attempt k)", ...

    @property
    def shape(self) -> tuple[int, ...] | None:
        return None if self._buf is None else tuple(self._buf.shape[1:])

    @property
    def newest_seq(self) -> int:
        """Sequence number of the newest captured frame (-1: none yet)."""
        return self._written - 1

    # -- capture side -----------------------------------------------------------------------------

    def _allocate(self, shape: tuple[int, ...]) -> None:
        self._buf = np.zeros((self.ring, *shape), np.uint8)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read(self.poll)
                if self._log.held:
                    self._log.flush()  # skipped frames held back: said once the interval has passed
                if frame is None:
                    if self.source.ended:
                        break
                    continue
                self._put(frame)
        except Exception as exc:  # a bug or an unexpected library error: stop capturing, keep the message
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("capture thread failed")
        finally:
            self._log.flush(force=True)
            with self._cond:
                self._finished = True
                self._cond.notify_all()
            if self._notify is not None:
                self._notify.set()

    def _skip(self, message: str) -> None:
        self.skipped += 1
        self.last_skip = message
        self._log.error(message)

    def _put(self, frame: Frame) -> None:
        image = frame.image
        if self._buf is None:
            self._allocate(tuple(image.shape))
        buf = self._buf
        assert buf is not None
        if image.shape != buf.shape[1:] or image.dtype != np.uint8:
            self._skip(
                f"capture: skipped frame {frame.index}: {image.dtype} {list(image.shape)}, "
                f"the ring holds uint8 {list(buf.shape[1:])} (did the source change resolution?)"
            )
            return
        seq = self._written
        if not self.drop:  # replay: wait for the consumer to free a slot
            with self._cond:
                while seq - self._consumed >= self.ring and not self._stop.is_set():
                    self._cond.wait(self.poll)
            if self._stop.is_set():
                return
        k = seq % self.ring
        if self._slot_seq[k] >= 0 and not self._slot_taken[k]:
            self.overwritten += 1
        self._slot_seq[k] = -1  # being written: readers of this slot retry
        np.copyto(buf[k], image)
        self._slot_index[k] = frame.index
        self._slot_t[k] = frame.t_ns
        self._slot_recv[k] = time.time_ns()
        self._slot_color[k] = frame.color
        self._slot_taken[k] = False
        self._slot_seq[k] = seq
        with self._cond:
            self._written = seq + 1
            self.captured += 1
            self._cond.notify_all()
        if self._notify is not None:
            self._notify.set()

    # -- consumer side ----------------------------------------------------------------------------

    def _copy(self, seq: int, out: np.ndarray | None) -> Frame | None:
        """Copy frame `seq` out of its slot; None if it is no longer (or not yet) there."""
        buf = self._buf
        k = seq % self.ring
        if buf is None or self._slot_seq[k] != seq:
            return None
        if out is None:
            out = np.empty(buf.shape[1:], np.uint8)
        np.copyto(out, buf[k])
        index, t_ns, recv_ns, color = self._slot_index[k], self._slot_t[k], self._slot_recv[k], self._slot_color[k]
        if self._slot_seq[k] != seq:  # overwritten while copying: the copy may be torn
            return None
        self._slot_taken[k] = True
        return Frame(index, t_ns, out, seq, recv_ns, color)

    def latest(self, after: int | None = None, *, timeout: float = 0.0, out: np.ndarray | None = None) -> Frame | None:
        """The newest frame, as a copy (into `out` when given), unless it is the one you already have.

        `after`: the `seq` of the last frame you got (None: no frame yet). Returns the newest frame if its
        seq differs from `after`, waiting up to `timeout` s for one; None if there is none (yet), or at once
        when the capture has ended. The source's `index` plays no part: a rig may repeat or restart it.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                while (self._written == 0 or self._written - 1 == after) and not (
                    self._finished or self._stop.is_set()
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                if self._written == 0 or self._written - 1 == after:
                    return None
                seq = self._written - 1
            frame = self._copy(seq, out)
            if frame is not None:
                return frame
            # the writer lapped us during the copy (only with a tiny ring and a very fast source): retry

    def next_in_order(self, timeout: float = 1.0, *, out: np.ndarray | None = None) -> Frame | None:
        """The next frame in capture order (a copy), waiting up to `timeout` s; None on timeout or at the end.

        With drop=False nothing is ever skipped. With drop=True, frames already overwritten are skipped
        (and were counted in `overwritten`).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                while self._consumed >= self._written:
                    remaining = deadline - time.monotonic()
                    if self._finished or self._stop.is_set() or remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                seq = self._consumed
                oldest = self._written - self.ring + (1 if self.drop else 0)
                if seq < oldest:
                    seq = oldest
            frame = self._copy(seq, out)
            with self._cond:
                if frame is not None:
                    self._consumed = seq + 1
                    self._cond.notify_all()  # a slot is free (drop=False)
                    return frame
                self._consumed = max(self._consumed, seq + 1)  # lapped: move on
