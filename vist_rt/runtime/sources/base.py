"""Frame sources, the common part: `Frame`, `Source` (the contract below) and `ErrorLog`.

Contract (see docs/sources.md):
- `open()` does the I/O that can fail for a user's reason and raises a one-line `VistError`; `close()` is
  idempotent; every source is a context manager (`with make_source(spec) as src:`).
- `read(timeout=None) -> Frame | None`. A file source (video, images, synthetic replay) returns its next
  frame, or None at the end of the stream. A live source (camera, zmq, synthetic live) waits at most
  `timeout` seconds (default `Source.timeout`) for the next frame and returns None when none came in
  time; it keeps going after None. `ended` tells the two apart: True once a stream is over for good.
  `read()` never raises for run-time trouble (a corrupt frame, an unplugged camera, a malformed
  message): it is counted in `errors`, described in `last_error`, logged, and the stream goes on (or,
  for a video that cannot decode further, ends cleanly).
- `Frame.t_ns`: wall clock (`time.time_ns()`) at capture for live sources; media time in ns for files.
- `Frame.image` belongs to the caller, unless the caller set `source.borrow = True` (the capture thread
  does, since it copies every frame into its ring): then the source may reuse one buffer, and the image
  is only valid until the next `read()`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator

import numpy as np

from vist_rt.errors import VistError

log = logging.getLogger("vist_rt.runtime.sources")  # one logger for every source (the package)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame: `index` from 0 in the source, capture time `t_ns`, uint8 `image` `[H,W]` or `[H,W,3]`.

    `color` is the channel order of a 3-channel image: "bgr" from OpenCV (cameras, files, the synthetic
    movie), what the rig declared for zmq: (default "rgb"). `seq` is the capture thread's sequence number
    (from 0, +1 per captured frame); -1 straight from a source. `recv_ns` is this machine's wall clock when
    the capture thread took it: latency is measured from there, whatever clock `t_ns` is on (media time for
    files, the rig's clock for zmq:).
    """

    index: int
    t_ns: int
    image: np.ndarray
    seq: int = -1
    recv_ns: int = 0  # wall clock (time.time_ns) when the capture thread took the frame; 0 straight from a source
    color: str = "bgr"


class ErrorLog:
    """Log lines for a stream of run-time problems, bounded: the first problem is logged at once, later ones are
    held and counted, and one summary line (how many, the last one) is logged at most every `interval_s`."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger, self.interval_s, self.clock = logger, float(interval_s), clock
        self.held = 0  # problems since the last line
        self.lines = 0  # lines logged
        self._last: str | None = None
        self._since = -math.inf  # when the last line was logged

    def error(self, message: str) -> None:
        """One problem: logged now if no line was logged within `interval_s`, else held and counted."""
        self._last = message
        self.held += 1
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Log the held problems if `interval_s` has passed since the last line (or `force`)."""
        now = self.clock()
        if not self.held or (not force and now - self._since < self.interval_s):
            return
        if self.held == 1:
            self.logger.warning("%s", self._last)
        else:
            self.logger.warning("%d problems in the last %.0f s; the last: %s", self.held, now - self._since,
                                self._last)  # fmt: skip
        self.held, self._since = 0, now
        self.lines += 1


class Source:
    """Base class: a context manager that gives `Frame`s (see the module docstring for the contract)."""

    fps: float | None = None  # nominal frame rate, None when unknown
    live: bool = False  # camera / zmq / synthetic-live (wall-clock time stamps) vs file (media time)
    timeout: float = 1.0  # default wait of a live read(), s

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None  # (H, W) or (H, W, 3); known after open (zmq: after a frame)
        self.errors = 0
        self.last_error: str | None = None
        self.ended = False
        self.state = "closed"
        self.borrow = False
        self._opened = False
        self._log = ErrorLog(log)

    # -- lifecycle --------------------------------------------------------------------------------

    def open(self) -> Source:
        """Acquire the device/file/socket; VistError on a user-fixable failure. Returns self."""
        if not self._opened:
            self.errors, self.last_error, self.ended = 0, None, False
            self._open()
            self._opened = True
            self.state = "running"
        return self

    def close(self) -> None:
        """Release everything; safe to call twice."""
        if self._opened:
            self._opened = False
            self._close()
            self._log.flush(force=True)
        self.state = "closed"

    @property
    def is_open(self) -> bool:
        return self._opened

    def check(self) -> None:
        """Open and close again: a one-line VistError now for what open() would refuse later (cameras skip this:
        some drivers take seconds to open, or refuse a second open soon after)."""
        if not self._opened:
            self.open()
            self.close()

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame, or None (end of stream for files; nothing within `timeout` s for live sources)."""
        if not self._opened:
            raise VistError(f"{self.describe()}: read() before open()")
        if self.ended:
            return None
        frame = self._read(self.timeout if timeout is None else max(0.0, timeout))
        if self._log.held:
            self._log.flush()
        return frame

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the stream ends (live sources: until closed or ended)."""
        while not self.ended and self._opened:
            frame = self.read()
            if frame is not None:
                yield frame

    def describe(self) -> str:
        """One line for logs and the dashboard."""
        raise NotImplementedError

    # -- for subclasses ---------------------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _read(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def _error(self, message: str) -> None:
        """Count and log a run-time problem (never raises; the log is rate-limited, see ErrorLog)."""
        self.errors += 1
        self.last_error = message
        self._log.error(message)

    def _finish(self) -> None:
        self.ended = True
        self.state = "ended"
