"""`vist-rt listen` (print the stream), `vist-rt record` (write it to HDF5), `vist-rt recover` (a killed one)."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.cli.options import int_at_least
from vist_rt.net import DEFAULT_PUB

_SLICE_MS = 200


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _topics(text: str) -> tuple[str, ...]:
    topics = tuple(t.strip() for t in text.split(",") if t.strip())
    if not topics or any(t not in ("rates", "meta") for t in topics):
        raise argparse.ArgumentTypeError(f"topics are a comma-separated subset of rates,meta; got {text!r}")
    return topics


def _stream_name(text: str) -> str:
    from vist_rt.errors import VistError
    from vist_rt.runtime.wire import check_stream_name

    try:
        return check_stream_name(text)
    except VistError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int_at_least(1), metavar="N", help="stop after N messages (default: no limit)")
    p.add_argument("--timeout", type=_positive_seconds, metavar="S", help="stop when no message arrives for S seconds")
    p.add_argument("--server-key", metavar="KEY", help="CurveZMQ: the publisher's public key (file or Z85 text)")
    p.add_argument("--stream", type=_stream_name, action="append", metavar="NAME",
                   help="only this named stream of a several-stream run (repeatable; default: all)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `listen`, `record` and `recover`."""
    p = sub.add_parser("listen", help="print the messages of a vist-rt publisher")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_PUB, help=f"publisher endpoint (default {DEFAULT_PUB})")
    p.add_argument("--topics", type=_topics, default=("rates", "meta"), help="rates,meta (default: both)")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line (rates included)")
    p.set_defaults(func=run_listen)

    r = sub.add_parser("record", help="record a vist-rt stream to HDF5, losslessly")
    r.add_argument("endpoint", help=f"publisher endpoint, e.g. {DEFAULT_PUB}")
    r.add_argument("out", help="output file (.h5)")
    _common(r)
    r.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    r.add_argument("--flush-every", type=int_at_least(1), default=100, metavar="N", help="messages per flush (100)")
    r.set_defaults(func=run_record)

    v = sub.add_parser("recover", help="complete a recording whose process was killed, from its journal")
    v.add_argument("path", help="the recording (OUT.h5, next to OUT.h5.journal)")
    v.set_defaults(func=run_recover)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT (Ctrl-C), SIGTERM or SIGHUP (main thread only; elsewhere never set by a signal).

    Turning the signals into an event means no KeyboardInterrupt can land inside a write; a second Ctrl-C
    raises KeyboardInterrupt as usual, for a stop that is stuck.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.reason = "interrupted" if signum == signal.SIGINT else signal.Signals(signum).name  # type: ignore[attr-defined]
        stop.set()

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield stop
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


_BAD = object()  # what _recv returns for a message that is not wire format v1
_UNSEEN = object()  # _Recording.stream before the first message


def _recv(sub: Any, wait_ms: int) -> Any:
    """The next message; None when none came within `wait_ms`; _BAD for a bad one (said on stderr, skipped)."""
    from vist_rt.runtime.wire import WireError

    try:
        return sub.recv(wait_ms)
    except WireError as exc:
        print(f"vist-rt: bad message skipped: {exc}", file=sys.stderr)
        return _BAD


def _receive(
    args: argparse.Namespace,
    sub: Any,
    stop: threading.Event,
    on_message: Callable[[Any], None],
    on_idle: Callable[[], None] | None = None,
) -> str:
    """Receive until --count, --timeout, a signal or Ctrl-C; returns why it stopped.

    On a signal, the messages the socket already holds are taken too (for up to 10 s), so that stopping a
    recording does not drop what was in flight. `on_idle` runs between messages.
    """
    count = 0
    timeout_ms = None if args.timeout is None else args.timeout * 1000.0
    last = time.monotonic()
    try:
        while not stop.is_set():
            if args.count is not None and count >= args.count:
                return f"{count} messages"
            if timeout_ms is not None and (time.monotonic() - last) * 1000.0 >= timeout_ms:
                return f"no message for {args.timeout:g} s"
            if on_idle is not None:
                on_idle()
            msg = _recv(sub, _SLICE_MS)
            if msg is None or msg is _BAD:  # a bad message does not reset --timeout
                continue
            last = time.monotonic()
            count += 1
            on_message(msg)
        drain_until = time.monotonic() + 10.0
        while (args.count is None or count < args.count) and time.monotonic() < drain_until:
            msg = _recv(sub, 0)
            if msg is None:
                break
            if msg is not _BAD:
                count += 1
                on_message(msg)
        return getattr(stop, "reason", "terminated")
    except KeyboardInterrupt:
        return "interrupted"


