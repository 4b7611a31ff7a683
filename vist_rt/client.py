"""Client API for rigs: `Subscriber` (the PUB stream of rates and meta) and `LockstepClient` (control, predict).

from vist_rt.client import Subscriber
with Subscriber("tcp://127.0.0.1:5556", timeout_ms=2000) as sub:
    for msg in sub:                       # ends after 2 s without a message
        if msg.topic == "rates":
            print(msg.header["seq"], msg.rates.mean())
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_CONTROL, DEFAULT_PUB
from vist_rt.runtime.frames import encode_frame
from vist_rt.runtime.wire import (
    STREAM_NAME,
    Message,
    SeqTracker,
    WireError,
    check_stream_name,
    decode,
    dumps,
    loads_header,
    topic_for,
)

__all__ = ["DEFAULT_CONTROL", "DEFAULT_PUB", "LockstepClient", "Message", "Subscriber", "WireError",
           "curve_client_options"]  # fmt: skip

_SLICE_MS = 200  # long waits are cut in slices so that Ctrl-C is seen promptly


def _server_key(key: bytes | str | os.PathLike[str]) -> bytes:
    """A server public key: Z85 (40 chars) / raw (32 bytes), or the path of a .key / .key_secret file."""
    if isinstance(key, (str, os.PathLike)) and Path(key).is_file():
        from vist_rt.runtime.publish import load_curve_keys

        return load_curve_keys(key)[0]
    raw = key.encode("ascii", "replace") if isinstance(key, str) else bytes(key)  # type: ignore[arg-type]
    if len(raw) not in (32, 40):
        looks_like_path = isinstance(key, os.PathLike) or (isinstance(key, str) and ("/" in key or "." in key))
        if looks_like_path:
            raise VistError(f"server key file not found: {key} (give the server.key file or its 40-character Z85 text)")
        raise VistError("curve_server_key (--server-key) must be a key file, a 40-character Z85 key or 32 raw bytes")
    return raw


def curve_client_options(sock: zmq.Socket, server_key: bytes | str | os.PathLike[str]) -> None:
    """Make `sock` a CurveZMQ client of the server with that public key (an ephemeral client key pair)."""
    if not zmq.has("curve"):
        raise VistError("this libzmq has no CurveZMQ support (built without libsodium)")
    public, secret = zmq.curve_keypair()
    sock.setsockopt(zmq.CURVE_SERVERKEY, _server_key(server_key))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise VistError(f"cannot connect to {endpoint!r}: {exc.strerror}") from None


def _poll(sock: zmq.Socket, timeout_ms: int | None) -> bool:
    """poll(POLLIN) in short slices (None: forever)."""
    if timeout_ms is None:
        while not sock.poll(_SLICE_MS, zmq.POLLIN):
            pass
        return True
    remaining = max(0, int(timeout_ms))
    while True:
        step = min(remaining, _SLICE_MS)
        if sock.poll(step, zmq.POLLIN):
            return True
        remaining -= step
        if remaining <= 0:
            return False


class Subscriber:
    """SUB socket on a vist-rt publisher; iterate for `Message`s (header dict + float32 rates).

    `streams`: the named streams to receive (topics `rates/NAME`, `meta/NAME`); None (the default) receives
    every message, the unnamed stream's and every named stream's (`Message.stream` tells them apart).
    Loss detection: with both topics and every stream subscribed (the default) a jump in `seq` is recorded
    in `gaps` as (last seen seq, number missing) and summed in `lost`. The first messages after connecting are
    always missed (ZeroMQ's late joiner); `first_seq` says where this subscriber started.
    Iteration ends when no message arrives within `timeout_ms` (None: waits forever).
    A malformed message raises WireError from `recv` (the socket stays usable; `bad` counts them).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB,
        *,
        topics: Iterable[str] = ("rates", "meta"),
        timeout_ms: int | None = None,
        curve_server_key: bytes | str | os.PathLike[str] | None = None,
        hwm: int = 1000,
        context: zmq.Context | None = None,
        streams: Iterable[str] | None = None,
    ) -> None:
        self.topics = tuple(topics)
        unknown = [t for t in self.topics if t not in ("rates", "meta")]
        if unknown or not self.topics:
            raise VistError(f"topics must be among rates, meta; got {', '.join(self.topics) or 'none'}")
        self.streams = None if streams is None else tuple(dict.fromkeys(map(check_stream_name, streams)))
        if self.streams == ():
            raise VistError("streams: name at least one stream (None receives them all)")
        # the exact topics wanted (ZeroMQ matches prefixes: rates/a also brings rates/ab); None: all
        self._wanted = None if self.streams is None else {topic_for(t, n) for t in self.topics for n in self.streams}
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.received = 0
        self.bad = 0
        self._tracker = SeqTracker()
        self.tracks_gaps = set(self.topics) == {"rates", "meta"} and self.streams is None
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, hwm)
            if curve_server_key is not None:
                curve_client_options(self._sock, curve_server_key)
            for topic in sorted(self._wanted) if self._wanted is not None else [t.encode() for t in self.topics]:
                self._sock.setsockopt(zmq.SUBSCRIBE, topic)
            _connect(self._sock, endpoint)
        except BaseException:
            self._sock.close(0)
            raise

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """(last seen seq, number missing) for each jump in seq (empty unless both topics are subscribed)."""
        return list(self._tracker.gaps)

    @property
    def lost(self) -> int:
        """Messages missed between the first and the last one received."""
        return self._tracker.lost

    @property
    def first_seq(self) -> int | None:
        """seq of the first message received (None before any)."""
        return self._tracker.first_seq

    @property
    def last_seq(self) -> int | None:
        return self._tracker.last_seq

    @property
    def restarts(self) -> int:
        """How often seq went backwards (a restarted publisher)."""
        return self._tracker.restarts

    def recv(self, timeout_ms: int | None = -1) -> Message | None:
        """The next message, or None after `timeout_ms` (default: the subscriber's timeout; None: forever)."""
        wait = self.timeout_ms if timeout_ms == -1 else timeout_ms
        deadline = None if wait is None else time.monotonic() + max(0, wait) / 1000.0
        while True:
            remaining = None if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))
            if not _poll(self._sock, remaining):
                return None
            frames = self._sock.recv_multipart()
            t_recv_ns = time.time_ns()
            if self._wanted is None or frames[0] in self._wanted:
                break  # else another stream whose name starts with a wanted one's: not counted, not decoded
        self.received += 1
        try:
            msg = decode(frames, t_recv_ns)
        except WireError:
            self.bad += 1
            raise
        if self.tracks_gaps:
            self._tracker.update(msg.seq)
        else:
            self._tracker.first_seq = msg.seq if self._tracker.first_seq is None else self._tracker.first_seq
            self._tracker.last_seq = msg.seq
        return msg

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.recv()
            if msg is None:
                return
            yield msg

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LockstepClient:
    """REQ client of the control socket. Every call waits at most `timeout_ms` for the reply; on a timeout
    the socket is recreated (a REQ socket that lost its reply is stuck) and a VistError is raised. An
    `{"ok": false, "error": ...}` reply raises VistError with the server's message.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_CONTROL,
        timeout_ms: int = 5000,
        *,
        curve_server_key: bytes | str | os.PathLike[str] | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self._curve = curve_server_key
        self._ctx = context or zmq.Context.instance()
        self._sock = self._new_socket()

    def _new_socket(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.REQ)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10)
            if self._curve is not None:
                curve_client_options(sock, self._curve)
            _connect(sock, self.endpoint)
        except BaseException:
            sock.close(0)
            raise
        return sock

    def _exchange(self, parts: list[Any], what: str) -> list[bytes]:
        """Send, wait, receive; anything but a reply (timeout, error, Ctrl-C) leaves a fresh socket behind."""
        try:
            self._sock.send_multipart(parts, copy=False)
            if _poll(self._sock, self.timeout_ms):
                return self._sock.recv_multipart()
        except zmq.ZMQError as exc:
            self._reset_socket()
            raise VistError(f"{what}: {exc.strerror}") from None
        except BaseException:
            self._reset_socket()
            raise
        self._reset_socket()
        raise VistError(f"{what}: no reply from {self.endpoint} within {self.timeout_ms} ms")

    def _reset_socket(self) -> None:
        self._sock.close(0)
        self._sock = self._new_socket()

    @staticmethod
    def _reply_header(frames: list[bytes], what: str) -> dict[str, Any]:
        try:
            reply = loads_header(frames[0])
        except WireError as exc:
            raise VistError(f"{what}: bad reply: {exc}") from None
        if reply.get("ok") is not True:
            raise VistError(f"{what}: {reply.get('error') or 'the server said not ok'}")
        return reply

    def request(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """Send `{"cmd": cmd, **kw}`; the JSON reply (ok true) or VistError. A `stream` keyword that is not None
        must be a stream name (the request is then about that stream of a several-stream run)."""
        if kw.get("stream") is None:
            kw.pop("stream", None)
        else:
            check_stream_name(kw["stream"])
        frames = self._exchange([dumps({"cmd": cmd, **kw})], cmd)
        reply = self._reply_header(frames, cmd)
        if len(frames) != 1:
            raise VistError(f"{cmd}: expected a 1-part reply, got {len(frames)} parts")
        return reply

    def predict(
        self,
        frame: np.ndarray,
        *,
        color: str = "rgb",
        t_ns: int | None = None,
        index: int | None = None,
        stream: str | None = None,
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Send one uint8 frame ([H, W] or [H, W, 1|3]; a colour frame's channels in `color` order, "rgb" or
        "bgr") and get (rates header, float32 rates) for it. `t_ns` / `index` (integers 0 .. 2**63-1) go into the
        rates header as `t_frame_ns` / `frame`; `stream` (a name) goes into the request. A frame the protocol
        refuses is a VistError before sending."""
        extra = {"cmd": "predict"} if stream is None else {"cmd": "predict", "stream": check_stream_name(stream)}
        parts = encode_frame(frame, color=color, t_ns=t_ns, index=index, extra=extra)
        frames = self._exchange(parts, "predict")
        reply = self._reply_header(frames, "predict")
        if len(frames) != 2:
            raise VistError(f"predict: expected a 2-part reply (header, rates), got {len(frames)} parts")
        name = reply.get("stream")  # a named stream's rates header names it (a bad name: decode says so)
        topic = topic_for("rates", name) if isinstance(name, str) and STREAM_NAME.fullmatch(name) else b"rates"
        try:
            msg = decode([topic, frames[0], frames[1]])
        except WireError as exc:
            raise VistError(f"predict: bad reply: {exc}") from None
        assert msg.rates is not None
        return reply, msg.rates

    def status(self, stream: str | None = None) -> dict[str, Any]:
        """The run's status (`stream`: that stream's)."""
        return self.request("status", stream=stream)

    def meta(self, stream: str | None = None) -> dict[str, Any]:
        """The meta fields, also published as a `meta` message (`stream`: that stream's)."""
        return self.request("meta", stream=stream)

    def reset(self, stream: str | None = None) -> dict[str, Any]:
        """Reset the temporal state to zeros (`stream`: only that stream's)."""
        return self.request("reset", stream=stream)

    def pause(self, stream: str | None = None) -> dict[str, Any]:
        """Stop the model clock (`stream`: only that stream)."""
        return self.request("pause", stream=stream)

    def resume(self, stream: str | None = None) -> dict[str, Any]:
        """Restart the model clock (`stream`: only that stream)."""
        return self.request("resume", stream=stream)

    def close(self) -> None:
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self) -> LockstepClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
