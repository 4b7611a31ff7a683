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
    SeqTracker,
    WireError,
    decode,
    encode_meta,
    encode_rates,
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
