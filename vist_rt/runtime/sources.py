"""Frame sources: camera, video file, image folder, synthetic movie, frames pushed by a rig over ZeroMQ.

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
import ipaddress
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.frames import MAX_FRAME_BYTES, MAX_JSON_BYTES, FrameError, decode_frame_parts
from vist_rt.runtime.movie import SyntheticMovie, check_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
URL_SCHEMES = ("rtsp://", "http://", "https://", "udp://")
DEFAULT_ZMQ_FRAMES = "tcp://127.0.0.1:5558"
SPEC_FORMS = (
    "camera:N (or a bare N)",
    "rtsp://... | http://... | https://... | udp://... (a capture URL)",
    "video:PATH",
    "images:DIR",
    "synthetic[:SEED][:replay]",
    "zmq:ENDPOINT (e.g. zmq:tcp://127.0.0.1:5558)",
    "an existing video file or image folder",
)


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


# ---------------------------------------------------------------------------------------------------
# video file


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


# ---------------------------------------------------------------------------------------------------
# image folder


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key so that frame2 < frame10 (digit runs compare as numbers)."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name))


class ImagesSource(Source):
    """Image files of a folder in natural order, one frame each at `index / fps`.

    `index` is the file's position in the sorted list, so a skipped file (unreadable, or another size than
    the first image) leaves a gap in index and time rather than shifting the frames after it.
    """

    live = False

    def __init__(self, directory: str | Path, fps: float = 30.0) -> None:
        super().__init__()
        if not fps or fps <= 0:
            raise VistError(f"images: fps must be > 0, got {fps!r}")
        self.directory = Path(directory)
        self.fps = float(fps)
        self.files: list[Path] = []
        self._next = 0
        self._mode = cv2.IMREAD_COLOR

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape[1::-1])) if self.shape else "?"
        return f"images {self.directory} ({len(self.files)} files, {shape}, {self.fps:g} fps)"

    def _open(self) -> None:
        if not self.directory.is_dir():
            what = "is a file, not a folder (video:PATH plays a video)" if self.directory.exists() else "no such folder"
            raise VistError(f"images: {self.directory}: {what}")
        files = [p for p in self.directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VistError(f"images: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files in {self.directory}")
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        self._next = 0
        # the first readable image fixes the size and grey vs colour; nothing is skipped yet (read() does that)
        for path in self.files:
            probe = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if probe is not None and probe.size:
                grey = probe.ndim == 2 or probe.shape[2] == 1
                self._mode = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
                self.shape = (probe.shape[0], probe.shape[1]) if grey else (probe.shape[0], probe.shape[1], 3)
                return
        raise VistError(f"images: none of the {len(self.files)} image files in {self.directory} can be read")

    def _read(self, timeout: float) -> Frame | None:
        while self._next < len(self.files):
            i = self._next
            self._next += 1
            path = self.files[i]
            image = cv2.imread(str(path), self._mode)
            if image is None or not image.size:
                self._error(f"images: skipped {path.name}: cannot read it as an image")
                continue
            if image.dtype != np.uint8:
                self._error(f"images: skipped {path.name}: {image.dtype} pixels, need 8-bit")
                continue
            if image.shape != self.shape:
                self._error(
                    f"images: skipped {path.name}: size {image.shape[1]}x{image.shape[0]} differs from the "
                    f"first image's {self.shape[1]}x{self.shape[0]}"
                )
                continue
            return Frame(i, round(i * 1e9 / self.fps), image)
        self._finish()
        return None


# ---------------------------------------------------------------------------------------------------
# synthetic movie


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


# ---------------------------------------------------------------------------------------------------
# camera / capture URL


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


# ---------------------------------------------------------------------------------------------------
# frames pushed by a rig over ZeroMQ


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ZmqFrameSource(Source):
    """Frames pushed by a rig: a PULL socket bound at `endpoint`, two-part messages of the frame protocol
    (`vist_rt.runtime.frames`: [JSON header, raw pixels], colour order declared, RGB by default).

    Default `t_ns`: time of receipt; default `index`: a count from 0. Malformed messages are dropped, counted
    in `errors`, described in `last_error` and logged at a bounded rate; a message part larger than
    `max_frame_bytes` is refused by libzmq before it is read (ZMQ_MAXMSGSIZE: the peer is disconnected).
    `shape` comes from `shape=` or the first good frame; frames of another shape are then dropped too. An
    endpoint with port 0 or * binds a free port (`endpoint` then holds the real one). Binding a non-loopback
    address needs allow_remote=True.
    """

    live = True

    def __init__(
        self,
        endpoint: str = DEFAULT_ZMQ_FRAMES,
        *,
        allow_remote: bool = False,
        shape: tuple[int, ...] | None = None,
        hwm: int = 8,
        context: Any = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        super().__init__()
        from vist_rt.runtime.publish import is_loopback

        if not allow_remote and not is_loopback(endpoint):
            raise VistError(
                f"zmq: {endpoint} is not a loopback address; binding it exposes the rig input to the network "
                "(pass allow_remote / --allow-remote to do it anyway)"
            )
        self.endpoint = endpoint
        self._want_shape = tuple(shape) if shape else None
        self._hwm, self._context = hwm, context
        self.max_frame_bytes = int(max_frame_bytes)
        self._sock: Any = None
        self._count = 0
        self.received = 0

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape[1::-1])) if self.shape else "shape from first frame"
        return f"zmq frames at {self.endpoint} ({shape})"

    def check(self) -> None:
        """The endpoint's form, and for tcp:// a port that can be bound now (by a plain socket, closed at once:
        libzmq closes its sockets asynchronously, so a bind-and-close of its own could race the real bind)."""
        import socket

        from vist_rt.runtime.publish import split_tcp

        if not self.endpoint.startswith("tcp://"):
            return
        host, port = split_tcp(self.endpoint)
        host = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
        if port in ("0", "*") or not _is_ip(host):  # a free port is picked; an interface name is libzmq's to resolve
            return
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq does
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                raise VistError(f"zmq: cannot bind {self.endpoint}: {exc.strerror or exc}") from None

    def _open(self) -> None:
        import zmq

        from vist_rt.runtime.publish import bind_socket

        ctx = self._context or zmq.Context.instance()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, max(self.max_frame_bytes, MAX_JSON_BYTES))  # per part, before reading it
        try:  # the loopback check was made in __init__; this resolves port 0 and sets IPv6 for [::1]
            self.endpoint = bind_socket(sock, self.endpoint, allow_remote=True, what="zmq frame source")
        except VistError:
            sock.close(0)
            raise
        self._sock = sock
        self.shape = self._want_shape
        self._count = self.received = 0

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def _parse(self, parts: list[Any]) -> Frame:
        """Message parts -> Frame; FrameError saying why it is dropped."""
        got = decode_frame_parts(parts, "zmq frame")
        shape = tuple(got.image.shape)
        if self.shape is not None and shape != self.shape:
            raise FrameError(f"zmq frame: shape {list(shape)} differs from the stream's {list(self.shape)}")
        self.shape = shape
        index = self._count if got.index is None else got.index
        self._count += 1
        return Frame(index, time.time_ns() if got.t_ns is None else got.t_ns, got.image, color=got.color)

    def _read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if not self._sock.poll(max(0, round(remaining * 1000))):
                return None
            parts = self._sock.recv_multipart(copy=False)
            self.received += 1
            try:
                return self._parse(parts)
            except FrameError as exc:
                self._error(f"zmq: dropped a message: {exc}")
            if time.monotonic() >= deadline:
                return None


# ---------------------------------------------------------------------------------------------------
# spec strings


def _unknown(spec: str, why: str = "unknown source") -> VistError:
    return VistError(f"{why} {spec!r}; accepted: {'; '.join(SPEC_FORMS)}")


def make_source(
    spec: str,
    *,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    seed: int = 0,
    allow_remote: bool = False,
) -> Source:
    """Spec string -> an unopened Source. See SPEC_FORMS; VistError listing them for anything else.

    fps: camera request, image-folder rate (default 30, with a note in the log), synthetic rate,
    fallback for a video without a rate. width/height: camera request, synthetic frame size.
    """
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if spec.lower().startswith(URL_SCHEMES):
        return CameraSource(spec, width, height, fps)
    if spec.isdigit():
        return CameraSource(int(spec), width, height, fps)
    if kind == "camera":
        rest = rest or "0"
        if not rest.isdigit():
            raise _unknown(spec, "camera index must be a number in")
        return CameraSource(int(rest), width, height, fps)
    if kind == "video":
        if not rest:
            raise _unknown(spec, "missing path in")
        return VideoSource(rest, fps=fps)
    if kind == "images":
        if not rest:
            raise _unknown(spec, "missing folder in")
        if fps is None:
            log.info("images: no frame rate given, assuming 30 fps (set --fps)")
        return ImagesSource(rest, fps=fps or 30.0)
    if kind == "synthetic":
        live = True
        for part in filter(None, rest.split(":")):
            if part.lower() == "replay":
                live = False
            elif re.fullmatch(r"-?\d+", part):
                seed = int(part)
            else:
                raise _unknown(spec, "bad synthetic option in")
        size = (height or 480, width or 640)
        return SyntheticSource(seed=seed, fps=fps or 30.0, size=size, live=live)
    if kind == "zmq":
        return ZmqFrameSource(rest or DEFAULT_ZMQ_FRAMES, allow_remote=allow_remote)
    path = Path(spec)
    if spec and path.is_dir():
        return ImagesSource(path, fps=fps or 30.0)
    if spec and path.is_file():
        return VideoSource(path, fps=fps)
    if "/" in spec or path.suffix:
        raise _unknown(spec, "no such file or folder, and not a source form:")
    raise _unknown(spec)
