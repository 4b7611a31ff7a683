"""`vist-rt listen` (print the stream) and `vist-rt record` (write it to HDF5)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from vist_rt.cli.options import int_at_least

DEFAULT_PUB = "tcp://127.0.0.1:5556"
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int_at_least(1), metavar="N", help="stop after N messages (default: no limit)")
    p.add_argument("--timeout", type=_positive_seconds, metavar="S", help="stop when no message arrives for S seconds")
    p.add_argument("--server-key", metavar="KEY", help="CurveZMQ: the publisher's public key (file or Z85 text)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `listen` and `record`."""
    p = sub.add_parser("listen", help="print the messages of a vist-rt publisher")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_PUB, help=f"publisher endpoint (default {DEFAULT_PUB})")
    p.add_argument("--topics", type=_topics, default=("rates", "meta"), help="rates,meta (default: both)")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line (rates included)")
    p.set_defaults(func=run_listen)

    r = sub.add_parser("record", help="record a vist-rt stream to HDF5, losslessly")
    r.add_argument("endpoint", help="publisher endpoint, e.g. tcp://127.0.0.1:5556")
    r.add_argument("out", help="output file (.h5)")
    _common(r)
    r.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    r.add_argument("--flush-every", type=int_at_least(1), default=100, metavar="N", help="messages per flush (100)")
    r.set_defaults(func=run_record)


@contextmanager
def _stop_on_sigterm() -> Iterator[threading.Event]:
    """An event set by SIGTERM (main thread only; elsewhere it is never set by a signal)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, old)


def _receive(args: argparse.Namespace, sub: Any, stop: threading.Event, on_message: Callable[[Any], None]) -> str:
    """Receive until --count, --timeout, SIGTERM or Ctrl-C; returns why it stopped."""
    from vist_rt.runtime.wire import WireError

    count = 0
    timeout_ms = None if args.timeout is None else args.timeout * 1000.0
    last = time.monotonic()
    try:
        while not stop.is_set():
            if args.count is not None and count >= args.count:
                return f"{count} messages"
            try:
                msg = sub.recv(_SLICE_MS)
            except WireError as exc:
                print(f"vist-rt: bad message skipped: {exc}", file=sys.stderr)
                last = time.monotonic()
                continue
            if msg is None:
                if timeout_ms is not None and (time.monotonic() - last) * 1000.0 >= timeout_ms:
                    return f"no message for {args.timeout:g} s"
                continue
            last = time.monotonic()
            count += 1
            on_message(msg)
        return "terminated"
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
            record = {"topic": msg.topic, "header": h}
            if msg.rates is not None:
                record["rates"] = msg.rates.tolist()
            print(json.dumps(record, separators=(",", ":")), file=out, flush=True)
            return
        if msg.topic == "rates":
            e2e = (h.get("lat_ms") or {}).get("e2e")
            e2e_text = f"{e2e:7.2f} ms" if isinstance(e2e, (int, float)) else "      - ms"
            print(
                f"seq {h['seq']:>8}  tick {h['tick']:>8}  frame {h['frame']:>8}  "
                f"stale {'yes' if h['stale'] else 'no ':3}  e2e {e2e_text}  mean {_mean(msg.rates):.4g}  n {h['n']}",
                file=out,
                flush=True,
            )
        else:
            ids = h.get("cell_ids")
            print(
                f"seq {h['seq']:>8}  meta  model {h.get('model', '?')}  cells {len(ids) if ids else '?'}  "
                f"fps {h.get('fps', '?')}  units {h.get('units', '?')}",
                file=out,
                flush=True,
            )

    with Subscriber(args.endpoint, topics=args.topics, curve_server_key=args.server_key) as sub:
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

        with _stop_on_sigterm() as stop:
            why = _receive(args, sub, stop, on_message)
        print(_summary(sub, why, counts["rates"], counts["meta"]), file=sys.stderr if args.json else out, flush=True)
    return 0


def run_record(args: argparse.Namespace) -> int:
    """Record the stream to HDF5 (checked writable before connecting); Ctrl-C / SIGTERM flush and exit 0."""
    from vist_rt.client import Subscriber
    from vist_rt.runtime.record import Recorder

    with Recorder(
        args.out, flush_every=getattr(args, "flush_every", 100), source=args.endpoint, overwrite=args.force
    ) as rec:
        with Subscriber(args.endpoint, curve_server_key=args.server_key) as sub, _stop_on_sigterm() as stop:
            why = _receive(args, sub, stop, rec.add)
        rec.flush()
        print(
            f"recorded {rec.rates_count} rates and {rec.meta_count} meta messages"
            f"{f' ({rec.cells} cells)' if rec.cells else ''} to {args.out}; stopped ({why}); "
            f"lost {rec.tracker.lost} in {len(rec.tracker.gaps)} gaps",
            flush=True,
        )
    return 0
