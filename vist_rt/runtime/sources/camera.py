"""A camera or capture URL through OpenCV, reconnecting when it drops."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.sources.base import Frame, Source

log = logging.getLogger(__name__)


class Capture(Protocol):
    """What CameraSource needs of a cv2.VideoCapture (tests inject fakes)."""

    def isOpened(self) -> bool: ...  # noqa: N802
    def read(self, image: np.ndarray | None = ...) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...
    def set(self, prop: int, value: float) -> bool: ...
    def get(self, prop: int) -> float: ...


class CameraSource(Source):
    """A camera (`int` index) or a capture URL (rtsp/http/https/udp), live, wall-clock time stamps.

    A failed read (camera unplugged, stream dropped) does not raise: the capture is released and reopened
    with exponential backoff (0.5 s, doubling, capped at 5 s), `state` reads "reconnecting (attempt k)",
    read() returns None meanwhile, and the frame index carries on after reconnecting. Failing to open at
    the start is a VistError ("camera 0 not available").
    """

    live = True
    BACKOFF_START, BACKOFF_CAP = 0.5, 5.0

    def __init__(
        self,
        index_or_url: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        *,
        capture_factory: Callable[[int | str], Capture] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.target = index_or_url
        self.width, self.height, self.requested_fps = width, height, fps
        self._factory = capture_factory or (lambda t: cv2.VideoCapture(t))
        self._clock, self._sleep = clock, sleep
        self._cap: Capture | None = None
        self._index = 0
        self._buf: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._attempt = 0
        self._delay = self.BACKOFF_START
        self._retry_at = 0.0
        self.reconnects = 0

    @property
    def name(self) -> str:
        return f"camera {self.target}"

    def check(self) -> None:
        """Nothing: a camera is opened once, by the run (see Source.check)."""

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape[1::-1])) if self.shape else "?"
        rate = f"{self.fps:g} fps" if self.fps else "fps unknown"
        return f"{self.name} ({shape}, {rate}, {self.state})"

    def _connect(self) -> tuple[Capture, np.ndarray] | None:
        """Open the capture, apply the requested settings, read one frame; None if any step fails."""
        cap = self._factory(self.target)
        if not cap.isOpened():
            cap.release()
            return None
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.width))
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.height))
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            return None
        return cap, first

    def _open(self) -> None:
        got = self._connect()
        if got is None:
            raise VistError(f"{self.name} not available")
        self._cap, self._pending = got
        self.shape = tuple(self._pending.shape)
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(rate) if rate and math.isfinite(rate) and rate > 0 else self.requested_fps
        self._index, self._attempt, self._delay, self.reconnects = 0, 0, self.BACKOFF_START, 0

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _emit(self, image: np.ndarray) -> Frame:
        frame = Frame(self._index, time.time_ns(), image)
        self._index += 1
        return frame

    def _lost(self, why: str) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._attempt += 1
        self._retry_at = self._clock() + self._delay
        self.state = f"reconnecting (attempt {self._attempt})"
        self._error(f"{self.name}: {why}; retrying in {self._delay:g} s")
        self._delay = min(self._delay * 2, self.BACKOFF_CAP)

    def _read(self, timeout: float) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return self._emit(image)
        if self._cap is None:  # reconnecting
            wait = self._retry_at - self._clock()
            if wait > timeout:
                self._sleep(timeout)
                return None
            if wait > 0:
                self._sleep(wait)
            got = self._connect()
            if got is None:
                self._lost("still not available")
                return None
            self._cap, image = got
            self.reconnects += 1
            self._attempt, self._delay = 0, self.BACKOFF_START
            self.state = "running"
            log.info("%s: reconnected", self.name)
            return self._emit(image)
        want = self._buf if self.borrow else None
        ok, image = self._cap.read(want) if want is not None else self._cap.read()
        if not ok or image is None:
            self._lost("read failed (unplugged or stream dropped?)")
            return None
        if self.borrow:
            self._buf = image
        return self._emit(image)
