"""The synthetic movie as a source (live, paced to its rate, or as a file to replay)."""

from __future__ import annotations

import math
import time

import numpy as np

from vist_rt.errors import VistError
from vist_rt.movie import SyntheticMovie, check_size
from vist_rt.runtime.sources.base import Frame, Source


class SyntheticSource(Source):
    """Frames of `SyntheticMovie(seed, size, fps)`.

    live=True: paced to `fps` from open() (frame i is due at start + i/fps; `t_ns` = wall clock when made);
    a reader more than one frame period late skips the frames it missed, like a camera (counted in
    `skipped`), so the index jumps. live=False: replayable, as fast as read, media time i/fps.
    `max_frames` ends the stream after that many frames (None: endless).
    """

    def __init__(
        self,
        seed: int = 0,
        fps: float = 30.0,
        size: tuple[int, int] = (480, 640),
        live: bool = True,
        max_frames: int | None = None,
        color: bool = False,
    ) -> None:
        super().__init__()
        if not fps or fps <= 0:
            raise VistError(f"synthetic: fps must be > 0, got {fps!r}")
        size = check_size(size)  # before anything is allocated
        self.seed, self.fps, self.size, self.live, self.color = int(seed), float(fps), size, live, color
        self.max_frames = max_frames
        self.movie: SyntheticMovie | None = None
        self.skipped = 0
        self._next = 0
        self._start = 0.0
        self._buf: np.ndarray | None = None

    def describe(self) -> str:
        mode = "live" if self.live else "replay"
        h, w = self.size
        return f"synthetic movie seed {self.seed} ({w}x{h}, {self.fps:g} fps, {mode})"

    def _open(self) -> None:
        self.movie = SyntheticMovie(self.seed, self.size, self.fps, self.color)
        self.shape = self.movie.shape
        self._next, self.skipped = 0, 0
        self._buf = np.empty(self.shape, np.uint8)
        self._start = time.perf_counter()

    def _close(self) -> None:
        self.movie = None

    def _read(self, timeout: float) -> Frame | None:
        assert self.movie is not None
        i = self._next
        if self.live:
            now = time.perf_counter()
            behind = math.floor((now - self._start) * self.fps) - 1  # newest frame at least a period old
            if behind > i:
                self.skipped += behind - i
                i = behind
            wait = self._start + i / self.fps - now
            if wait > timeout:
                time.sleep(timeout)
                return None
            if wait > 0:
                time.sleep(wait)
        if self.max_frames is not None and i >= self.max_frames:
            self._finish()
            return None
        out = self._buf if self.borrow else None
        image = self.movie.frame(i, out=out)
        t_ns = time.time_ns() if self.live else round(i * 1e9 / self.fps)
        self._next = i + 1
        return Frame(i, t_ns, image)
