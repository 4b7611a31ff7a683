"""Malformed input of every kind a rig (or a hostile local process) can send: control requests and frames.

Kinds are drawn with a seeded generator, so a run is repeatable. Every message is bounded in size (the
oversized kinds are separate: `oversized_request`), so that thousands can be sent in a test. Used by the
standing fuzz tests and by `vist-rt bench soak --fuzz`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

Parts = list[bytes]


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


# control requests that must each get one {"ok": false} reply (a predict on a live run is refused too); all
# within the size a live run's control socket takes (vist_rt.runtime.frames.MAX_JSON_BYTES)
REQUEST_KINDS: dict[str, Callable[[np.random.Generator], Parts]] = {
    "not json": lambda r: [b"{cmd: status"],
    "not utf-8": lambda r: [bytes(r.integers(128, 256, 16, dtype=np.uint8))],
    "random bytes": lambda r: [bytes(r.integers(0, 256, int(r.integers(1, 200)), dtype=np.uint8))],
    "json array": lambda r: [b"[1, 2, 3]"],
    "json string": lambda r: [b'"status"'],
    "empty object": lambda r: [b"{}"],
    "cmd not a string": lambda r: [_j({"cmd": int(r.integers(0, 1 << 30))})],
    "unknown cmd": lambda r: [_j({"cmd": "x" * int(r.integers(1, 3000))})],
    "deep nesting": lambda r: [_deep(int(r.integers(10, 1500)))],
    "deep in a field": lambda r: [b'{"cmd": "status", "x": ' + _deep(int(r.integers(9, 1500))) + b"}"],
    "nan": lambda r: [b'{"cmd": "status", "x": NaN}'],
    "huge integer cmd": lambda r: [b'{"cmd": ' + b"9" * int(r.integers(20, 4000)) + b"}"],
    "three parts": lambda r: [_j({"cmd": "status"}), b"a", b"b"],
    "status with a payload": lambda r: [_j({"cmd": "status"}), b"payload"],
    "predict without a frame": lambda r: [_j({"cmd": "predict", "shape": [2, 2]})],
    "predict bad shape": lambda r: [_j({"cmd": "predict", "shape": [int(r.integers(-5, 0)), 2]}), b"\0" * 4],
    "predict bad dtype": lambda r: [_j({"cmd": "predict", "shape": [2, 2], "dtype": "float64"}), b"\0" * 32],
    "predict bad colour": lambda r: [_j({"cmd": "predict", "shape": [2, 2, 3], "color": "cmyk"}), b"\0" * 12],
    "predict t_ns too big": lambda r: [
        _j({"cmd": "predict", "shape": [2, 2], "t_ns": 2**64 + int(r.integers(9))}),
        b"\0" * 4,
    ],
    "predict t_ns negative": lambda r: [
        _j({"cmd": "predict", "shape": [2, 2], "t_ns": -int(r.integers(1, 9))}),
        b"\0" * 4,
    ],
    "predict index float": lambda r: [_j({"cmd": "predict", "shape": [2, 2], "index": 1.5}), b"\0" * 4],
    "predict short payload": lambda r: [_j({"cmd": "predict", "shape": [4, 4]}), b"\0" * int(r.integers(0, 16))],
}

# frames (two parts, or not) that the frame protocol refuses
FRAME_KINDS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], Parts]] = {
    "one part": lambda r, s: [_j({"shape": list(s)})],
    "three parts": lambda r, s: [_j({"shape": list(s)}), bytes(int(np.prod(s))), b"x"],
    "not json": lambda r, s: [b"{shape", bytes(int(np.prod(s)))],
    "deep nesting": lambda r, s: [_deep(int(r.integers(10, 1500))), bytes(int(np.prod(s)))],
    "nan": lambda r, s: [b'{"shape": [1, 1], "t_ns": NaN}', b"\0"],
    "too long header": lambda r, s: [_j({"shape": list(s), "pad": "p" * 5000}), bytes(int(np.prod(s)))],
    "bad shape": lambda r, s: [_j({"shape": [0, int(r.integers(1, 9))]}), b""],
    "bad dtype": lambda r, s: [_j({"shape": list(s), "dtype": "int16"}), bytes(2 * int(np.prod(s)))],
    "bad colour": lambda r, s: [_j({"shape": [*s[:2], 3], "color": "BGR!"}), bytes(3 * s[0] * s[1])],
    "t_ns too big": lambda r, s: [_j({"shape": list(s), "t_ns": 2**63 + int(r.integers(9))}), bytes(int(np.prod(s)))],
    "t_ns negative": lambda r, s: [
        _j({"shape": list(s), "t_ns": -int(r.integers(1, 1 << 40))}),
        bytes(int(np.prod(s))),
    ],
    "index too big": lambda r, s: [_j({"shape": list(s), "index": 2**64}), bytes(int(np.prod(s)))],
    "index negative": lambda r, s: [_j({"shape": list(s), "index": -1}), bytes(int(np.prod(s)))],
    "short payload": lambda r, s: [_j({"shape": list(s)}), bytes(int(np.prod(s)) - 1)],
}


def malformed_request(rng: np.random.Generator) -> tuple[str, Parts]:
    """(kind, message parts) of one malformed control request, the kind drawn from REQUEST_KINDS."""
    kind = str(rng.choice(list(REQUEST_KINDS)))
    return kind, REQUEST_KINDS[kind](rng)


def malformed_frame(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[str, Parts]:
    """(kind, message parts) of one frame the protocol refuses, for a stream of frames of `shape`."""
    kind = str(rng.choice(list(FRAME_KINDS)))
    return kind, FRAME_KINDS[kind](rng, shape)


def oversized_request(size: int) -> Parts:
    """One request whose JSON part is `size` bytes: an unknown cmd of that length."""
    return [b'{"cmd": "' + b"o" * max(0, size - 11) + b'"}']