def _mean(values: Any) -> float:
    return float(values.mean()) if values is not None and values.size else float("nan")


def _summary(sub: Any, why: str, rates: int, meta: int) -> str:
    text = f"stopped ({why}): {rates} rates, {meta} meta messages"
    if sub.first_seq is not None:
        text += f", seq {sub.first_seq}..{sub.last_seq}"
    if sub.tracks_gaps:
        text += f", lost {sub.lost} in {len(sub.gaps)} gaps"
    return text


def run_listen(args: argparse.Namespace) -> int:
    """Print one line (or JSON object) per message, a line per gap in seq, and a summary at the end."""
    from vist_rt.client import Subscriber

    counts = {"rates": 0, "meta": 0}
    out = sys.stdout

    def show(msg: Any) -> None:
        counts[msg.topic] += 1
        h = msg.header
        if args.json:
            record: dict[str, Any] = {"topic": msg.topic}
            if msg.stream is not None:
                record["stream"] = msg.stream
            record["header"] = h
            if msg.rates is not None:  # strict JSON: a non-finite rate is null
                values = msg.rates.tolist()
                finite = np.isfinite(msg.rates).all()
                record["rates"] = values if finite else [v if math.isfinite(v) else None for v in values]
            print(json.dumps(record, separators=(",", ":")), file=out, flush=True)
            return
        name = "" if msg.stream is None else f"  stream {msg.stream}"
        if msg.topic == "rates":
            e2e = (h.get("lat_ms") or {}).get("e2e")
            e2e_text = f"{e2e:7.2f} ms" if isinstance(e2e, (int, float)) else "      - ms"
            print(
                f"seq {h['seq']:>8}  tick {h['tick']:>8}  frame {h['frame']:>8}  "
                f"stale {'yes' if h['stale'] else 'no ':3}  e2e {e2e_text}  mean {_mean(msg.rates):.4g}  n {h['n']}"
                f"{name}",
                file=out,
                flush=True,
            )
        else:
            ids = h.get("cell_ids")
            print(
                f"seq {h['seq']:>8}  meta  model {h.get('model', '?')}  cells {len(ids) if ids else '?'}  "
                f"fps {h.get('fps', '?')}  units {h.get('units', '?')}{name}",
                file=out,
                flush=True,
            )

    with Subscriber(args.endpoint, topics=args.topics, curve_server_key=args.server_key, streams=args.stream) as sub:
        seen_gaps = 0

        def on_message(msg: Any) -> None:
            nonlocal seen_gaps
            gaps = sub.gaps
            for after, missing in gaps[seen_gaps:]:
                if args.json:
                    print(json.dumps({"topic": "gap", "after_seq": after, "missing": missing}), file=out, flush=True)
                else:
                    print(f"gap: {missing} message(s) lost after seq {after}", file=out, flush=True)
            seen_gaps = len(gaps)
            show(msg)

        with _stop_on_signals() as stop:
            why = _receive(args, sub, stop, on_message)
        print(_summary(sub, why, counts["rates"], counts["meta"]), file=sys.stderr if args.json else out, flush=True)
    return 0


def _next_free(path: Path) -> Path:
    """`path` with -2, -3, ... before its suffix: the first such name that does not exist."""
    k = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        if not candidate.exists():
            return candidate
        k += 1


