"""Wire format v1: multipart ZeroMQ messages `[topic, JSON header, (rates only) float32 payload]`.

Pure functions, no sockets. See docs/protocol.md for the field list and the semantics of `seq`.

Named streams: a run publishing several streams sends stream NAME's messages on topics `rates/NAME` and
`meta/NAME` with a header field `stream` = NAME; a run's one unnamed stream uses `rates` and `meta` and its
headers have no `stream` field. ZeroMQ matches topics by prefix: a subscriber to `rates` gets every stream.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vist_rt.errors import VistError, brief, error_line

VERSION = 1
TOPIC_RATES = b"rates"
TOPIC_META = b"meta"
TOPICS: dict[bytes, str] = {TOPIC_RATES: "rates", TOPIC_META: "meta"}
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")  # a named stream's topics are rates/<name> and meta/<name>
STREAM_NAME_RULE = "1 to 32 letters, digits, '_' or '-'"

# rates header fields every message carries, and the JSON types they must have
INT_FIELDS = ("v", "seq", "tick", "frame", "n", "t_frame_ns", "t_pub_ns")
RATES_FIELDS = (*INT_FIELDS, "stale", "lat_ms")
LATENCY_STAGES = ("capture", "preprocess", "vit", "temporal", "e2e")  # the usual keys of lat_ms (others allowed)
RATES_DTYPE = np.dtype("<f4")


class WireError(VistError):
    """A message that does not follow wire format v1 (one line)."""


@dataclass(frozen=True)
class Message:
    """One decoded message: `topic` ("rates" | "meta", also for a named stream's `rates/NAME`, `meta/NAME`),
    its JSON `header`, `rates` (float32 [n]) or None, and `stream`: the named stream's NAME, None for a run's
    one unnamed stream (when not given, the header's `stream` field).

    `t_recv_ns`: the receiver's wall clock (`time.time_ns()`) when the message came off the socket, before it
    was decoded (set by `vist_rt.client.Subscriber`; None for a message not received from a socket). Minus the
    header's `t_pub_ns`, it is the message's delivery latency (same machine, or clocks kept in step)."""

    topic: str
    header: dict[str, Any]
    rates: np.ndarray | None = None
    t_recv_ns: int | None = field(default=None, compare=False)
    stream: str | None = None

    def __post_init__(self) -> None:
        if self.stream is None and isinstance(self.header.get("stream"), str):
            object.__setattr__(self, "stream", self.header["stream"])

    @property
    def seq(self) -> int:
        """The publisher-wide sequence number."""
        return int(self.header["seq"])


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    if type(value) is int:  # the usual case, without the ABC check (this runs on every message)
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if type(value) is float or type(value) is int:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays in a header become plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_json_default)  # stateless: shared


def dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact, strict (no NaN/Infinity) UTF-8 JSON; WireError when it cannot be encoded."""
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise WireError(f"header is not strict JSON: {exc}") from None


def check_stream_name(name: Any) -> str:
    """`name` if it can name a stream (1-32 of A-Z a-z 0-9 _ -), else one VistError line."""
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise VistError(f"bad stream name {brief(name)}: use {STREAM_NAME_RULE}")
    return name


def topic_for(kind: str, stream: str | None = None) -> bytes:
    """The topic of a `kind` ("rates" or "meta") message of `stream`: `kind/stream`, or `kind` for None."""
    return kind.encode() if stream is None else f"{kind}/{check_stream_name(stream)}".encode()


def _check_stream_field(header: Mapping[str, Any], kind: str) -> None:
    """The optional `stream` field, when present, is a stream name."""
    if "stream" in header and not (isinstance(header["stream"], str) and STREAM_NAME.fullmatch(header["stream"])):
        raise WireError(f"{kind} header field 'stream' must be a stream name ({STREAM_NAME_RULE}), "
                        f"got {brief(header['stream'])}")  # fmt: skip


def check_rates_header(header: Mapping[str, Any]) -> None:
    """Required fields present with the right JSON types (one-line WireError otherwise)."""
    missing = [k for k in RATES_FIELDS if k not in header]
    if missing:
        raise WireError(f"rates header lacks {', '.join(missing)}")
    for key in INT_FIELDS:
        if not is_int(header[key]):
            raise WireError(f"rates header field {key!r} must be an integer, got {header[key]!r}")
    if header["seq"] < 0 or header["n"] < 1:
        raise WireError(f"rates header needs seq >= 0 and n >= 1, got seq={header['seq']} n={header['n']}")
    if not isinstance(header["stale"], (bool, np.bool_)):
        raise WireError(f"rates header field 'stale' must be a boolean, got {header['stale']!r}")
    lat = header["lat_ms"]
    if not isinstance(lat, Mapping):
        raise WireError(f"rates header field 'lat_ms' must be an object of stage -> ms, got {lat!r}")
    for stage, ms in lat.items():
        if not isinstance(stage, str) or not (ms is None or (_is_number(ms) and math.isfinite(ms))):
            raise WireError(f"lat_ms[{stage!r}] must be a finite number of ms or null, got {ms!r}")
    _check_stream_field(header, "rates")


def check_meta_header(header: Mapping[str, Any]) -> None:
    """`seq` an integer >= 0, `cell_ids` (if any) a list, `stream` (if any) a stream name; WireError otherwise."""
    if "seq" not in header:
        raise WireError("meta header lacks seq")
    if not is_int(header["seq"]) or header["seq"] < 0:
        raise WireError(f"meta header field 'seq' must be an integer >= 0, got {header['seq']!r}")
    ids = header.get("cell_ids")
    if ids is not None and (not isinstance(ids, Sequence) or isinstance(ids, str)):
        raise WireError("meta header field 'cell_ids' must be a list")
    _check_stream_field(header, "meta")


def encode_rates(header: Mapping[str, Any], rates: np.ndarray, stream: str | None = None) -> list[bytes | memoryview]:
    """[b"rates", header JSON, payload]: fills `v` and `n`; the payload is the float32 array's own buffer.
    `stream`: a named stream's message (topic `rates/<stream>`, header field `stream`; a `stream` field already
    in `header` must say the same). None: the header's `stream` field decides (none: topic `rates`), so a decoded
    message's header encodes to the same topic again.

    The payload is not copied when `rates` is already contiguous little-endian float32: do not modify
    the array until it has been sent (ZeroMQ copies messages under 64 KiB anyway).
    """
    return rates_message(header, rates, stream)[1]


def rates_message(
    header: Mapping[str, Any], rates: np.ndarray, stream: str | None = None
) -> tuple[dict[str, Any], list[bytes | memoryview]]:
    """(the header as sent, the message parts) of `encode_rates`: the header gets `v` and `n` first, then its
    other fields in their order (`stream` last unless the header has it already)."""
    arr = rates
    if not (type(arr) is np.ndarray and arr.dtype == RATES_DTYPE and arr.ndim == 1 and arr.flags.c_contiguous):
        arr = np.asarray(rates)  # (the run's own rates skip these checks: they are float32 [C] already)
        if arr.ndim != 1:
            raise WireError(f"rates must be 1-D (one value per cell), got shape {tuple(arr.shape)}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise WireError(f"rates must be numeric, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=RATES_DTYPE)
    n = int(arr.shape[0])
    full = {"v": VERSION, "n": n}
    full.update(header)
    full["v"], full["n"] = VERSION, n
    name = _name_stream(full, stream)
    check_rates_header(full)
    return full, [topic_for("rates", name), dumps(full), memoryview(arr).cast("B")]


def _name_stream(full: dict[str, Any], stream: str | None) -> str | None:
    """Set (or check) the header's `stream` field for a message of `stream`; the message's stream (None: the plain
    topics). With `stream` None the header's own field is the answer (checked by check_*_header)."""
    if stream is None:
        return full.get("stream")
    if full.setdefault("stream", check_stream_name(stream)) != stream:
        raise WireError(f"header field 'stream' {brief(full['stream'])} is not the message's stream {stream!r}")
    return stream


_RESERVED = frozenset(("v", "n", "seq", "stream", "t_pub_ns"))  # set by the publisher; a template leaves such
# headers to rates_message
_INT, _BOOL, _NUM, _ANY = range(4)  # what a templated value must be: an int, a bool, a finite number or null, any


def _scalar(value: Any, kind: int) -> bytes | None:
    """`value` as `dumps` writes it when it is a plain scalar of `kind`; None for anything else (numpy scalars,
    containers, NaN, a wrong type: left to the general encoder, which converts or refuses them)."""
    t = type(value)
    if t is float:
        return repr(value).encode() if kind in (_NUM, _ANY) and value - value == 0.0 else None
    if t is int:
        return b"%d" % value if kind != _BOOL else None
    if value is None:
        return b"null" if kind in (_NUM, _ANY) else None
    if t is bool:
        return (b"true" if value else b"false") if kind in (_BOOL, _ANY) else None
    if t is str and kind == _ANY:
        return _ENCODER.encode(value).encode()
    return None


class RatesTemplate:
    """The `rates` messages of one stream whose headers share one layout (the same fields in the same order, the
    same lat_ms stages, the same n): the JSON text around the values is made once; each message only writes its
    values. The header text is byte for byte what `rates_message` makes of the same header with `seq` and
    `t_pub_ns` added, and a header that `check_rates_header` would refuse is never written (`values` is None).

    `build` makes one from a header (None for a layout it cannot hold: fields the publisher sets, a lat_ms that is
    not a dict of str keys, a required field missing); `matches` says whether a header has its layout."""

    def __init__(self, keys: tuple[str, ...], stages: tuple[str, ...], n: int, stream: str | None) -> None:
        self.keys, self.stages, self.n, self.stream = keys, stages, n, stream
        self.topic = topic_for("rates", stream)
        self.lat_at = keys.index("lat_ms")
        kinds = [_INT if k in INT_FIELDS else _BOOL if k == "stale" else _ANY for k in keys]
        kinds[self.lat_at : self.lat_at + 1] = [_NUM] * len(stages)
        self.kinds = tuple(kinds)
        text = [b'{"v":%d,"n":%d' % (VERSION, n)]
        for key in keys:
            if key == "lat_ms":
                text.append(b',"lat_ms":{' + b",".join(_json_key(s) + b":%s" for s in stages) + b"}")
            else:
                text.append(b"," + _json_key(key) + b":%s")
        if stream is not None:
            text.append(b',"seq":%d,"stream":' + _ENCODER.encode(stream).encode() + b',"t_pub_ns":%d}')
        else:
            text.append(b',"seq":%d,"t_pub_ns":%d}')
        self._text = b"".join(text)

    @classmethod
    def build(cls, header: Mapping[str, Any], n: int, stream: str | None) -> RatesTemplate | None:
        """A template for `header`'s layout, or None where one cannot be made (the general encoder then serves)."""
        lat = header.get("lat_ms")
        if type(header) is not dict or type(lat) is not dict or n < 1:
            return None
        keys, stages = tuple(header), tuple(lat)
        if not all(type(k) is str for k in (*keys, *stages)) or _RESERVED.intersection(keys):
            return None
        if any(k not in header for k in RATES_FIELDS if k not in _RESERVED):
            return None
        if stream is not None and not STREAM_NAME.fullmatch(stream):
            return None
        return cls(keys, stages, n, stream)

    def matches(self, header: Mapping[str, Any], n: int) -> bool:
        """`header` and a payload of n cells have this template's layout."""
        lat = header.get("lat_ms")
        return n == self.n and type(lat) is dict and tuple(header) == self.keys and tuple(lat) == self.stages

    def values(self, header: Mapping[str, Any]) -> list[bytes] | None:
        """The JSON text of each of a matching `header`'s values, in order; None when one is not a plain value of
        its field's type (the general encoder decides)."""
        out: list[bytes] = []
        kinds = self.kinds
        i = 0
        for key, value in header.items():
            if key == "lat_ms":
                for ms in value.values():
                    text = _scalar(ms, _NUM)
                    if text is None:
                        return None
                    out.append(text)
                i += len(self.stages)
                continue
            text = _scalar(value, kinds[i])
            if text is None:
                return None
            out.append(text)
            i += 1
        return out

    def text(self, values: Sequence[bytes], seq: int, t_pub_ns: int) -> bytes:
        """The header's JSON text from `values`, with `seq` and `t_pub_ns`."""
        return self._text % (*values, seq, t_pub_ns)

    def as_sent(self, header: Mapping[str, Any], seq: int, t_pub_ns: int) -> dict[str, Any]:
        """The header as sent (the dict `rates_message` returns, with t_pub_ns), fields in the text's order."""
        sent = {"v": VERSION, "n": self.n, **header, "seq": seq}
        if self.stream is not None:
            sent["stream"] = self.stream
        sent["t_pub_ns"] = t_pub_ns
        return sent


def _json_key(key: str) -> bytes:
    """A JSON object key as `dumps` writes it (quoted, escaped), with any % doubled for a %-template."""
    return _ENCODER.encode(key).encode().replace(b"%", b"%%")


def encode_meta(header: Mapping[str, Any], stream: str | None = None) -> list[bytes]:
    """[b"meta", header JSON]: fills `v`; `seq` is required, the other fields are free-form. `stream`: a named
    stream's meta (topic `meta/<stream>`, header field `stream`), as for `encode_rates`.

    Usual fields: model (identity), cell_ids, units, fps (model frame rate), rf_centres (or null), extractor.
    """
    return meta_message(header, stream)[1]


def meta_message(header: Mapping[str, Any], stream: str | None = None) -> tuple[dict[str, Any], list[bytes]]:
    """(the header as sent, the message parts) of `encode_meta`: `v` set (kept in place if present, else last),
    then `stream` (if not there already)."""
    full = dict(header)
    full["v"] = VERSION
    name = _name_stream(full, stream)
    check_meta_header(full)
    return full, [topic_for("meta", name), dumps(full)]


def _as_bytes(part: Any) -> bytes | memoryview:
    if isinstance(part, (bytes, bytearray, memoryview)):
        return part
    buffer = getattr(part, "buffer", None)  # zmq.Frame
    if buffer is not None:
        return buffer
    raise WireError(f"message part is {type(part).__name__}, not bytes")


def decode(frames: Sequence[Any], t_recv_ns: int | None = None) -> Message:
    """Validate and decode one multipart message (bytes or zmq.Frame parts); WireError if it is not v1.
    `t_recv_ns`: when the frames were received (kept in the Message)."""
    if len(frames) < 2:
        raise WireError(f"expected 2 (meta) or 3 (rates) message parts, got {len(frames)}")
    parts = [_as_bytes(p) for p in frames]
    topic_raw = bytes(parts[0])
    base, slash, name = topic_raw.partition(b"/")
    kind = TOPICS.get(base)
    if kind is None:
        raise WireError(f"unknown topic {topic_raw[:48]!r} (expected b'rates', b'meta', b'rates/NAME' or b'meta/NAME')")
    stream = name.decode("ascii", "replace") if slash else None
    if stream is not None and not STREAM_NAME.fullmatch(stream):
        raise WireError(f"topic {topic_raw[:48]!r}: a stream's name is {STREAM_NAME_RULE}")
    want = 3 if kind == "rates" else 2
    if len(parts) != want:
        raise WireError(f"a {kind} message has {want} parts, got {len(parts)}")
    header = loads_header(parts[1])
    v = header.get("v")
    if v != VERSION or not is_int(v):
        raise WireError(f"unsupported wire version {v!r} (this is v{VERSION})")
    if header.get("stream") != stream:  # a named stream's header names it; a plain topic's header has no stream
        said = "no stream field" if "stream" not in header else f"stream {brief(header['stream'])}"
        raise WireError(f"topic {topic_raw[:48]!r} carries a header with {said}")
    if kind == "meta":
        check_meta_header(header)
        return Message("meta", header, None, t_recv_ns, stream)
    check_rates_header(header)
    payload = parts[2]
    size = memoryview(payload).nbytes
    if size != 4 * header["n"]:
        raise WireError(f"rates payload has {size} bytes, expected 4 * n = {4 * header['n']}")
    return Message("rates", header, np.frombuffer(payload, dtype=RATES_DTYPE), t_recv_ns, stream)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # stateless: shared


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a parsed JSON value (a scalar: 0, `{"a": [1]}`: 2)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(raw: bytes | memoryview, *, max_bytes: int | None = None, max_depth: int | None = None) -> Any:
    """Strict UTF-8 JSON text -> value; ValueError (one short line) for anything else: not UTF-8, not JSON,
    NaN/Infinity, more than `max_bytes` bytes (checked before decoding), nesting deeper than `max_depth`, and
    JSON that Python refuses to build (nesting deeper than its recursion limit, integers of > 4300 digits)."""
    view = memoryview(raw)
    if max_bytes is not None and view.nbytes > max_bytes:
        raise ValueError(f"{view.nbytes} bytes, more than the {max_bytes} allowed")
    try:
        value = _DECODER.decode(bytes(view).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(error_line(exc)[:200]) from None
    if max_depth is not None and json_depth(value) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def loads_header(raw: bytes | memoryview) -> dict[str, Any]:
    """A UTF-8 JSON object, else WireError."""
    try:
        header = parse_json(raw)
    except ValueError as exc:
        raise WireError(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError(f"header must be a JSON object, got {type(header).__name__}")
    return header


class SeqTracker:
    """Loss detection from the publisher-wide `seq` (only meaningful when both topics are received).

    `gaps` lists (last seen seq, number missing); a seq that goes backwards means the publisher restarted:
    it is counted in `restarts` and tracking starts again from there.
    """

    def __init__(self) -> None:
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.gaps: list[tuple[int, int]] = []
        self.lost = 0
        self.restarts = 0

    def update(self, seq: int) -> tuple[int, int] | None:
        """Record one seq; returns the gap it reveals, if any."""
        gap = None
        if self.last_seq is None:
            self.first_seq = seq
        elif seq > self.last_seq + 1:
            gap = (self.last_seq, seq - self.last_seq - 1)
            self.gaps.append(gap)
            self.lost += gap[1]
        elif seq <= self.last_seq:
            self.restarts += 1
        self.last_seq = seq
        return gap
