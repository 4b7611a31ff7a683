"""A video file, frame by frame, with its media time stamps."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.sources.base import Frame, Source

log = logging.getLogger(__name__)


class VideoSource(Source):
    """A video file through `cv2.VideoCapture`; media time from the container (CAP_PROP_POS_MSEC)."""

    live = False

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self._fallback_fps = fps  # used when the container gives no rate
        self._cap: Any = None
        self._pending: np.ndarray | None = None
        self._index = 0
        self._buf: np.ndarray | None = None
        self.frame_count: int | None = None

    def describe(self) -> str:
        rate = f"{self.fps:g} fps" if self.fps else "fps unknown"
        shape = "x".join(map(str, self.shape[1::-1])) if self.shape else "?"
        return f"video {self.path} ({shape}, {rate})"

    def _open(self) -> None:
        if not self.path.is_file():
            what = "a folder (images:PATH plays its images)" if self.path.is_dir() else "no such file"
            raise VistError(f"cannot open video {self.path}: {what}")
        cap = cv2.VideoCapture(str(self.path))
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise VistError(f"cannot open video {self.path}: not a video or unsupported codec")
        self._cap, self._pending, self._index = cap, first, 0
        self.shape = tuple(first.shape)
        rate = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(rate) if rate and math.isfinite(rate) and rate > 0 else self._fallback_fps
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else None
        self._last_t = -1

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _media_ns(self) -> int:
        """Time stamp of the frame just decoded; index / fps when the container gives none."""
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        fallback = round(self._index * 1e9 / (self.fps or 30.0))
        t = round(msec * 1e6) if msec and math.isfinite(msec) and msec > 0 else fallback
        if t <= self._last_t:  # never go backwards (broken container stamps)
            t = max(fallback, self._last_t + 1)
        self._last_t = t
        return t

    def _read(self, timeout: float) -> Frame | None:
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            want = self._buf if self.borrow else None
            ok, image = self._cap.read(want) if want is not None else self._cap.read()
            if not ok or image is None:
                if self.frame_count is not None and self._index < self.frame_count - 1:
                    self._error(
                        f"video {self.path}: decoding failed at frame {self._index} of {self.frame_count}; "
                        "the stream ends here"
                    )
                self._finish()
                return None
            if self.borrow:
                self._buf = image
        frame = Frame(self._index, self._media_ns(), image)
        self._index += 1
        return frame