class _Recording:
    """The recorder(s) of `vist-rt record`: a publisher restart with another cell count opens OUT-2.h5, ...;
    messages of a second stream stop the recording (a file holds one stream)."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        from vist_rt.runtime.record import Recorder

        self.tracks_gaps = not args.stream  # seq counts every stream's messages: one stream's jumps over the others'
        self._make = lambda path, force: Recorder(
            path, flush_every=args.flush_every, source=args.endpoint, overwrite=force, gaps=self.tracks_gaps
        )
        self.files = [out]
        self.totals = {"rates": 0, "meta": 0, "lost": 0, "gaps": 0, "refused": 0}
        self.stream: Any = _UNSEEN  # the stream being recorded (None: a run's one unnamed stream)
        self.rec = self._make(out, args.force)

    def add(self, msg: Any) -> None:
        from vist_rt.errors import VistError
        from vist_rt.runtime.record import CellCountError, RecordingError

        if self.stream is _UNSEEN:
            self.stream = msg.stream
        elif msg.stream != self.stream:
            names = ", ".join("unnamed" if name is None else repr(name) for name in (self.stream, msg.stream))
            raise VistError(
                f"messages of several streams ({names}): a recording holds one, pass --stream NAME "
                f"(stopped; {self.files[-1]} holds what came before)"
            )
        try:
            self.rec.add(msg)
        except RecordingError:
            raise  # writing failed: the run stops, the file holds everything up to its last write
        except CellCountError as exc:
            path = _next_free(self.files[0])
            print(f"vist-rt: {exc} (the publisher restarted with another model): going on in {path}", flush=True)
            self._close()
            self.rec = self._make(path, False)
            self.files.append(path)
            self.rec.add(msg)
        except VistError as exc:  # this message cannot be stored (e.g. an integer beyond int64): the rest can
            self.totals["refused"] += 1
            print(f"vist-rt: message not recorded: {exc}", file=sys.stderr, flush=True)

    def _close(self) -> None:
        rec = self.rec
        rec.close()
        self.totals["rates"] += rec.rates_count
        self.totals["meta"] += rec.meta_count
        self.totals["lost"] += rec.tracker.lost
        self.totals["gaps"] += len(rec.tracker.gaps)

    def close(self) -> str:
        """Close the current file; a summary of everything recorded."""
        self._close()
        t, cells = self.totals, self.rec.cells
        loss = (
            f"lost {t['lost']} in {t['gaps']} gaps" if self.tracks_gaps else "loss not tracked (one stream of several)"
        )
        return (
            f"recorded {t['rates']} rates and {t['meta']} meta messages"
            f"{f' ({cells} cells)' if cells and len(self.files) == 1 else ''} to {', '.join(map(str, self.files))}"
            f"; {loss}" + (f"; {t['refused']} refused" if t["refused"] else "")
        )


def run_record(args: argparse.Namespace) -> int:
    """Record the stream to HDF5: OUT is checked, then the endpoint, and only then is OUT created.

    Ctrl-C, SIGTERM and SIGHUP take what is in flight, flush and exit 0; a failed write stops with the
    file as it was at the last flush (exit 2).
    """
    from vist_rt.client import Subscriber
    from vist_rt.errors import VistError
    from vist_rt.runtime.record import check_writable

    if args.stream and len(set(args.stream)) > 1:
        raise VistError("record takes one --stream: a recording holds one stream (record each to its own file)")
    out = Path(args.out)
    check_writable(out, overwrite=args.force)
    with Subscriber(args.endpoint, curve_server_key=args.server_key, streams=args.stream) as sub:
        recording = _Recording(out, args)
        try:
            with _stop_on_signals() as stop:
                why = _receive(args, sub, stop, recording.add, on_idle=lambda: recording.rec.flush_due())
        finally:
            summary = recording.close()
        print(f"{summary}; stopped ({why})", flush=True)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    """Rebuild a recording from its journal (every message its killed process had added)."""
    from vist_rt.runtime.record import recover_recording

    got = recover_recording(args.path)
    torn = f"; a torn last record ({got['torn_bytes']} bytes) was left out" if got["torn_bytes"] else ""
    print(f"recovered {args.path}: {got['rates']} rates and {got['meta']} meta messages, {got['gaps']} gaps{torn}")
    return 0
