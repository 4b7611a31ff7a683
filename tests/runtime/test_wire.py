"""Wire format v1: round trips and every validation error."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import zmq

from vist_rt.errors import VistError
from vist_rt.runtime.wire import (
    VERSION,
    Message,
    RatesTemplate,
    SeqTracker,
    WireError,
    check_meta_header,
    check_rates_header,
    check_stream_name,
    decode,
    dumps,
    encode_meta,
    encode_rates,
    meta_message,
    rates_message,
    topic_for,
)


def make_header(seq: int = 0, tick: int = 0, **extra: Any) -> dict[str, Any]:
    """A complete rates header except v and n (filled by encode_rates)."""
    header = {
        "seq": seq,
        "tick": tick,
        "frame": tick,
        "t_frame_ns": 1_700_000_000_000_000_000 + tick,
        "t_pub_ns": 1_700_000_000_000_100_000 + tick,
        "stale": False,
        "lat_ms": {"capture": 0.5, "preprocess": 1.25, "vit": 7.0, "temporal": 0.75, "e2e": 9.5},
    }
    header.update(extra)
    return header


def test_rates_round_trip_bit_exact() -> None:
    rates = np.array([0.0, -1.5, 3.25e-7, np.float32(np.pi), np.inf, np.nan], dtype=np.float32)
    parts = encode_rates(make_header(seq=7, tick=3), rates)
    assert parts[0] == b"rates" and len(parts) == 3
    head = json.loads(parts[1])
    assert head["v"] == VERSION and head["n"] == 6 and head["seq"] == 7
    msg = decode([bytes(p) for p in parts])
    assert msg.topic == "rates" and msg.seq == 7 and msg.header["lat_ms"]["vit"] == 7.0
    assert msg.rates is not None and msg.rates.dtype == np.dtype("<f4")
    assert msg.rates.tobytes() == rates.tobytes()  # bit-exact, NaN included


def test_payload_is_the_array_buffer() -> None:
    rates = np.arange(5, dtype="<f4")
    payload = encode_rates(make_header(), rates)[2]
    assert isinstance(payload, memoryview) and payload.nbytes == 20
    rates[0] = 42.0
    assert np.frombuffer(payload, "<f4")[0] == 42.0  # no copy was made


def test_other_dtypes_and_byte_orders_become_little_endian_float32() -> None:
    for rates in (np.arange(4, dtype=">f8"), np.arange(4, dtype=np.int32), np.arange(8, dtype=np.float32)[::2]):
        msg = decode([bytes(p) for p in encode_rates(make_header(), rates)])
        assert msg.rates is not None
        np.testing.assert_array_equal(msg.rates, np.asarray(rates, dtype=np.float32))


def test_numpy_scalars_in_header_are_plain_json() -> None:
    parts = encode_rates(make_header(tick=np.int64(4), stale=np.bool_(True), lat_ms={"e2e": np.float32(2.5)}), [1.0])
    head = json.loads(parts[1])
    assert head["tick"] == 4 and head["stale"] is True and head["lat_ms"]["e2e"] == 2.5


def test_decode_accepts_zmq_frames() -> None:
    parts = encode_rates(make_header(), np.ones(3, np.float32))
    msg = decode([zmq.Frame(bytes(p)) for p in parts])
    assert msg.rates is not None and msg.rates.tolist() == [1.0, 1.0, 1.0]


def test_meta_round_trip() -> None:
    meta = {"seq": 2, "model": "vist-tiny", "cell_ids": ["a", "b"], "units": "Hz", "fps": 30.0, "rf_centres": None}
    parts = encode_meta(meta)
    assert parts[0] == b"meta" and len(parts) == 2
    msg = decode(parts)
    assert msg == Message("meta", {**meta, "v": 1}, None)


@pytest.mark.parametrize(
    ("header", "rates", "match"),
    [
        ({k: v for k, v in make_header().items() if k != "tick"}, [1.0], "lacks tick"),
        ({k: v for k, v in make_header().items() if k not in ("lat_ms", "stale")}, [1.0], "lacks stale, lat_ms"),
        (make_header(tick=1.5), [1.0], "'tick' must be an integer"),
        (make_header(seq=True), [1.0], "'seq' must be an integer"),
        (make_header(seq=-1), [1.0], "seq >= 0"),
        (make_header(stale="no"), [1.0], "'stale' must be a boolean"),
        (make_header(lat_ms=[1, 2]), [1.0], "'lat_ms' must be an object"),
        (make_header(lat_ms={"vit": "fast"}), [1.0], "finite number"),
        (make_header(lat_ms={"vit": float("nan")}), [1.0], "finite number"),
        (make_header(), [], "n >= 1"),
        (make_header(), [[1.0, 2.0]], "must be 1-D"),
        (make_header(), ["a"], "must be numeric"),
        (make_header(extra=object()), [1.0], "not strict JSON"),
        (make_header(extra=float("inf")), [1.0], "not strict JSON"),
    ],
)
def test_encode_rates_validation(header: dict[str, Any], rates: Any, match: str) -> None:
    with pytest.raises(WireError, match=match) as info:
        encode_rates(header, np.asarray(rates))
    assert "\n" not in str(info.value) and isinstance(info.value, VistError)


def test_encode_meta_requires_seq() -> None:
    with pytest.raises(WireError, match="lacks seq"):
        encode_meta({"model": "x"})
    with pytest.raises(WireError, match="'seq' must be"):
        encode_meta({"seq": "1"})
    with pytest.raises(WireError, match="'cell_ids' must be a list"):
        encode_meta({"seq": 1, "cell_ids": "abc"})


def _rates_parts(**changes: Any) -> list[bytes]:
    parts = [bytes(p) for p in encode_rates(make_header(), np.ones(4, np.float32))]
    head = json.loads(parts[1])
    head.update(changes)
    parts[1] = json.dumps(head).encode()
    return parts


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"rates"], "expected 2 \\(meta\\) or 3 \\(rates\\) message parts, got 1"),
        ([], "got 0"),
        ([b"ratez", b"{}", b""], "unknown topic"),
        ([b"rates", b"{}"], "a rates message has 3 parts, got 2"),
        ([b"meta", b'{"v":1,"seq":0}', b""], "a meta message has 2 parts, got 3"),
        ([b"meta", b"{not json"], "not UTF-8 JSON"),
        ([b"meta", b"\xff\xfe"], "not UTF-8 JSON"),
        ([b"meta", b"[1, 2]"], "must be a JSON object"),
        ([b"meta", b"[" * 100_000 + b"]" * 100_000], "not UTF-8 JSON: RecursionError"),
        ([b"meta", b'{"v":1,"seq":' + b"9" * 5000 + b"}"], "not UTF-8 JSON: ValueError"),
        ([b"meta", b'{"v":2,"seq":0}'], "unsupported wire version 2"),
        ([b"meta", b'{"v":1.0,"seq":0}'], "unsupported wire version"),
        ([b"meta", b'{"seq":0}'], "unsupported wire version None"),
        ([b"meta", b'{"v":1}'], "lacks seq"),
        ([*_rates_parts()[:2], b"\x00" * 12], "12 bytes, expected 4 \\* n = 16"),
        (_rates_parts(n=5), "expected 4 \\* n = 20"),
        (_rates_parts(n=0), "n >= 1"),
        (_rates_parts(frame="3"), "'frame' must be an integer"),
        ([b"rates", b'{"v":1,"seq":0}', b""], "lacks tick"),
        ([b"meta", 12], "not bytes"),
    ],
)
def test_decode_validation(frames: list[Any], match: str) -> None:
    with pytest.raises(WireError, match=match) as info:
        decode(frames)
    assert "\n" not in str(info.value)


def test_unknown_fields_pass_through() -> None:
    msg = decode(_rates_parts(mode="replay", lat_ms={"e2e": None, "custom": 1}))
    assert msg.header["mode"] == "replay" and msg.header["lat_ms"] == {"e2e": None, "custom": 1}


def test_seq_tracker() -> None:
    t = SeqTracker()
    gaps = [t.update(s) for s in (5, 6, 9, 10, 11, 15, 2, 3)]
    assert gaps == [None, None, (6, 2), None, None, (11, 3), None, None]
    assert t.first_seq == 5 and t.last_seq == 3 and t.gaps == [(6, 2), (11, 3)] and t.lost == 5 and t.restarts == 1


# named streams: topics rates/NAME and meta/NAME, header field `stream`


@pytest.mark.parametrize("name", ["a", "cam0", "left_eye", "A-B_9", "x" * 32, "rates", "0"])
def test_named_rates_round_trip(name: str) -> None:
    rates = np.array([1.5, np.nan, -2.0], np.float32)
    assert check_stream_name(name) == name
    sent, parts = rates_message(make_header(seq=4), rates, name)
    assert parts[0] == topic_for("rates", name) == f"rates/{name}".encode() and len(parts) == 3
    assert json.loads(parts[1]) == sent and sent["stream"] == name and list(sent)[-1] == "stream"
    msg = decode([bytes(p) for p in parts])
    assert msg.topic == "rates" and msg.stream == name and msg.header == sent and msg.seq == 4
    assert msg.rates is not None and msg.rates.tobytes() == rates.tobytes()
    again = encode_rates(msg.header, msg.rates)  # a decoded header encodes to the same message
    assert [bytes(p) for p in again] == [bytes(p) for p in parts]
    assert [bytes(p) for p in encode_rates(msg.header, msg.rates, msg.stream)] == [bytes(p) for p in parts]


def test_named_meta_round_trip() -> None:
    meta = {"seq": 2, "model": "m", "cell_ids": ["a", "b"]}
    sent, parts = meta_message(meta, "eye")
    assert parts == [b"meta/eye", parts[1]] and sent == {**meta, "v": 1, "stream": "eye"}
    msg = decode(parts)
    assert msg == Message("meta", sent, None, stream="eye") and msg.stream == "eye" and msg.topic == "meta"
    assert encode_meta(msg.header) == parts and encode_meta(msg.header, "eye") == parts
    assert meta == {"seq": 2, "model": "m", "cell_ids": ["a", "b"]}  # the caller's dict is not touched


def test_unnamed_messages_are_v1_as_before() -> None:
    parts = encode_rates(make_header(), np.ones(2, np.float32))
    assert parts[0] == b"rates" and "stream" not in json.loads(parts[1])
    assert decode(parts).stream is None and decode(encode_meta({"seq": 0})).stream is None
    assert encode_meta({"seq": 0})[0] == b"meta" and b"stream" not in encode_meta({"seq": 0})[1]


def test_the_header_stream_field_must_match_the_given_stream() -> None:
    assert rates_message(make_header(stream="a"), [1.0], "a")[0]["stream"] == "a"  # said twice, the same: fine
    with pytest.raises(WireError, match="header field 'stream' 'b' is not the message's stream 'a'"):
        encode_rates(make_header(stream="b"), [1.0], "a")
    with pytest.raises(WireError, match="is not the message's stream"):
        encode_meta({"seq": 0, "stream": "b"}, "a")
    for bad in (None, 5, "", "a b", "x" * 33):  # a header's own stream field, no stream given: checked as a name
        with pytest.raises(WireError, match="header field 'stream' must be a stream name"):
            encode_rates(make_header(stream=bad), [1.0])
        with pytest.raises(WireError, match="header field 'stream' must be a stream name"):
            encode_meta({"seq": 0, "stream": bad})


@pytest.mark.parametrize("bad", ["", "x" * 33, "a/b", "a b", "é", "a\n", "a.b", "*", 5, b"ab", ["a"]])
def test_bad_stream_names_are_refused(bad: Any) -> None:
    for call in (
        lambda: check_stream_name(bad),
        lambda: topic_for("rates", bad),
        lambda: encode_rates(make_header(), [1.0], bad),
        lambda: encode_meta({"seq": 0}, bad),
    ):
        with pytest.raises(VistError, match="stream name") as info:
            call()
        assert "\n" not in str(info.value) and len(str(info.value)) < 120


def test_check_headers_accept_an_optional_stream_field() -> None:
    full = {**make_header(), "v": 1, "n": 1}
    check_rates_header(full)
    check_rates_header({**full, "stream": "cam"})
    check_meta_header({"seq": 0, "stream": "cam"})
    with pytest.raises(WireError, match="'stream' must be a stream name"):
        check_rates_header({**full, "stream": 3})
    with pytest.raises(WireError, match="'stream' must be a stream name"):
        check_meta_header({"seq": 0, "stream": "a/b"})


def _named(topic: bytes, **changes: Any) -> list[bytes]:
    """A rates message (or, for a meta topic, a meta one) with its topic and header fields replaced."""
    if topic.startswith(b"meta"):
        head: dict[str, Any] = {"v": 1, "seq": 0}
        tail: list[bytes] = []
    else:
        head = {**make_header(), "v": 1, "n": 1}
        tail = [np.ones(1, "<f4").tobytes()]
    head.update(changes)
    head = {k: v for k, v in head.items() if v is not ...}  # ...: leave the field out
    return [topic, json.dumps(head).encode(), *tail]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (_named(b"rates/cam"), "topic b'rates/cam' carries a header with no stream field"),
        (_named(b"meta/cam"), "topic b'meta/cam' carries a header with no stream field"),
        (_named(b"rates/cam", stream="eye"), "topic b'rates/cam' carries a header with stream 'eye'"),
        (_named(b"meta/cam", stream="eye"), "carries a header with stream 'eye'"),
        (_named(b"rates", stream="cam"), "topic b'rates' carries a header with stream 'cam'"),
        (_named(b"meta", stream="cam"), "topic b'meta' carries a header with stream 'cam'"),
        (_named(b"rates", stream=None), "'stream' must be a stream name"),
        (_named(b"meta", stream=None), "'stream' must be a stream name"),
        (_named(b"rates/cam", stream=["cam"]), "carries a header with stream \\['cam'\\]"),
        (_named(b"rates/", stream=""), "topic b'rates/': a stream's name is 1 to 32"),
        (_named(b"rates/a b", stream="a b"), "a stream's name is"),
        (_named(b"meta/" + b"x" * 33, stream="x" * 33), "a stream's name is"),
        (_named(b"rates/caf\xc3\xa9", stream="caf\u00e9"), "a stream's name is"),
        (_named(b"rates/a/b", stream="a/b"), "a stream's name is"),
        (_named(b"ratescam", stream="cam"), "unknown topic b'ratescam'"),
        (_named(b"video/cam", stream="cam"), "unknown topic"),
        (_named(b"rates/cam", stream="cam", v=2), "unsupported wire version 2"),
    ],
)
def test_decode_named_stream_validation(frames: list[bytes], match: str) -> None:
    with pytest.raises(WireError, match=match) as info:
        decode(frames)
    assert "\n" not in str(info.value)


def test_decode_named_streams_as_sent() -> None:
    for frames in (_named(b"rates/cam", stream="cam"), _named(b"meta/cam", stream="cam")):
        msg = decode(frames)
        assert msg.stream == "cam" and msg.topic == frames[0].decode().split("/")[0]


def test_message_stream_field() -> None:
    header = {"seq": 1, "stream": "cam"}
    assert Message("meta", header).stream == "cam"  # positional construction as before: from the header
    assert Message("meta", {"seq": 1}, None, 5).stream is None and Message("meta", {"seq": 1}, None, 5).t_recv_ns == 5
    assert Message("meta", {"seq": 1}, None, None, "eye").stream == "eye"
    assert Message("meta", header) == Message("meta", header, None, 9, "cam")  # t_recv_ns is not compared


def run_header(tick: int = 0, **extra: Any) -> dict[str, Any]:
    """A rates header laid out as a run's (no seq, v, n, t_pub_ns: the publisher sets them)."""
    return {"tick": tick, "frame": tick, "t_frame_ns": 1_700_000_000_000_000_000 + tick, "stale": False,
            "lat_ms": {"capture": 0.5, "preprocess": None, "vit": 7.0, "temporal": 0.75, "e2e": 9.5},
            "mode": "live", "paused_ticks": 0, **extra}  # fmt: skip


