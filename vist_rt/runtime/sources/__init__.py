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

import logging
import re
from pathlib import Path

from vist_rt.errors import VistError
from vist_rt.runtime.sources.base import ErrorLog, Frame, Source
from vist_rt.runtime.sources.camera import CameraSource
from vist_rt.runtime.sources.images import IMAGE_SUFFIXES, ImagesSource, natural_key
from vist_rt.runtime.sources.rig import DEFAULT_ZMQ_FRAMES, ZmqFrameSource
from vist_rt.runtime.sources.synthetic import SyntheticSource
from vist_rt.runtime.sources.video import VideoSource

__all__ = [
    "IMAGE_SUFFIXES",
    "SPEC_FORMS",
    "CameraSource",
    "ErrorLog",
    "Frame",
    "ImagesSource",
    "Source",
    "SyntheticSource",
    "VideoSource",
    "ZmqFrameSource",
    "make_source",
    "natural_key",
]

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "http://", "https://", "udp://")
SPEC_FORMS = (
    "camera:N (or a bare N)",
    "rtsp://... | http://... | https://... | udp://... (a capture URL)",
    "video:PATH",
    "images:DIR",
    "synthetic[:SEED][:replay]",
    "zmq:ENDPOINT (e.g. zmq:tcp://127.0.0.1:5558)",
    "an existing video file or image folder",
)


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
