"""The control socket (REP): JSON commands, and `predict` (lock-step: one frame in, its rates out)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from vist_rt.errors import VistError, brief, first_line
from vist_rt.net import DEFAULT_CONTROL
from vist_rt.runtime.frames import MAX_FRAME_BYTES, MAX_JSON_BYTES, MAX_JSON_DEPTH
from vist_rt.runtime.publish import server_socket
from vist_rt.runtime.wire import dumps, encode_rates, parse_json

COMMANDS = ("status", "meta", "reset", "pause", "resume", "predict")
MAX_ERROR_CHARS = 300  # an error reply's text, at most

Handler = Callable[[dict[str, Any], bytes | None], tuple[dict[str, Any], bytes | memoryview | None]]
log = logging.getLogger(__name__)


def one_line(text: str) -> str:
    """The first line of an error message, never empty, at most MAX_ERROR_CHARS characters."""
    line = first_line(text) or "error"
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def predict_reply(header: Mapping[str, Any], rates: np.ndarray) -> tuple[dict[str, Any], memoryview]:
    """A handler's answer to predict: (rates header with v, n and ok, float32 payload), validated."""
    parts = encode_rates(header, rates)
    full = json.loads(parts[1])
    full["ok"] = True
    return full, memoryview(parts[2])


class ControlServer:
    """A REP socket answering one request per `poll`; every request gets exactly one reply.

    `handler(request, payload) -> (reply, payload or None)` sees only well-formed requests: a strict JSON
    object of at most `MAX_JSON_BYTES`, nested at most `MAX_JSON_DEPTH`, with a known `cmd`; for `predict`
    the raw frame bytes as payload (`vist_rt.runtime.frames.decode_frame` decodes it), None otherwise. A
    VistError/ValueError it raises becomes `{"ok": false, "error": "..."}`; any other exception is logged
    and answered as an internal error, the socket stays usable. Error replies quote at most a short prefix
    of what was sent. A message part over `max_part_bytes` (default: a frame's limit when `predict` is
    served, else `MAX_JSON_BYTES`) is refused by libzmq before it is read: the peer is disconnected and gets
    no reply, and this thread never sees it.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_CONTROL,
        handler: Handler | None = None,
        *,
        allow_remote: bool = False,
        context: zmq.Context | None = None,
        commands: Collection[str] = COMMANDS,
        curve_secret_key: bytes | str | None = None,
        max_part_bytes: int | None = None,
    ) -> None:
        if handler is None:
            raise VistError("ControlServer needs a handler")
        self.handler = handler
        self.commands = tuple(commands)
        if max_part_bytes is None:
            max_part_bytes = MAX_FRAME_BYTES if "predict" in self.commands else MAX_JSON_BYTES
        self.max_part_bytes = max(int(max_part_bytes), MAX_JSON_BYTES)
        self.handled = 0
        self.errors = 0
        self._ctx = context or zmq.Context.instance()
        self._sock, self._endpoint = server_socket(
            self._ctx, zmq.REP, endpoint, allow_remote=allow_remote, curve_secret_key=curve_secret_key,
            what="control socket", options={zmq.SNDHWM: 100, zmq.MAXMSGSIZE: self.max_part_bytes},
        )  # fmt: skip

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound."""
        return self._endpoint

    def poll(self, timeout_ms: int = 0) -> bool:
        """Wait up to `timeout_ms` for a request and answer it; True if one was handled."""
        if not self._sock.poll(timeout_ms, zmq.POLLIN):
            return False
        try:
            frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        try:
            reply, payload = self._answer(frames)
        except VistError as exc:
            self.errors += 1
            reply, payload = {"ok": False, "error": one_line(str(exc))}, None
        except Exception as exc:  # whatever happens, the REP socket must send exactly one reply
            log.exception("control request failed")
            self.errors += 1
            reply, payload = {"ok": False, "error": f"internal error: {type(exc).__name__}: {one_line(str(exc))}"}, None
        self._reply(reply, payload)
        self.handled += 1
        return True

    def _answer(self, frames: list[bytes]) -> tuple[dict[str, Any], bytes | memoryview | None]:
        """Validate the request and run the handler; VistError for anything the client must hear about."""
        if len(frames) not in (1, 2):
            raise VistError(f"a request has 1 part (2 for predict), got {len(frames)}")
        try:
            request = parse_json(frames[0], max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH)
        except ValueError as exc:
            raise VistError(f"request is not strict UTF-8 JSON: {one_line(str(exc))}") from None
        if not isinstance(request, dict):
            raise VistError(f"request must be a JSON object, got {type(request).__name__}")
        cmd = request.get("cmd")
        if not isinstance(cmd, str) or cmd not in self.commands:
            raise VistError(f"unknown cmd {brief(cmd)} (expected one of {', '.join(self.commands)})")
        want = 2 if cmd == "predict" else 1
        if len(frames) != want:
            raise VistError(f"{cmd} takes {want} message part{'s' if want > 1 else ''}, got {len(frames)}")
        try:
            result = self.handler(request, frames[1] if want == 2 else None)
        except (VistError, ValueError) as exc:
            raise VistError(one_line(str(exc))) from None
        except Exception as exc:  # a bug in the handler must not leave the REP socket without a reply
            log.exception("control handler failed on %r", cmd)
            raise VistError(f"internal error in {cmd}: {type(exc).__name__}: {one_line(str(exc))}") from None
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
            raise VistError(f"internal error in {cmd}: the handler returned {type(result).__name__}")
        reply, payload = result
        reply = dict(reply)
        reply.setdefault("ok", True)
        return reply, payload

    def _reply(self, reply: dict[str, Any], payload: bytes | memoryview | None) -> None:
        try:
            head = dumps(reply)
        except VistError as exc:
            self.errors += 1
            head, payload = dumps({"ok": False, "error": f"internal error: reply {one_line(str(exc))}"}), None
        parts: list[Any] = [head] if payload is None else [head, payload]
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # the peer is gone: the REP state machine still moves on
            log.warning("control reply not sent: %s", exc)

    def close(self) -> None:
        """Close the socket. Idempotent."""
        if not self._sock.closed:
            self._sock.close(0)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