def general(header: dict[str, Any], n: int, stream: str | None, seq: int, stamp: int) -> tuple[dict[str, Any], bytes]:
    """What the general encoder sends for `header` with seq and t_pub_ns, as the publisher fills them."""
    full = {**header, "seq": seq}
    if stream is not None:
        full["stream"] = stream
    full["t_pub_ns"] = stamp
    sent, parts = rates_message(full, np.zeros(n, np.float32), stream)
    return sent, bytes(parts[1])


def random_value(rng: np.random.Generator) -> Any:
    pick = int(rng.integers(7))
    if pick == 0:
        return None
    if pick == 1:
        return bool(rng.integers(2))
    if pick == 2:
        return int(rng.integers(-(2**62), 2**62)) * int(rng.integers(1, 4))
    if pick == 3:
        return float(rng.standard_normal() * 10.0 ** rng.integers(-300, 300))
    if pick == 4:
        return [-0.0, 0.0, 1e-310, 5e-324, 1.7976931348623157e308, 0.1 + 0.2][int(rng.integers(6))]
    return "".join(rng.choice(list('ab%"\\\n\t/é漢😀 '), size=int(rng.integers(0, 8))))


def test_rates_template_writes_byte_for_byte_what_the_general_encoder_writes() -> None:
    rng = np.random.default_rng(7)
    names = ["capture", "vit", "e2e", "per%cent", 'quo"te', "ünï", ""]
    for trial in range(400):
        stages = tuple(rng.choice(names, size=int(rng.integers(0, 5)), replace=False))
        lat = {str(s): [None, float(rng.standard_normal() * 100), int(rng.integers(-5, 5))][int(rng.integers(3))]
               for s in stages}  # fmt: skip
        extra = {f"x{i}%": random_value(rng) for i in range(int(rng.integers(0, 4)))}
        header = {"tick": int(rng.integers(-(2**40), 2**62)), "frame": int(rng.integers(0, 2**31)),
                  "t_frame_ns": int(rng.integers(0, 2**63)), "stale": bool(rng.integers(2)), "lat_ms": lat,
                  **extra}  # fmt: skip
        order = list(header)
        rng.shuffle(order)  # any field order
        header = {k: header[k] for k in order}
        stream = [None, "s0", "cam-1_B"][trial % 3]
        n, seq, stamp = int(rng.integers(1, 500)), int(rng.integers(0, 2**40)), int(rng.integers(0, 2**63))
        template = RatesTemplate.build(header, n, stream)
        assert template is not None and template.matches(header, n) and not template.matches(header, n + 1)
        values = template.values(header)
        assert values is not None
        text = template.text(values, seq, stamp)
        want_sent, want_text = general(header, n, stream, seq, stamp)
        assert text == want_text
        sent = template.as_sent(header, seq, stamp)
        assert sent == want_sent and list(sent) == list(want_sent)
        message = decode([template.topic, text, np.zeros(n, np.float32).tobytes()])
        assert message.header == sent and message.stream == stream


