"""The frame protocol (predict and zmq:): one decoder, bounded input, colour order, and the zmq: source on it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import zmq

from tests.runtime.helpers import wait_for
from tests.runtime.test_sources import read_frames
from vist_rt.errors import VistError
from vist_rt.runtime.frames import (
    MAX_JSON_BYTES,
    FrameError,
    RigFrame,
    decode_frame,
    decode_frame_parts,
    encode_frame,
    parse_rig_json,
)
from vist_rt.runtime.sources import ErrorLog, ZmqFrameSource

H, W = 6, 8


def colour_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("image", "kw", "color"),
    [
        (np.arange(H * W, dtype=np.uint8).reshape(H, W), {}, "rgb"),
        (np.arange(H * W, dtype=np.uint8).reshape(H, W, 1), {}, "rgb"),
        (colour_image(), {}, "rgb"),
        (colour_image(), {"color": "bgr", "t_ns": 2**63 - 1, "index": 0}, "bgr"),
    ],
)
def test_encode_decode_round_trip(image: np.ndarray, kw: dict, color: str) -> None:
    parts = encode_frame(image, extra={"cmd": "predict"}, **kw)
    header = json.loads(bytes(parts[0]))
    assert header["cmd"] == "predict" and ("color" in header) == (image.ndim == 3 and image.shape[2] == 3)
    got = decode_frame_parts(parts)
    assert isinstance(got, RigFrame) and got.color == color
    np.testing.assert_array_equal(got.image, image.reshape(H, W, -1).squeeze(-1) if image.shape[-1] == 1 else image)
    assert (got.t_ns, got.index) == (kw.get("t_ns"), kw.get("index"))
    assert not got.image.flags.writeable  # a view of the message, not a copy


@pytest.mark.parametrize(
    ("header", "payload", "match"),
    [
        ({"shape": [H, W], "t_ns": 2**64}, bytes(H * W), "'t_ns' must be an integer from 0 to 2\\*\\*63-1"),
        ({"shape": [H, W], "t_ns": -1}, bytes(H * W), "'t_ns' must be"),
        ({"shape": [H, W], "index": 2**63}, bytes(H * W), "'index' must be"),
        ({"shape": [H, W], "index": 1.0}, bytes(H * W), "'index' must be"),
        ({"shape": [H, W], "index": True}, bytes(H * W), "'index' must be"),
        ({"shape": [H, W, 3], "color": "RGB"}, bytes(H * W * 3), "'color' must be 'rgb' or 'bgr', got 'RGB'"),
        ({"shape": [H, W, 3], "color": None}, bytes(H * W * 3), "'color' must be"),
        ({"shape": [H, W], "dtype": "uint16"}, bytes(H * W), "'dtype' must be 'uint8'"),
        ({"shape": [H, W, 4]}, bytes(H * W * 4), "last dimension must be 1 \\(grey\\) or 3"),
        ({"shape": [H, 100_000]}, b"", "integers 1-16384"),
        ({"shape": [16384, 16384]}, b"", "exceeds the 134217728-byte limit"),
        ({"shape": [H, W]}, bytes(H * W + 1), f"payload has {H * W + 1} bytes"),
        ({"shape": "x" * 100_000}, b"", "'xxxx.*\\(100000 long\\)$"),
    ],
)
def test_refusals_are_short_single_lines(header: dict, payload: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match) as info:
        decode_frame(header, payload, "predict")
    text = str(info.value)
    assert text.startswith("predict: ") and "\n" not in text and len(text) < 200


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"[" * 1000 + b"]" * 1000, "header is not strict UTF-8 JSON \\(RecursionError"),
        (b'{"shape": ' + b"[" * 9 + b"]" * 9 + b"}", "nested deeper than 8 levels"),
        (b'{"shape": [2, 2], "t_ns": NaN}', "NaN is not strict JSON"),
        (b'{"pad": "' + b"x" * MAX_JSON_BYTES + b'"}', f"more than the {MAX_JSON_BYTES} allowed"),
        (b"\xff", "UnicodeDecodeError"),
        (b"[1]", "must be a JSON object, got list"),
    ],
)
def test_headers_are_strict_and_bounded(raw: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        parse_rig_json(raw, "zmq frame")


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(FrameError, match="uint8"):
        encode_frame(np.zeros((2, 2), np.float32))
    with pytest.raises(FrameError, match="color"):
        encode_frame(colour_image(), color="rgba")
    with pytest.raises(FrameError, match="t_ns"):
        encode_frame(colour_image(), t_ns=-5)


def test_error_log_is_rate_limited() -> None:
    logger = logging.getLogger("test-error-log")
    now = [0.0]
    lines: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Catch()
    logger.addHandler(handler)
    try:
        elog = ErrorLog(logger, interval_s=5.0, clock=lambda: now[0])
        for i in range(50_000):  # 50,000 problems over 3 s: the first at once, the rest held
            now[0] = 3.0 * i / 50_000
            elog.error(f"bad {i}")
        assert lines == ["bad 0"] and elog.held == 49_999
        now[0] = 5.5
        elog.error("bad last")  # the interval has passed: one summary line
        assert len(lines) == 2 and lines[1].startswith("50000 problems in the last 6 s; the last: bad last")
        elog.error("one more")
        elog.flush(force=True)  # at close: what is held is said
        assert lines[2] == "one more" and elog.held == 0
    finally:
        logger.removeHandler(handler)


def pushed(ctx: zmq.Context, src: ZmqFrameSource) -> zmq.Socket:
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(src.endpoint)
    return push


def test_zmq_source_drops_hostile_headers_and_goes_on(ctx: zmq.Context) -> None:
    """Finding 2: a header nested ~1000 deep ended the capture thread; t_ns/index beyond int64 or < 0 went on."""
    with ZmqFrameSource("tcp://127.0.0.1:0", context=ctx) as src, pushed(ctx, src) as push:
        image = colour_image()
        for bad in (
            [b"[" * 1000 + b"]" * 1000, image.tobytes()],
            [b'{"shape": [6, 8, 3], "t_ns": 18446744073709551616}', image.tobytes()],
            [b'{"shape": [6, 8, 3], "t_ns": -5}', image.tobytes()],
            [b'{"shape": [6, 8, 3], "index": 9223372036854775808}', image.tobytes()],
            [b'{"shape": [6, 8, 3], "color": "hsv"}', image.tobytes()],
        ):
            push.send_multipart(bad)
        push.send_multipart(encode_frame(image, color="bgr", t_ns=5, index=9))
        push.send_multipart(encode_frame(image))
        frames = read_frames(src, 2)
        assert [(f.index, f.t_ns, f.color) for f in frames[:1]] == [(9, 5, "bgr")]
        assert len(frames) == 2 and frames[1].color == "rgb"  # the protocol's default
        assert src.errors == 5 and src.received == 7


def test_zmq_source_refuses_oversized_messages_before_reading_them(ctx: zmq.Context) -> None:
    """Finding 4: a 300 MB message was read whole before being dropped; libzmq now refuses it by its size."""
    with ZmqFrameSource("tcp://127.0.0.1:0", context=ctx, max_frame_bytes=64 * 1024) as src:
        with pushed(ctx, src) as push:
            push.send_multipart([b'{"shape": [4096, 4096]}', bytes(4096 * 4096)])  # 16 MiB > 64 KiB
            assert read_frames(src, 1, deadline_s=0.5) == []
        assert src.received == 0  # never taken off the socket
        with pushed(ctx, src) as push:  # the next rig connection is served as usual
            push.send_multipart(encode_frame(np.zeros((H, W), np.uint8)))
            assert len(read_frames(src, 1)) == 1


def test_zmq_source_logs_a_flood_of_bad_messages_in_a_few_lines(ctx: zmq.Context, caplog) -> None:
    """Finding 4: one log line per dropped message (50,000 lines in 3 s); now counted and summarised."""
    with (
        caplog.at_level(logging.WARNING, logger="vist_rt.runtime.sources"),
        ZmqFrameSource("tcp://127.0.0.1:0", context=ctx, hwm=100_000) as src,
        pushed(ctx, src) as push,
    ):
        for _ in range(2000):
            push.send_multipart([b"{not json", b""])
        assert wait_for(lambda: src.read(timeout=0.05) is not None or src.errors >= 2000, timeout=10.0)
    lines = [r for r in caplog.records if r.name == "vist_rt.runtime.sources"]
    assert src.errors == 2000 and 1 <= len(lines) <= 3  # the first, then a summary at close
    assert "problems in the last" in lines[-1].getMessage()


def test_zmq_source_check_finds_a_port_in_use_without_binding_it(ctx: zmq.Context) -> None:
    with ZmqFrameSource("tcp://127.0.0.1:0", context=ctx) as first:
        with pytest.raises(VistError, match=r"zmq: cannot bind tcp://127\.0\.0\.1:\d+: Address already in use"):
            ZmqFrameSource(first.endpoint, context=ctx).check()
        port = first.endpoint.rsplit(":", 1)[1]
    free = ZmqFrameSource(f"tcp://127.0.0.1:{port}", context=ctx)

    def checks() -> bool:
        try:
            free.check()
        except VistError:
            return False
        return True

    assert wait_for(checks)  # once libzmq has let go of the first socket (it closes asynchronously)
    with free:  # check() bound nothing of libzmq's: opening at once works
        assert free.endpoint.endswith(port)
    ZmqFrameSource("ipc:///tmp/vist-check-test", context=ctx).check()  # ipc: nothing to probe
