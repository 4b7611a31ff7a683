"""The frame protocol: frames a rig sends, by lock-step `predict` and to the `zmq:` source (docs/protocol.md).

One message = a JSON header and the raw pixels:
- header: `shape` `[H, W]` (grey) or `[H, W, 1|3]`; optional `dtype` (`"uint8"`, the only one);
  optional `color` (`"rgb"`, the default, or `"bgr"`: the channel order of a 3-channel frame);
  optional `t_ns` and `index`, integers in 0 .. 2**63 - 1. Other fields are ignored (e.g. `cmd`).
- pixels: exactly H * W * C bytes, row-major.

`encode_frame` and `decode_frame` are the pair; everything a rig sends is bounded (`MAX_FRAME_BYTES`,
`MAX_JSON_BYTES`, `MAX_JSON_DEPTH`) and checked before anything acts on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vist_rt.errors import VistError, brief
from vist_rt.runtime.wire import dumps, is_int, parse_json

COLORS = ("rgb", "bgr")
DEFAULT_COLOR = "rgb"  # numpy / PsychoPy rigs think in RGB
MAX_SIDE = 16384  # pixels per dimension
MAX_FRAME_BYTES = 1 << 27  # 128 MiB: an 8K RGB frame (99.5 MB) fits
MAX_JSON_BYTES = 4096  # a request's or a frame header's JSON part
MAX_JSON_DEPTH = 8  # nesting of that JSON (a frame header nests 2: object, shape list)
INT64_MAX = 2**63 - 1


class FrameError(VistError):
    """A frame that does not follow the frame protocol (one line)."""


@dataclass(frozen=True)
class RigFrame:
    """A decoded frame: `image` uint8 `[H, W]` or `[H, W, 3]` (a read-only view of the payload), its channel
    order `color` ("rgb" | "bgr"; grey frames keep the default), and the rig's `t_ns` / `index`, if sent."""

    image: np.ndarray
    color: str = DEFAULT_COLOR
    t_ns: int | None = None
    index: int | None = None


def parse_rig_json(raw: bytes | memoryview, what: str) -> dict[str, Any]:
    """A rig's JSON part -> dict: strict JSON, at most MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH; else
    FrameError (one line, quoting nothing of the input)."""
    try:
        value = parse_json(raw, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH)
    except ValueError as exc:
        raise FrameError(f"{what}: header is not strict UTF-8 JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FrameError(f"{what}: header must be a JSON object, got {type(value).__name__}")
    return value


def check_shape(shape: Any, what: str) -> tuple[int, ...]:
    """`[H, W]` or `[H, W, 1|3]` of integers in 1 .. MAX_SIDE, at most MAX_FRAME_BYTES pixels; FrameError else."""
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) not in (2, 3)
        or not all(is_int(s) and 1 <= s <= MAX_SIDE for s in shape)
    ):
        raise FrameError(f"{what}: 'shape' must be [H, W] or [H, W, C] of integers 1-{MAX_SIDE}, got {brief(shape)}")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise FrameError(f"{what}: the last dimension must be 1 (grey) or 3 (colour), got shape {list(shape)}")
    size = math.prod(shape)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"{what}: a frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return tuple(shape)


def _stamp(header: Mapping[str, Any], key: str, what: str) -> int | None:
    value = header.get(key)
    if value is None:
        return None
    if not is_int(value) or not 0 <= value <= INT64_MAX:
        raise FrameError(f"{what}: {key!r} must be an integer from 0 to 2**63-1, got {brief(value)}")
    return value


def _fields(header: Mapping[str, Any], what: str) -> tuple[tuple[int, ...], str, int | None, int | None]:
    """(shape, color, t_ns, index) of a frame header, each checked; FrameError naming the first problem."""
    shape = check_shape(header.get("shape"), what)
    dtype = header.get("dtype", "uint8")
    if dtype != "uint8":
        raise FrameError(f"{what}: 'dtype' must be 'uint8', got {brief(dtype)}")
    color = header.get("color", DEFAULT_COLOR)
    if color not in COLORS:
        raise FrameError(f"{what}: 'color' must be 'rgb' or 'bgr', got {brief(color)}")
    return shape, color, _stamp(header, "t_ns", what), _stamp(header, "index", what)


def decode_frame(header: Mapping[str, Any], payload: bytes | memoryview | Any, what: str = "frame") -> RigFrame:
    """A parsed header and the raw pixels -> RigFrame, or FrameError naming the first problem (nothing acts
    on a frame before this returns). `payload`: bytes, a memoryview or a zmq.Frame; the image views it."""
    shape, color, t_ns, index = _fields(header, what)
    buffer = getattr(payload, "buffer", payload)  # zmq.Frame -> its memoryview
    size = memoryview(buffer).nbytes
    need = math.prod(shape)
    if size != need:
        raise FrameError(f"{what}: payload has {size} bytes, shape {list(shape)} of uint8 needs {need}")
    image = np.frombuffer(buffer, np.uint8).reshape(shape[:2] if len(shape) == 3 and shape[2] == 1 else shape)
    image.flags.writeable = False  # the sender's buffer: read, never written
    return RigFrame(image, color, t_ns, index)


def decode_frame_parts(parts: Sequence[Any], what: str = "frame") -> RigFrame:
    """A two-part message [JSON header, pixels] -> RigFrame; FrameError for anything else."""
    if len(parts) != 2:
        raise FrameError(f"{what}: expected 2 parts [header, pixels], got {len(parts)}")
    head = getattr(parts[0], "buffer", parts[0])
    return decode_frame(parse_rig_json(head, what), parts[1], what)


def frame_header(
    image: np.ndarray, *, color: str = DEFAULT_COLOR, t_ns: int | None = None, index: int | None = None
) -> dict[str, Any]:
    """The header fields of a frame (no `color` for grey frames); FrameError for what decode_frame refuses."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {arr.dtype}")
    header: dict[str, Any] = {"shape": list(arr.shape), "dtype": "uint8"}
    if arr.ndim == 3 and arr.shape[2] == 3:
        header["color"] = color
    header.update((key, value) for key, value in (("t_ns", t_ns), ("index", index)) if value is not None)
    _fields(header, "frame")  # the decoder's own checks
    return header


def encode_frame(
    image: np.ndarray,
    *,
    color: str = DEFAULT_COLOR,
    t_ns: int | None = None,
    index: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[bytes | memoryview]:
    """[JSON header, pixels] of one uint8 frame `[H, W]` or `[H, W, 1|3]` (`extra` fields first, e.g. `cmd`)."""
    header = {**(extra or {}), **frame_header(image, color=color, t_ns=t_ns, index=index)}
    arr = np.ascontiguousarray(image)
    return [dumps(header), memoryview(arr).cast("B")]