@pytest.mark.parametrize(
    "change",
    [
        {"tick": np.int64(3)},  # numpy scalars: converted by the general encoder
        {"stale": np.bool_(True)},
        {"lat_ms": {"vit": np.float32(1.5)}},
        {"tick": 3.0},  # refused by the general encoder
        {"tick": True},
        {"stale": 1},
        {"lat_ms": {"vit": float("nan")}},
        {"lat_ms": {"vit": float("inf")}},
        {"lat_ms": {"vit": True}},
        {"lat_ms": {"vit": "7"}},
        {"mode": float("-inf")},
        {"mode": ["a", 1]},  # containers: the general encoder
        {"mode": {"a": 1}},
    ],
)
def test_rates_template_leaves_what_it_cannot_write_to_the_general_encoder(change: dict[str, Any]) -> None:
    header = run_header(tick=5)
    header["lat_ms"] = {"vit": 1.0}
    template = RatesTemplate.build(header, 3, "s0")
    assert template is not None and template.values(header) is not None
    changed = {**header, **change}
    assert template.matches(changed, 3)
    assert template.values(changed) is None
    try:
        _, text = general(changed, 3, "s0", 1, 2)
    except WireError:
        return  # refused: the publisher's general path refuses it too
    assert json.loads(text)["tick"] == int(changed["tick"])  # converted: sent by the general path


