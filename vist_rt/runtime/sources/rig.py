"""Frames pushed by a rig over ZeroMQ (the frame protocol of `vist_rt.runtime.frames`)."""

from __future__ import annotations

import time
from typing import Any

from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_FRAMES, is_ip, is_loopback, split_tcp
from vist_rt.runtime.frames import MAX_FRAME_BYTES, MAX_JSON_BYTES, FrameError, decode_frame_parts
from vist_rt.runtime.sources.base import Frame, Source


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
        endpoint: str = DEFAULT_FRAMES,
        *,
        allow_remote: bool = False,
        shape: tuple[int, ...] | None = None,
        hwm: int = 8,
        context: Any = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        super().__init__()
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

        if not self.endpoint.startswith("tcp://"):
            return
        host, port = split_tcp(self.endpoint)
        host = {"*": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
        if port in ("0", "*") or not is_ip(host):  # a free port is picked; an interface name is libzmq's to resolve
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
