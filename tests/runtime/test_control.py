"""Control socket: every malformed request gets ok:false and the socket keeps answering."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from tests.runtime.test_wire import make_header
from vist_rt.errors import VistError
from vist_rt.runtime.control import ControlServer, predict_reply
from vist_rt.runtime.frames import decode_frame
from vist_rt.runtime.wire import decode

RANDOM = "tcp://127.0.0.1:*"


def handler(request: dict[str, Any], payload: bytes | None) -> tuple[dict[str, Any], Any]:
    """status/meta/reset answer; pause raises a two-line ValueError; resume has a bug; predict: mean per channel."""
    cmd = request["cmd"]
    if cmd == "predict":
        assert payload is not None
        frame = decode_frame(request, payload, "predict").image
        rates = frame.reshape(frame.shape[0] * frame.shape[1], -1).mean(axis=0).astype(np.float32)
        return predict_reply(make_header(tick=7), rates)
    if cmd == "pause":
        raise ValueError("cannot pause now\nsecond line")
    if cmd == "resume":
        raise RuntimeError("bug")
    if cmd == "meta":
        return {"meta": {"model": "m"}, "not_json": float("nan")} if request.get("nan") else {"meta": {}}, None
    return {"state": "running", "echo": request}, None


@pytest.fixture
def server(ctx: zmq.Context) -> Iterator[ControlServer]:
    with ControlServer(RANDOM, handler, context=ctx) as srv:
        yield srv


@pytest.fixture
def req(ctx: zmq.Context, server: ControlServer) -> Iterator[zmq.Socket]:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    yield sock
    sock.close(0)


def exchange(server: ControlServer, req: zmq.Socket, parts: list[bytes]) -> list[bytes]:
    req.send_multipart(parts)
    assert server.poll(2000)
    assert req.poll(2000, zmq.POLLIN), "no reply"
    return req.recv_multipart()


def good_request_works(server: ControlServer, req: zmq.Socket) -> None:
    reply = json.loads(exchange(server, req, [b'{"cmd": "status"}'])[0])
    assert reply["ok"] is True and reply["state"] == "running"


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ([b"{not json"], "request is not strict UTF-8 JSON"),
        ([b"\xff\xfe"], "request is not strict UTF-8 JSON"),
        ([b"[1, 2]"], "request must be a JSON object"),
        ([b"{}"], "unknown cmd None"),
        ([b'{"cmd": "explode"}'], "unknown cmd 'explode'"),
        ([b'{"cmd": 3}'], "unknown cmd 3"),
        ([b'{"cmd": "status"}', b"extra"], "status takes 1 message part, got 2"),
        ([b'{"cmd": "predict", "shape": [2, 2], "dtype": "uint8"}'], "predict takes 2 message parts, got 1"),
        ([b'{"cmd": "status"}', b"a", b"b"], "a request has 1 part \\(2 for predict\\), got 3"),
        ([b'{"cmd": "pause"}'], "^cannot pause now$"),
        ([b'{"cmd": "resume"}'], "internal error in resume: RuntimeError: bug"),
        ([b'{"cmd": "meta", "nan": true}'], "internal error: reply header is not strict JSON"),
        ([b'{"cmd": "predict", "shape": [2, 2], "dtype": "float32"}', b"\x00" * 16], "'dtype' must be 'uint8'"),
        ([b'{"cmd": "predict", "shape": [2, 2], "dtype": "uint8"}', b"\x00" * 5], "5 bytes, shape \\[2, 2\\]"),
        ([b'{"cmd": "predict", "shape": [2, 2, 4], "dtype": "uint8"}', b"\x00" * 16], "last dimension must be 1"),
        ([b'{"cmd": "predict", "shape": [4], "dtype": "uint8"}', b"\x00" * 4], "'shape' must be"),
        ([b'{"cmd": "predict", "shape": "2x2", "dtype": "uint8"}', b"\x00" * 4], "'shape' must be"),
        ([b'{"cmd": "predict", "shape": [2, -2], "dtype": "uint8"}', b"\x00" * 4], "'shape' must be"),
        # JSON that Python refuses to build (not a JSONDecodeError): the socket must still answer
        ([b"[" * 1000 + b"]" * 1000], "request is not strict UTF-8 JSON: RecursionError"),
        ([b'{"cmd": "status", "x": [[[[[[[[[1]]]]]]]]]}'], "nested deeper than 8 levels"),
        ([b'{"cmd": "status", "x": NaN}'], "NaN is not strict JSON"),
        ([b'{"cmd": "status", "x": "' + b"y" * 5000 + b'"}'], "JSON: 5026 bytes, more than the 4096 allowed"),
        ([b'{"cmd": "' + b"z" * 3000 + b'"}'], "^unknown cmd 'zzzz[z]*'\\.\\.\\. \\(3000 long\\) \\(expected"),
        ([b'{"cmd": "predict", "shape": [2, 2], "color": "rgba"}', b"\x00" * 4], "'color' must be 'rgb' or 'bgr'"),
        ([b'{"cmd": "predict", "shape": [2, 2], "t_ns": -1}', b"\x00" * 4], "'t_ns' must be an integer from 0"),
        ([b'{"cmd": "predict", "shape": [2, 2], "index": 9223372036854775808}', b"\x00" * 4], "'index' must be"),
    ],
)
def test_malformed_requests_get_ok_false_and_socket_survives(
    server: ControlServer, req: zmq.Socket, parts: list[bytes], match: str, caplog: pytest.LogCaptureFixture
) -> None:
    reply_parts = exchange(server, req, parts)
    assert len(reply_parts) == 1
    reply = json.loads(reply_parts[0])
    assert reply["ok"] is False
    assert "\n" not in reply["error"]
    assert re.search(match, reply["error"]), reply["error"]
    good_request_works(server, req)
    good_request_works(server, req)


def test_predict_two_part_reply(server: ControlServer, req: zmq.Socket) -> None:
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    request = {"cmd": "predict", "shape": [2, 3, 3], "dtype": "uint8"}
    parts = exchange(server, req, [json.dumps(request).encode(), frame.tobytes()])
    assert len(parts) == 2
    msg = decode([b"rates", *parts])
    assert msg.header["ok"] is True and msg.header["tick"] == 7 and msg.header["n"] == 3
    np.testing.assert_allclose(msg.rates, frame.reshape(6, 3).mean(axis=0))


def test_poll_without_request_returns_false(server: ControlServer) -> None:
    assert server.poll(0) is False
    assert server.poll(20) is False


def test_decode_frame_for_predict() -> None:
    frame = decode_frame({"shape": [2, 3], "dtype": "uint8"}, bytes(range(6))).image
    assert frame.shape == (2, 3) and frame.dtype == np.uint8 and frame[1, 2] == 5
    assert decode_frame({"shape": [1, 1, 1], "dtype": "uint8"}, b"\x07").image.shape == (1, 1)  # grey
    for bad in ({"shape": [2, 3, 3], "dtype": "uint8"}, {"shape": [2, True], "dtype": "uint8"}, {"dtype": "uint8"}):
        with pytest.raises(VistError):
            decode_frame(bad, bytes(6))


def test_control_binds_loopback_only(ctx: zmq.Context) -> None:
    with pytest.raises(VistError, match="refusing to bind the control socket"):
        ControlServer("tcp://0.0.0.0:*", handler, context=ctx)
    with pytest.raises(VistError, match="needs a handler"):
        ControlServer(RANDOM, context=ctx)


def test_control_port_in_use(ctx: zmq.Context, server: ControlServer) -> None:
    with pytest.raises(VistError, match="already in use"):
        ControlServer(server.endpoint, handler, context=ctx)