@pytest.mark.parametrize(
    "header",
    [
        make_header(),  # seq and t_pub_ns given: the publisher's own fields
        run_header(v=1),
        run_header(n=3),
        run_header(stream="s0"),
        {k: v for k, v in run_header().items() if k != "frame"},  # a required field missing
        {**run_header(), "lat_ms": [("vit", 1.0)]},  # not a dict
        {**run_header(), "lat_ms": {1: 1.0}},  # not a str key
        {**run_header(), 7: "x"},
    ],
)
def test_rates_template_refuses_layouts_it_cannot_hold(header: dict[str, Any]) -> None:
    assert RatesTemplate.build(header, 3, None) is None


def test_rates_template_refuses_bad_streams_and_sizes() -> None:
    assert RatesTemplate.build(run_header(), 3, "a/b") is None
    assert RatesTemplate.build(run_header(), 0, "s0") is None
    template = RatesTemplate.build(run_header(), 3, "s0")
    assert template is not None and template.topic == b"rates/s0"
    assert not template.matches(run_header(extra=1), 3)  # another layout
    assert not template.matches({**run_header(), "lat_ms": {"vit": 1.0}}, 3)
    reordered = run_header()
    reordered["tick"] = reordered.pop("tick")
    assert not template.matches(reordered, 3)  # the same fields in another order are another text
    assert dumps(template.as_sent(run_header(), 4, 5)) == template.text(template.values(run_header()) or [], 4, 5)
