"""Publisher + Subscriber on random loopback endpoints: delivery, seq, HWM, binding rules, CurveZMQ."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from tests.runtime.test_wire import general, make_header, run_header
from vist_rt.client import Subscriber
from vist_rt.errors import VistError
from vist_rt.runtime.publish import Publisher, load_curve_keys, make_curve_keys
from vist_rt.runtime.wire import Message, WireError

RANDOM = "tcp://127.0.0.1:*"
needs_curve = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CurveZMQ (no libsodium)")


def handshake(pub: Publisher, sub: Subscriber, timeout_s: float = 5.0) -> Message:
    """Publish meta until the subscriber hears one (ZeroMQ drops what is sent before a subscription lands)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.publish_meta({"model": "handshake"})
        msg = sub.recv(20)
        if msg is not None:
            return msg
    raise AssertionError("subscriber never connected")


def drain(sub: Subscriber, until: int, timeout_s: float = 5.0) -> list[Message]:
    """Receive until a message with seq >= until arrives (or fail after timeout_s)."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(50)
        if msg is not None:
            out.append(msg)
            if msg.seq >= until:
                return out
    raise AssertionError(f"seq {until} never arrived; got {[m.seq for m in out][-5:]}")


def test_every_message_arrives_once_in_order_bit_exact(ctx: zmq.Context) -> None:
    rng = np.random.default_rng(0)
    sent = [rng.standard_normal(37).astype(np.float32) for _ in range(200)]
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx, timeout_ms=2000) as sub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith(":*")
        handshake(pub, sub)
        last = 0
        for tick, rates in enumerate(sent):
            last = pub.publish_rates(make_header(tick=tick), rates)
            if tick % 50 == 0:
                pub.publish_meta({"model": "m", "cell_ids": [str(i) for i in range(37)]})
        last = pub.publish_meta({"model": "m", "final": True})
        got = drain(sub, last)
    seqs = [m.seq for m in got]
    assert seqs == list(range(seqs[0], last + 1))  # contiguous, each once
    assert sub.lost == 0 and sub.gaps == []
    rates_msgs = [m for m in got if m.topic == "rates"]
    assert [m.header["tick"] for m in rates_msgs] == list(range(200))
    for m, want in zip(rates_msgs, sent):
        assert m.rates is not None and m.rates.tobytes() == want.tobytes()
        assert m.header["n"] == 37 and m.header["v"] == 1 and m.header["t_pub_ns"] >= m.header["t_frame_ns"] // 2
    assert pub.sent == pub.seq and pub.dropped == 0


def test_seq_is_publisher_wide_and_assigned_by_the_publisher(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub:
        assert pub.publish_meta({"model": "m", "seq": 999}) == 0
        assert pub.publish_rates(make_header(seq=999), np.ones(2, np.float32)) == 1
        with pytest.raises(WireError):
            pub.publish_rates(make_header(stale="maybe"), np.ones(2, np.float32))
        with pytest.raises(WireError):
            pub.publish_meta({"x": object()})
        assert pub.publish_meta({"model": "m"}) == 2  # failed messages used no seq
        assert pub.last_rates_header is not None and pub.last_rates_header["seq"] == 1
        assert pub.last_rates_header["n"] == 2 and pub.last_rates_header["t_pub_ns"] > 0
        assert pub.last_meta_header == {"model": "m", "seq": 2, "v": 1}


def test_t_pub_ns_is_stamped_at_the_send_after_encoding(ctx: zmq.Context, monkeypatch) -> None:
    import types

    from vist_rt.runtime import publish

    events: list[str] = []
    encode, send = publish.rates_message, Publisher._send

    def stamp() -> int:
        events.append("stamp")
        return time.time_ns()

    monkeypatch.setattr(publish, "rates_message", lambda *a: (events.append("encode"), encode(*a))[1])
    monkeypatch.setattr(publish, "time", types.SimpleNamespace(time_ns=stamp))
    monkeypatch.setattr(Publisher, "_send", lambda self, parts: (events.append("send"), send(self, parts))[1])
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        handshake(pub, sub)
        sent = []
        for tick, given in enumerate((None, 5, 10**18)):  # a caller's t_pub_ns is replaced, never sent
            header = make_header(tick=tick)
            if given is None:
                del header["t_pub_ns"]
            else:
                header["t_pub_ns"] = given
            events.clear()
            before = time.time_ns()
            pub.publish_rates(header, np.arange(3, dtype=np.float32))
            assert events == ["encode", "stamp", "send"]  # the stamp is taken after encoding, just before sending
            sent.append((before, time.time_ns(), pub.last_rates_header))
        got = [m for m in drain(sub, until=pub.seq - 1) if m.topic == "rates"]
    assert len(got) == 3
    for (before, after, last), msg in zip(sent, got):
        head = msg.header  # as parsed from the JSON text, in its order
        assert before <= head["t_pub_ns"] <= after
        assert head == last and list(head) == list(last)  # the publisher's copy: same fields, values and order
        assert next(iter(head)) == "v" and list(head)[-1] == "t_pub_ns" and head["n"] == 3


def test_header_is_not_modified(ctx: zmq.Context) -> None:
    header = make_header()
    del header["seq"], header["t_pub_ns"]
    before = dict(header)
    with Publisher(RANDOM, context=ctx) as pub:
        pub.publish_rates(header, np.ones(3, np.float32))
    assert header == before


def test_slow_subscriber_neither_blocks_nor_grows_the_publisher(ctx: zmq.Context) -> None:
    rates = np.ones(1000, np.float32)  # 4 kB per message, 80 MB if nothing were dropped
    with Publisher(RANDOM, hwm=100, context=ctx) as pub, Subscriber(pub.endpoint, hwm=100, context=ctx) as sub:
        handshake(pub, sub)
        t0 = time.monotonic()
        for tick in range(20_000):
            pub.publish_rates(make_header(tick=tick), rates)
        elapsed = time.monotonic() - t0
        assert elapsed < 10.0
        assert pub.seq >= 20_000 and pub.sent + pub.dropped == pub.seq
        received = 0
        while sub.recv(200) is not None:
            received += 1
        assert received < 10_000  # most were dropped at the high-water marks, not queued
        # the subscriber has caught up: the next message gets through and reveals the loss as a gap in seq
        received += len(drain(sub, pub.publish_meta({"model": "m"})))
    assert sub.lost > 0 and sub.gaps
    assert sub.lost + 1 + received == pub.seq - sub.first_seq  # each seq (+1: the handshake) received or lost


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://0.0.0.0:*", "tcp://*:*", "tcp://*:0", "tcp://eth0:*", "tcp://192.168.1.10:5556", "tcp://[::]:*", "pgm://x"],
)
def test_non_loopback_needs_allow_remote(ctx: zmq.Context, endpoint: str) -> None:
    with pytest.raises(VistError, match=r"refusing to bind the publisher to non-loopback.*allow_remote=True") as info:
        Publisher(endpoint, context=ctx)
    assert "\n" not in str(info.value)


def test_allow_remote_binds_all_interfaces(ctx: zmq.Context) -> None:
    with Publisher("tcp://0.0.0.0:*", allow_remote=True, context=ctx) as pub:
        assert pub.endpoint.startswith("tcp://0.0.0.0:")


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("tcp://127.0.0.1:70000", "port must be 0-65535"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("127.0.0.1:5556", "expected tcp://HOST:PORT or ipc://PATH"),
        ("tcp://127.0.0.1:abc", "port must be"),
    ],
)
def test_bad_endpoints(ctx: zmq.Context, endpoint: str, match: str) -> None:
    with pytest.raises(VistError, match=match):
        Publisher(endpoint, context=ctx)


def test_port_zero_resolves(ctx: zmq.Context) -> None:
    with Publisher("tcp://127.0.0.1:0", context=ctx) as pub:
        port = int(pub.endpoint.rsplit(":", 1)[1])
        assert 0 < port < 65536


def test_port_in_use_is_one_line(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as first:
        with pytest.raises(VistError) as info:
            Publisher(first.endpoint, context=ctx)
        text = str(info.value)
        assert first.endpoint in text and "already in use" in text and "\n" not in text
        first.publish_meta({"still": "usable"})


def test_hwm_must_be_positive(ctx: zmq.Context) -> None:
    with pytest.raises(VistError, match="hwm"):
        Publisher(RANDOM, hwm=0, context=ctx)


@pytest.mark.skipif(sys.platform == "win32" or not zmq.has("ipc"), reason="no ipc:// transport here")
def test_ipc_endpoint(ctx: zmq.Context, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/vist.sock"
    with Publisher(endpoint, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        assert pub.endpoint == endpoint
        first = handshake(pub, sub)
        last = pub.publish_rates(make_header(), np.arange(3, dtype=np.float32))
        got = drain(sub, last)
        assert got[-1].rates is not None and got[-1].rates.tolist() == [0.0, 1.0, 2.0]
        assert first.topic == "meta"


@needs_curve
def test_curve_keys_and_encrypted_stream(ctx: zmq.Context, tmp_path: Path) -> None:
    public_path, secret_path = make_curve_keys(tmp_path / "keys")
    assert public_path.name == "server.key" and secret_path.name == "server.key_secret"
    if os.name == "posix":
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    with pytest.raises(VistError, match="already holds server keys"):
        make_curve_keys(tmp_path / "keys")
    public, secret = load_curve_keys(tmp_path / "keys")
    assert secret is not None and len(public) == 40
    assert load_curve_keys(public_path) == (public, None)
    with Publisher(RANDOM, curve_secret_key=secret, context=ctx) as pub:
        # a client with the server's public key (here: the key file) gets the stream
        with Subscriber(pub.endpoint, curve_server_key=public_path, context=ctx) as sub:
            handshake(pub, sub)
            last = pub.publish_rates(make_header(), np.full(4, 0.5, np.float32))
            assert drain(sub, last)[-1].rates.tolist() == [0.5] * 4  # type: ignore[union-attr]
        # a plain client gets nothing
        with Subscriber(pub.endpoint, context=ctx) as plain:
            for _ in range(10):
                pub.publish_meta({"model": "m"})
                assert plain.recv(20) is None


def test_load_curve_keys_errors(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="no CurveZMQ key file"):
        load_curve_keys(tmp_path)
    (tmp_path / "server.key").write_text("garbage\n")
    with pytest.raises(VistError):
        load_curve_keys(tmp_path)


def test_named_streams_share_one_socket_and_one_seq(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub, Subscriber(pub.endpoint, context=ctx) as sub:
        handshake(pub, sub)
        first = pub.publish_meta({"model": "m", "cell_ids": ["a", "b"]}, stream="cam")
        assert pub.last_meta_header == {"model": "m", "cell_ids": ["a", "b"], "seq": first, "v": 1, "stream": "cam"}
        for tick in range(5):
            pub.publish_rates(make_header(tick=tick), np.full(2, tick, np.float32), stream="cam")
            pub.publish_rates(make_header(tick=tick, stream="eye"), np.full(3, tick, np.float32), stream="eye")
        sent = pub.last_rates_header
        last = pub.publish_meta({"model": "m"}, stream="eye")
        got = drain(sub, last)
    assert [m.seq for m in got] == list(range(first, last + 1)) and sub.lost == 0  # one seq for every stream
    assert [m.stream for m in got if m.topic == "rates"] == ["cam", "eye"] * 5
    assert [(m.topic, m.stream) for m in got if m.topic == "meta"] == [("meta", "cam"), ("meta", "eye")]
    assert all(m.header["stream"] == m.stream for m in got)
    assert [m.rates.size for m in got if m.topic == "rates"] == [2, 3] * 5  # type: ignore[union-attr]
    # the header as sent, fields and order (t_pub_ns last, stamped at the send) is what arrived
    assert sent is not None and got[-2].header == sent and list(got[-2].header) == list(sent)
    assert list(sent)[-2:] == ["stream", "t_pub_ns"] and sent["t_pub_ns"] != 10**18


def test_a_bad_stream_uses_no_seq(ctx: zmq.Context) -> None:
    with Publisher(RANDOM, context=ctx) as pub:
        with pytest.raises(VistError, match="bad stream name"):
            pub.publish_rates(make_header(), np.ones(2, np.float32), stream="a/b")
        with pytest.raises(WireError, match="not the message's stream"):
            pub.publish_rates(make_header(stream="eye"), np.ones(2, np.float32), stream="cam")
        with pytest.raises(VistError, match="bad stream name"):
            pub.publish_meta({"model": "m"}, stream="")
        assert pub.seq == 0 and pub.last_rates_header is None and pub.last_meta_header is None
        assert pub.publish_rates(make_header(), np.ones(2, np.float32)) == 0
        assert "stream" not in pub.last_rates_header  # type: ignore[operator]


def test_run_headers_go_out_from_templates_as_the_general_encoder_would_send_them(ctx: zmq.Context) -> None:
    rates = np.arange(4, dtype=np.float32)
    with Publisher(RANDOM, context=ctx) as pub, ctx.socket(zmq.SUB) as sub:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"rates")
        sub.connect(pub.endpoint)
        time.sleep(0.3)  # the subscription reaches the publisher
        headers: list[tuple[dict, str | None, int]] = []
        for tick in range(6):
            for stream in ("a", "b", None):
                header = run_header(tick=tick)
                if tick == 3:
                    header["lat_ms"]["vit"] = None  # a stale tick: the same layout
                if tick >= 4 and stream == "b":
                    header["extra"] = "new field"  # the layout changes: a new template for b
                headers.append((header, stream, pub.publish_rates(header, rates, stream=stream)))
        assert pub.templated == 18 and pub.last_rates_header is not None
        pub.publish_rates(run_header(tick=np.int64(9)), rates, stream="a")  # the general encoder converts it
        with pytest.raises(WireError, match="finite"):
            pub.publish_rates({**run_header(), "lat_ms": {"vit": float("nan")}}, rates, stream="a")
        assert pub.templated == 18 and pub.seq == 19  # the refused one used no seq
        frames = []
        while sub.poll(2000) and len(frames) < 19:
            frames.append(sub.recv_multipart())
    assert len(frames) == 19
    for (header, stream, seq), (topic, text, payload) in zip(headers, frames):
        stamp = json.loads(text)["t_pub_ns"]
        _, want = general(header, 4, stream, seq, stamp)
        assert text == want and payload == rates.tobytes()
        assert topic == (b"rates" if stream is None else b"rates/" + stream.encode())
    assert json.loads(frames[-1][1]) == pub.last_rates_header and json.loads(frames[-1][1])["tick"] == 9


def test_templated_t_pub_ns_is_stamped_after_the_values_are_written(ctx: zmq.Context, monkeypatch) -> None:
    import types

    from vist_rt.runtime import publish
    from vist_rt.runtime.wire import RatesTemplate

    events: list[str] = []
    values, send = RatesTemplate.values, Publisher._send

    def stamp() -> int:
        events.append("stamp")
        return time.time_ns()

    monkeypatch.setattr(RatesTemplate, "values", lambda self, h: (events.append("encode"), values(self, h))[1])
    monkeypatch.setattr(publish, "time", types.SimpleNamespace(time_ns=stamp))
    monkeypatch.setattr(Publisher, "_send", lambda self, parts: (events.append("send"), send(self, parts))[1])
    with Publisher(RANDOM, context=ctx) as pub:
        before = time.time_ns()
        pub.publish_rates(run_header(), np.ones(2, np.float32), stream="s0")
        assert events == ["encode", "stamp", "send"] and pub.templated == 1
        assert pub.last_rates_header is not None and before <= pub.last_rates_header["t_pub_ns"] <= time.time_ns()
