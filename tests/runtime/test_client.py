"""vist_rt.client: LockstepClient against a ControlServer, Subscriber gap tracking and robustness."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from tests.runtime.test_control import handler
from tests.runtime.test_publish import drain, handshake
from tests.runtime.test_wire import make_header
from vist_rt.client import LockstepClient, Subscriber
from vist_rt.errors import VistError
from vist_rt.runtime.control import ControlServer
from vist_rt.runtime.publish import Publisher
from vist_rt.runtime.wire import Message, WireError, decode, encode_meta, encode_rates

RANDOM = "tcp://127.0.0.1:*"


class ServerThread:
    """Polls a ControlServer in a thread while `serving` is set."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.serving = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.is_set():
            if self.serving.is_set():
                self.server.poll(20)
            else:
                time.sleep(0.01)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


@pytest.fixture
def served(ctx: zmq.Context) -> Iterator[ServerThread]:
    with ControlServer(RANDOM, handler, context=ctx) as srv:
        st = ServerThread(srv)
        st.serving.set()
        yield st
        st.stop()


def test_lockstep_commands_and_predict(ctx: zmq.Context, served: ServerThread) -> None:
    with LockstepClient(served.server.endpoint, timeout_ms=2000, context=ctx) as client:
        assert client.status()["state"] == "running"
        assert client.reset()["echo"] == {"cmd": "reset"}
        assert client.request("status", extra=[1, 2])["echo"]["extra"] == [1, 2]
        assert client.meta() == {"ok": True, "meta": {}}
        frame = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
        header, rates = client.predict(frame)
        assert header["ok"] is True and header["n"] == 3 and rates.dtype == np.dtype("<f4")
        np.testing.assert_allclose(rates, frame.reshape(20, 3).mean(axis=0), rtol=1e-6)
        grey = client.predict(np.zeros((4, 5), np.uint8))[1]
        assert grey.tolist() == [0.0]
        # a non-contiguous frame is sent contiguously
        assert client.predict(frame[:, ::-1])[0]["n"] == 3


def test_server_errors_raise_with_the_servers_message(ctx: zmq.Context, served: ServerThread) -> None:
    with LockstepClient(served.server.endpoint, timeout_ms=2000, context=ctx) as client:
        with pytest.raises(VistError, match=r"^pause: cannot pause now$"):
            client.pause()
        with pytest.raises(VistError, match="internal error in resume"):
            client.resume()
        with pytest.raises(VistError, match="unknown cmd 'fly'"):
            client.request("fly")
        assert client.status()["ok"] is True  # and the connection is fine after errors


def test_predict_validates_the_frame_before_sending(ctx: zmq.Context, served: ServerThread) -> None:
    with LockstepClient(served.server.endpoint, timeout_ms=2000, context=ctx) as client:
        with pytest.raises(VistError, match="must be uint8"):
            client.predict(np.zeros((4, 4), np.float32))
        with pytest.raises(VistError, match="shape"):
            client.predict(np.zeros((4, 4, 2), np.uint8))
        with pytest.raises(VistError, match="shape"):
            client.predict(np.zeros((0, 4), np.uint8))
        assert client.status()["ok"] is True


