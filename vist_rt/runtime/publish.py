"""The PUB side of wire format v1: `Publisher`, loopback-by-default binding, CurveZMQ keys."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq
import zmq.auth

from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_PUB, is_loopback, split_tcp
from vist_rt.runtime.wire import RATES_DTYPE, RatesTemplate, WireError, meta_message, rates_message

# t_pub_ns is encoded as this placeholder, then the encoded header's tail is replaced by the time of sending
_STAMP_PLACEHOLDER = 10**18
_MAX_TEMPLATES = 256  # streams whose header templates a publisher keeps
_STAMP_TAIL = b'"t_pub_ns":%d}' % _STAMP_PLACEHOLDER
_MORE, _LAST = int(zmq.SNDMORE | zmq.NOBLOCK), int(zmq.NOBLOCK)  # send flags, combined once (not per message)


def bind_socket(sock: zmq.Socket, endpoint: str, *, allow_remote: bool, what: str) -> str:
    """Bind after the loopback check; returns the actual endpoint (port 0 / * resolved). One-line VistError."""
    if not is_loopback(endpoint) and not allow_remote:
        raise VistError(
            f"refusing to bind the {what} to non-loopback {endpoint!r}: pass allow_remote=True "
            "(CLI: --allow-remote) and consider CurveZMQ keys"
        )
    if endpoint.startswith("tcp://"):
        host, port = split_tcp(endpoint)
        if ":" in host:
            sock.setsockopt(zmq.IPV6, 1)
        if port == "0":
            endpoint = endpoint[: -len(port)] + "*"
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise VistError(f"cannot bind the {what} to {endpoint}: address already in use") from None
        raise VistError(f"cannot bind the {what} to {endpoint}: {exc.strerror}") from None
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def server_socket(
    ctx: zmq.Context,
    kind: int,
    endpoint: str,
    *,
    allow_remote: bool,
    curve_secret_key: bytes | str | None,
    what: str,
    options: dict[int, int],
) -> tuple[zmq.Socket, str]:
    """A bound server socket (LINGER 0, `options`, CurveZMQ server when a secret key is given) and its endpoint.
    The socket is closed again if anything fails."""
    sock = ctx.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            sock.setsockopt(option, value)
        if curve_secret_key is not None:
            require_curve()
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, key_bytes(curve_secret_key, "curve_secret_key"))
        return sock, bind_socket(sock, endpoint, allow_remote=allow_remote, what=what)
    except BaseException:
        sock.close(0)
        raise


def key_bytes(key: bytes | str, what: str) -> bytes:
    """A Z85 (40 characters) or raw (32 bytes) CurveZMQ key."""
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    if len(raw) not in (32, 40):
        raise VistError(f"{what} must be a 40-character Z85 or 32-byte CurveZMQ key, got {len(raw)} bytes")
    return raw


def require_curve() -> None:
    """VistError unless libzmq was built with CurveZMQ (libsodium)."""
    if not zmq.has("curve"):
        raise VistError("this libzmq has no CurveZMQ support (built without libsodium)")


class Publisher:
    """A PUB socket speaking wire format v1; assigns the publisher-wide `seq` (from 0, +1 per message).

    Sends never block: with the send high-water mark reached a slow subscriber loses messages (and sees a
    gap in `seq`), the publisher neither waits nor grows. Safe to call from several threads.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB,
        *,
        hwm: int = 1000,
        allow_remote: bool = False,
        curve_secret_key: bytes | str | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        if hwm < 1:
            raise VistError(f"hwm must be >= 1, got {hwm}")
        self._ctx = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._seq = 0
        self.sent = 0
        self.dropped = 0
        self.last_rates_header: dict[str, Any] | None = None  # the last headers exactly as sent (seq, v, n, ...)
        self.last_meta_header: dict[str, Any] | None = None
        self.templated = 0  # rates messages written through a stream's template (the rest: the general encoder)
        self._templates: dict[str | None, RatesTemplate] = {}  # per stream: its headers' layout, made at the first
        self._sock, self._endpoint = server_socket(
            self._ctx, zmq.PUB, endpoint, allow_remote=allow_remote, curve_secret_key=curve_secret_key,
            what="publisher", options={zmq.SNDHWM: hwm},
        )  # fmt: skip

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (a port 0 or * resolved), for subscribers to connect to."""
        return self._endpoint

    @property
    def seq(self) -> int:
        """The seq the next message will get."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._sock.closed

    def _send(self, parts: list[Any]) -> None:
        """One multipart message, part by part (send_multipart's per-call overhead is twice the sends')."""
        try:
            for part in parts[:-1]:
                self._sock.send(part, _MORE, copy=False)  # a multipart message is queued whole, at its last part
            self._sock.send(parts[-1], _LAST, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def publish_rates(self, header: Mapping[str, Any], rates: np.ndarray, stream: str | None = None) -> int:
        """Send one `rates` message; sets v, n, seq and t_pub_ns in (a copy of) `header`; returns its seq.
        `stream`: a named stream's message (topic rates/<stream>, header field `stream`; None: as the header's
        `stream` field says, none for the plain topic `rates`).

        `header` needs tick, frame, t_frame_ns, stale and lat_ms (stage -> ms). The payload is sent from
        `rates`' own buffer when it is float32 little-endian: do not modify the array afterwards. A header laid out
        as its stream's last one is written from that stream's `RatesTemplate` (the same bytes, less work).
        """
        with self._lock:
            arr = rates
            if type(arr) is np.ndarray and arr.dtype == RATES_DTYPE and arr.ndim == 1 and arr.flags.c_contiguous:
                template = self._template(header, arr.shape[0], stream)
                values = template.values(header) if template is not None else None
                if values is not None:  # the run's own headers: their text from a template, the dict after the send
                    seq, stamp = self._seq, time.time_ns()
                    self._seq += 1
                    self._send([template.topic, template.text(values, seq, stamp), memoryview(arr).cast("B")])
                    self.templated += 1
                    self.last_rates_header = template.as_sent(header, seq, stamp)
                    return seq
            full = dict(header)
            full.pop("t_pub_ns", None)
            full["seq"] = self._seq
            if stream is not None:
                full.setdefault("stream", stream)  # before t_pub_ns; a different one is refused by rates_message
            full["t_pub_ns"] = _STAMP_PLACEHOLDER  # last key: replaced by the time of sending, after encoding
            sent, parts = rates_message(full, rates, stream)  # validates; on error no seq is used
            body = parts[1]
            if not body.endswith(_STAMP_TAIL):  # cannot happen: rates_message keeps the key order
                raise WireError("internal: t_pub_ns is not the header's last field")
            stamp = time.time_ns()
            parts[1] = body[: -len(_STAMP_TAIL)] + b'"t_pub_ns":%d}' % stamp
            self._seq += 1
            self._send(parts)
            sent["t_pub_ns"] = stamp  # the header as sent, fields in the same order
            self.last_rates_header = sent
            return sent["seq"]

    def _template(self, header: Mapping[str, Any], n: int, stream: str | None) -> RatesTemplate | None:
        """`stream`'s template for `header`'s layout (made anew when the layout changes; None: none can hold it)."""
        template = self._templates.get(stream)
        if template is not None and template.matches(header, n):
            return template
        template = RatesTemplate.build(header, n, stream)
        if template is not None:
            if len(self._templates) >= _MAX_TEMPLATES and stream not in self._templates:
                self._templates.clear()  # a caller naming ever new streams: the cache stays bounded
            self._templates[stream] = template
        return template

    def publish_meta(self, meta: Mapping[str, Any], stream: str | None = None) -> int:
        """Send one `meta` message (model, cell_ids, units, fps, rf_centres, extractor, ...); returns its seq.
        `stream`: a named stream's meta (topic meta/<stream>, header field `stream`), as for publish_rates."""
        with self._lock:
            full = dict(meta)
            full["seq"] = self._seq
            sent, parts = meta_message(full, stream)  # validates; on error no seq is used
            self._seq += 1
            self._send(parts)
            self.last_meta_header = sent
            return sent["seq"]

    def close(self) -> None:
        """Close the socket (pending messages are dropped: LINGER 0). Idempotent."""
        with self._lock:
            if not self._sock.closed:
                self._sock.close(0)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def make_curve_keys(directory: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create a server CurveZMQ key pair in `directory`: (server.key (public), server.key_secret (mode 600))."""
    require_curve()
    d = Path(directory)
    public, secret = d / "server.key", d / "server.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise VistError(f"{d} already holds server keys; replace them with overwrite=True (CLI: vist-rt keys --force)")
    try:
        d.mkdir(parents=True, exist_ok=True)
        pub_file, sec_file = zmq.auth.create_certificates(str(d), "server")
        os.chmod(sec_file, 0o600)
    except OSError as exc:
        raise VistError(f"cannot write keys to {d}: {exc.strerror or exc}") from None
    return Path(pub_file), Path(sec_file)


def load_curve_keys(directory: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    """(public, secret) Z85 keys of the server pair in `directory` (secret None if only server.key is there).

    `directory` may also be the path of a .key or .key_secret file.
    """
    p = Path(directory)
    if p.is_dir():
        p = p / "server.key_secret" if (p / "server.key_secret").exists() else p / "server.key"
    if not p.is_file():
        raise VistError(f"no CurveZMQ key file at {p}")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError) as exc:
        raise VistError(f"cannot read CurveZMQ keys from {p}: {exc}") from None
    if public is None:
        raise VistError(f"{p} holds no public key")
    return public, secret
