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