def test_predict_refuses_a_frame_over_the_servers_limit(
    ctx: zmq.Context, served: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vist_rt.runtime.frames.MAX_FRAME_BYTES", 8192)  # the server's socket keeps 128 MiB
    with LockstepClient(served.server.endpoint, timeout_ms=2000, context=ctx) as client:
        with pytest.raises(VistError, match="exceeds the 8192-byte limit"):
            client.predict(np.zeros((100, 100), np.uint8))  # would be dropped without any reply
        assert client.status()["ok"] is True


def test_timeout_recreates_the_socket(ctx: zmq.Context) -> None:
    with ControlServer(RANDOM, handler, context=ctx) as srv:
        st = ServerThread(srv)  # not serving yet
        try:
            with LockstepClient(srv.endpoint, timeout_ms=200, context=ctx) as client:
                t0 = time.monotonic()
                with pytest.raises(VistError, match=r"^status: no reply from tcp://127\.0\.0\.1:\d+ within 200 ms$"):
                    client.status()
                assert time.monotonic() - t0 < 2.0
                with pytest.raises(VistError, match="no reply"):  # a stuck REQ socket would raise EFSM here
                    client.predict(np.zeros((2, 2), np.uint8))
                st.serving.set()
                assert client.status()["state"] == "running"
                assert client.predict(np.ones((2, 2), np.uint8))[1].tolist() == [1.0]
        finally:
            st.stop()


def test_no_server_at_all(ctx: zmq.Context) -> None:
    with LockstepClient("tcp://127.0.0.1:1", timeout_ms=100, context=ctx) as client, pytest.raises(VistError):
        client.status()


def test_bad_reply_is_a_vist_error(ctx: zmq.Context) -> None:
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    try:
        with LockstepClient(f"tcp://127.0.0.1:{port}", timeout_ms=2000, context=ctx) as client:
            for answer in ([b"not json"], [b'{"ok": true}', b"extra"], [b'{"ok": false}']):
                result: list[BaseException] = []

                def call(out: list[BaseException] = result) -> None:
                    try:
                        client.status()
                    except VistError as exc:
                        out.append(exc)

                t = threading.Thread(target=call)
                t.start()
                assert rep.poll(2000, zmq.POLLIN)
                rep.recv_multipart()
                rep.send_multipart(answer)
                t.join(5)
                assert len(result) == 1 and "\n" not in str(result[0])
    finally:
        rep.close(0)


def raw_pub(ctx: zmq.Context) -> tuple[zmq.Socket, str]:
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    return pub, f"tcp://127.0.0.1:{port}"


def raw_handshake(pub: zmq.Socket, sub: Subscriber) -> None:
    for _ in range(250):
        pub.send_multipart([b"meta", b'{"v":1,"seq":1000000}'])
        if sub.recv(20) is not None:
            while sub.recv(50) is not None:
                pass
            return
    raise AssertionError("subscriber never connected")


def test_gap_detection_from_crafted_seq(ctx: zmq.Context) -> None:
    pub, endpoint = raw_pub(ctx)
    try:
        with Subscriber(endpoint, context=ctx, timeout_ms=500) as sub:
            raw_handshake(pub, sub)
            # the handshake's seq 1000000 then a restart at 0: counted as a restart, not a gap
            for seq in (0, 1, 2, 5, 6, 7, 10):
                if seq % 2:
                    pub.send_multipart(encode_rates(make_header(seq=seq, tick=seq), np.ones(2)))
                else:
                    pub.send_multipart(encode_meta({"seq": seq}))
            got = [m.seq for m in sub]
        assert got == [0, 1, 2, 5, 6, 7, 10]
        assert sub.gaps == [(2, 2), (7, 2)] and sub.lost == 4 and sub.restarts == 1 and sub.last_seq == 10
    finally:
        pub.close(0)


def test_receive_time_is_stamped_off_the_socket_before_decoding(ctx: zmq.Context, monkeypatch) -> None:
    from vist_rt import client

    pub, endpoint = raw_pub(ctx)
    stamps: list[int] = []
    real_decode = client.decode

    def timed_decode(frames: list[bytes], t_recv_ns: int | None = None) -> Message:
        stamps.append(time.time_ns())  # decoding starts after the stamp
        return real_decode(frames, t_recv_ns)

    try:
        with Subscriber(endpoint, context=ctx, timeout_ms=1000) as sub:
            raw_handshake(pub, sub)
            monkeypatch.setattr(client, "decode", timed_decode)
            sent = time.time_ns()
            pub.send_multipart(encode_rates(make_header(seq=1, tick=1), np.ones(2)))
            msg = sub.recv()
            returned = time.time_ns()
        assert msg is not None and msg.t_recv_ns is not None
        assert sent <= msg.t_recv_ns <= stamps[-1] <= returned
        assert msg == Message(msg.topic, msg.header, msg.rates)  # not part of the message's value
        assert decode(encode_meta({"seq": 3})).t_recv_ns is None  # not received from a socket: no stamp
    finally:
        pub.close(0)


def test_malformed_message_raises_then_stream_continues(ctx: zmq.Context) -> None:
    pub, endpoint = raw_pub(ctx)
    try:
        with Subscriber(endpoint, context=ctx, timeout_ms=1000) as sub:
            raw_handshake(pub, sub)
            pub.send_multipart([b"rates", b'{"v":1}', b""])
            pub.send_multipart([b"meta", b'{"v":1,"seq":3}'])
            with pytest.raises(WireError, match="lacks"):
                sub.recv()
            msg = sub.recv()
            assert msg is not None and msg.seq == 3 and sub.bad == 1
    finally:
        pub.close(0)


def test_one_topic_only_and_no_gap_tracking(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, topics=["rates"], context=ctx) as sub:
        assert not sub.tracks_gaps
        for _ in range(250):
            pub.publish_rates(make_header(), np.zeros(1, np.float32))
            pub.publish_meta({"model": "m"})
            if sub.recv(20) is not None:
                break
        last = pub.publish_rates(make_header(), np.zeros(1, np.float32))
        got = drain(sub, last)
        assert {m.topic for m in got} == {"rates"} and sub.gaps == [] and sub.lost == 0


def test_iteration_stops_on_timeout(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx, timeout_ms=100) as sub:
        first = handshake(pub, sub)
        t0 = time.monotonic()
        rest = list(sub)
        assert time.monotonic() - t0 < 2.0
        assert first.topic == "meta" and all(m.topic == "meta" for m in rest)
        assert sub.first_seq == first.seq and sub.recv(0) is None


def test_subscriber_argument_errors(ctx: zmq.Context) -> None:
    with pytest.raises(VistError, match="topics must be among"):
        Subscriber(topics=["rates", "video"], context=ctx)
    with pytest.raises(VistError, match="cannot connect"):
        Subscriber("nowhere", context=ctx)
    with pytest.raises(VistError, match="curve_server_key"):
        Subscriber(curve_server_key=b"short", context=ctx)


def test_json_headers_are_plain_dicts(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        handshake(pub, sub)
        last = pub.publish_rates(make_header(), np.ones(2, np.float32))
        msg = drain(sub, last)[-1]
        assert json.loads(json.dumps(msg.header)) == msg.header


def _publish_streams(pub: Publisher, names: tuple[str | None, ...]) -> int:
    """One meta and one rates message of each stream (None: unnamed); the last seq."""
    for name in names:
        pub.publish_meta({"model": "m"}, stream=name)
        pub.publish_rates(make_header(), np.ones(2, np.float32), stream=name)
    return pub.seq - 1


def test_subscriber_streams_receives_only_those_streams(ctx: zmq.Context) -> None:
    names = ("a", "ab", "b", "a-1")  # "a" is a prefix of "ab" and "a-1" on the wire: ZeroMQ alone would mix them
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx, streams=["a", "b"]) as only:
        assert only.streams == ("a", "b") and not only.tracks_gaps
        for _ in range(250):  # handshake on a wanted stream
            pub.publish_meta({"model": "hello"}, stream="a")
            if only.recv(20) is not None:
                break
        while only.recv(50) is not None:
            pass
        before = only.received
        for _ in range(3):
            _publish_streams(pub, (None, *names))
        got = list(iter(lambda: only.recv(300), None))
    assert [(m.topic, m.stream) for m in got] == [("meta", "a"), ("rates", "a"), ("meta", "b"), ("rates", "b")] * 3
    assert only.received == before + len(got) and only.bad == 0  # the other streams' messages are not counted


def test_subscriber_streams_and_topics_combine(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub:
        with Subscriber(pub.endpoint, context=ctx, topics=["rates"], streams=["cam"], timeout_ms=300) as sub:
            for _ in range(250):
                pub.publish_rates(make_header(), np.ones(2, np.float32), stream="cam")
                if sub.recv(20) is not None:
                    break
            while sub.recv(50) is not None:
                pass
            _publish_streams(pub, (None, "cam", "eye", "camera"))
            got = list(sub)
        assert [(m.topic, m.stream) for m in got] == [("rates", "cam")]


def test_subscriber_without_streams_gets_every_stream_and_tracks_gaps(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        assert sub.streams is None and sub.tracks_gaps
        handshake(pub, sub)
        last = _publish_streams(pub, (None, "cam", "eye"))
        got = drain(sub, last)
    assert [m.stream for m in got[-6:]] == [None, None, "cam", "cam", "eye", "eye"] and sub.lost == 0


def test_subscriber_stream_argument_errors(ctx: zmq.Context) -> None:
    with pytest.raises(VistError, match="bad stream name 'a/b'"):
        Subscriber(context=ctx, streams=["ok", "a/b"])
    with pytest.raises(VistError, match="name at least one stream"):
        Subscriber(context=ctx, streams=[])
    with Subscriber(context=ctx, streams=["x", "y", "x"]) as sub:
        assert sub.streams == ("x", "y")


def test_control_requests_carry_the_stream(ctx: zmq.Context, served: ServerThread) -> None:
    with LockstepClient(served.server.endpoint, timeout_ms=2000, context=ctx) as client:
        assert client.status("cam")["echo"] == {"cmd": "status", "stream": "cam"}
        assert client.status()["echo"] == {"cmd": "status"}  # no stream: not sent
        assert client.reset(stream="eye")["echo"] == {"cmd": "reset", "stream": "eye"}
        assert client.request("status", stream=None)["echo"] == {"cmd": "status"}
        with pytest.raises(VistError, match=r"^pause: cannot pause now$"):
            client.pause("cam")
        with pytest.raises(VistError, match="bad stream name"):
            client.resume("no good")
        with pytest.raises(VistError, match="bad stream name"):
            client.meta(stream="")
        assert client.meta("cam") == {"ok": True, "meta": {}}


def test_predict_with_a_stream(ctx: zmq.Context) -> None:
    """The request names the stream; a named stream's reply header (with `stream`) decodes."""
    from vist_rt.runtime.control import predict_reply
    from vist_rt.runtime.frames import decode_frame

    requests: list[dict] = []

    def named(request: dict, payload: bytes | None) -> tuple[dict, object]:
        requests.append(request)
        assert payload is not None
        frame = decode_frame(request, payload, "predict").image
        header = make_header(tick=7, stream=request["stream"]) if "stream" in request else make_header(tick=7)
        return predict_reply(header, np.full(2, frame.mean(), np.float32))

    with ControlServer(RANDOM, named, context=ctx) as srv:
        st = ServerThread(srv)
        st.serving.set()
        try:
            with LockstepClient(srv.endpoint, timeout_ms=2000, context=ctx) as client:
                header, rates = client.predict(np.full((2, 2), 4, np.uint8), stream="cam")
                assert header["stream"] == "cam" and rates.tolist() == [4.0, 4.0]
                header, _ = client.predict(np.zeros((2, 2), np.uint8))
                assert "stream" not in header
                with pytest.raises(VistError, match="bad stream name"):
                    client.predict(np.zeros((2, 2), np.uint8), stream="a b")
        finally:
            st.stop()
    assert [r.get("stream") for r in requests] == ["cam", None] and requests[0]["cmd"] == "predict"


def test_timeout_holds_while_only_other_streams_arrive(ctx: zmq.Context) -> None:
    pub, endpoint = raw_pub(ctx)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            pub.send_multipart(encode_meta({"seq": 0}, "camera"))  # rates/cam's prefix matches: never wanted
            time.sleep(0.001)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        with Subscriber(endpoint, context=ctx, streams=["cam"]) as sub:
            t0 = time.monotonic()
            assert sub.recv(300) is None
            assert 0.25 < time.monotonic() - t0 < 3.0 and sub.received == 0
    finally:
        stop.set()
        sender.join(5)
        pub.close(0)
