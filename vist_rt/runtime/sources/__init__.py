"""Frame sources, one module per kind (camera, video file, image folder, synthetic movie, frames pushed by a rig
over ZeroMQ), and `make_source` (a spec string -> an unopened source). The contract every source keeps is in
`vist_rt.runtime.sources.base` (and docs/sources.md)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_FRAMES
from vist_rt.runtime.sources.base import ErrorLog, Frame, Source
from vist_rt.runtime.sources.camera import CameraSource
from vist_rt.runtime.sources.images import IMAGE_SUFFIXES, ImagesSource, natural_key
from vist_rt.runtime.sources.rig import ZmqFrameSource
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
    f"zmq:ENDPOINT (e.g. zmq:{DEFAULT_FRAMES})",
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
        return ZmqFrameSource(rest or DEFAULT_FRAMES, allow_remote=allow_remote)
    path = Path(spec)
    if spec and path.is_dir():
        return ImagesSource(path, fps=fps or 30.0)
    if spec and path.is_file():
        return VideoSource(path, fps=fps)
    if "/" in spec or path.suffix:
        raise _unknown(spec, "no such file or folder, and not a source form:")
    raise _unknown(spec)


def device_key(spec: str) -> str | None:
    """What a live source's spec takes hold of, in words ("camera 0", a capture URL, "zmq:ENDPOINT"), so that two
    streams on one device are refused; None for sources that several streams may share (files, the synthetic
    movie)."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if spec.lower().startswith(URL_SCHEMES):
        return spec
    if spec.isdigit() or (kind == "camera" and (rest or "0").isdigit()):
        return f"camera {int(spec if spec.isdigit() else rest or '0')}"
    if kind == "zmq":
        return f"zmq:{rest or DEFAULT_FRAMES}"
    return None
