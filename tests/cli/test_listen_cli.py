"""`vist-rt listen` / `vist-rt record` against a publisher in a thread (random loopback ports, timeouts)."""

from __future__ import annotations

import _thread
import argparse
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from tests.runtime.test_wire import make_header
from vist_rt.cli import listen
from vist_rt.errors import VistError
from vist_rt.runtime.publish import Publisher
from vist_rt.runtime.record import read_recording
from vist_rt.runtime.wire import encode_meta


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vist-rt")
    sub = parser.add_subparsers(dest="command", required=True)
    listen.register(sub)
    return parser.parse_args(argv)


class PubThread:
    """Publishes rates (and a meta every 10th message) every `period` s until stopped or `duration` s passed."""

    def __init__(self, duration: float = 10.0, period: float = 0.002) -> None:
        self.pub = Publisher("tcp://127.0.0.1:*")
        self.endpoint = self.pub.endpoint
        self.stop_event = threading.Event()
        self.duration, self.period = duration, period
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end = time.monotonic() + self.duration
        tick = 0
        while not self.stop_event.is_set() and time.monotonic() < end:
            if tick % 10 == 0:
                self.pub.publish_meta({"model": "m", "cell_ids": ["a", "b", "c"], "fps": 30.0, "units": "Hz"})
            self.pub.publish_rates(make_header(tick=tick, stale=tick % 3 == 0), np.full(3, tick, np.float32))
            tick += 1
            time.sleep(self.period)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.pub.close()


@pytest.fixture
def publisher() -> Iterator[PubThread]:
    pt = PubThread()
    yield pt
    pt.stop()


def test_listen_count(publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert listen.run_listen(parse("listen", publisher.endpoint, "--count", "25", "--timeout", "5")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    body, summary = lines[:-1], lines[-1]
    assert len(body) == 25
    seqs = [int(line.split()[1]) for line in body]
    assert seqs == list(range(seqs[0], seqs[0] + 25))
    rates_lines = [line for line in body if "tick" in line]
    assert rates_lines and "e2e    9.50 ms" in rates_lines[0] and "n 3" in rates_lines[0]
    assert any("meta  model m  cells 3  fps 30.0" in line for line in body) or len(rates_lines) == 25
    assert summary.startswith("stopped (25 messages)") and "lost 0 in 0 gaps" in summary


def test_listen_json_rates_only(publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("listen", publisher.endpoint, "--topics", "rates", "--count", "5", "--json", "--timeout", "5")
    assert listen.run_listen(args) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert len(records) == 5 and all(r["topic"] == "rates" for r in records)
    assert all(r["rates"] == [r["header"]["tick"]] * 3 for r in records)
    assert "stopped (5 messages)" in captured.err and "gaps" not in captured.err


def test_listen_timeout_after_publisher_stops(capsys: pytest.CaptureFixture[str]) -> None:
    pt = PubThread(duration=0.3)
    try:
        t0 = time.monotonic()
        assert listen.run_listen(parse("listen", pt.endpoint, "--timeout", "0.4")) == 0
        assert time.monotonic() - t0 < 5.0
    finally:
        pt.stop()
    out = capsys.readouterr().out
    assert "stopped (no message for 0.4 s)" in out


def test_listen_timeout_with_no_publisher(capsys: pytest.CaptureFixture[str]) -> None:
    assert listen.run_listen(parse("listen", "tcp://127.0.0.1:1", "--timeout", "0.2")) == 0
    assert "stopped (no message for 0.2 s): 0 rates, 0 meta messages" in capsys.readouterr().out


def test_listen_reports_gaps_and_bad_messages(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def run() -> None:
        seq = 0
        while not stop.is_set():
            if seq % 7 != 3:  # seq 3, 10, 17, ... never sent
                pub.send_multipart(encode_meta({"seq": seq, "model": "m"}))
            if seq % 11 == 0:
                pub.send_multipart([b"meta", b"{broken"])
            seq += 1
            time.sleep(0.002)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        assert listen.run_listen(parse("listen", f"tcp://127.0.0.1:{port}", "--count", "30", "--timeout", "5")) == 0
    finally:
        stop.set()
        t.join(5)
        pub.close(0)
    captured = capsys.readouterr()
    assert "gap: 1 message(s) lost after seq" in captured.out
    assert "bad message skipped: header is not UTF-8 JSON" in captured.err
    assert "lost" in captured.out.splitlines()[-1]


def test_listen_ctrl_c_exits_0_with_summary(publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        assert listen.run_listen(parse("listen", publisher.endpoint, "--timeout", "5")) == 0
    finally:
        timer.cancel()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("stopped (interrupted)")


def test_record_count(publisher: PubThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.h5"
    assert listen.run_record(parse("record", publisher.endpoint, str(out), "--count", "40", "--timeout", "5")) == 0
    data = read_recording(out)
    assert len(data["seq"]) + len(data["meta"]) == 40 and data["rates"].shape[1] == 3
    assert data["gaps"].shape == (0, 2) and data["attrs"]["source"] == publisher.endpoint
    np.testing.assert_array_equal(data["rates"][:, 0], data["tick"].astype(np.float32))
    delivery = data["t_recv_ns"] - data["t_pub_ns"]  # each row's delivery latency, as received
    assert (delivery > 0).all() and (delivery < 5e9).all()
    summary = capsys.readouterr().out
    assert "meta messages (3 cells) to" in summary and "stopped (40 messages)" in summary


def test_record_sigterm_flushes_and_exits_0(publisher: PubThread, tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert listen.run_record(parse("record", publisher.endpoint, str(out), "--timeout", "5")) == 0
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGTERM) is old
    data = read_recording(out)
    assert len(data["seq"]) > 0 and len(data["headers"]) == len(data["seq"])


def test_record_unwritable_out_fails_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="no directory") as info:
        listen.run_record(parse("record", "tcp://127.0.0.1:1", str(tmp_path / "nope" / "x.h5"), "--timeout", "1"))
    assert "\n" not in str(info.value)
    (tmp_path / "old.h5").write_bytes(b"x")
    with pytest.raises(VistError, match="exists"):
        listen.run_record(parse("record", "tcp://127.0.0.1:1", str(tmp_path / "old.h5"), "--timeout", "1"))
    args = parse("record", "tcp://127.0.0.1:1", str(tmp_path / "old.h5"), "--timeout", "0.1", "--force")
    assert listen.run_record(args) == 0


def test_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ("listen", "--count", "0"),
        ("listen", "--timeout", "-1"),
        ("listen", "--timeout", "nan"),
        ("listen", "--topics", "video"),
        ("record", "tcp://127.0.0.1:1"),
    ):
        with pytest.raises(SystemExit) as info:
            parse(*argv)
        assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_listen_bad_endpoint_is_a_vist_error() -> None:
    with pytest.raises(VistError, match="cannot connect"):
        listen.run_listen(parse("listen", "nowhere", "--timeout", "0.1"))


class _Pub:
    """A bare publisher socket on a random loopback port, for hand-made message sequences."""

    def __init__(self) -> None:
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def send_in_thread(
        self, messages: list[list[bytes]], stop: threading.Event, period: float = 0.002
    ) -> threading.Thread:
        """Send `messages` round-robin until `stop`; join the thread before closing the socket."""

        def run() -> None:
            k = 0
            while not stop.is_set():
                self.sock.send_multipart(messages[k % len(messages)])
                k += 1
                time.sleep(period)

        sender = threading.Thread(target=run, daemon=True)
        sender.start()
        return sender


def _rates(seq: int, n: int, **extra: object) -> list[bytes]:
    from vist_rt.runtime.wire import encode_rates

    return [bytes(p) for p in encode_rates(make_header(seq=seq, tick=seq, **extra), np.full(n, seq, np.float32))]


@pytest.mark.parametrize(("sig", "why"), [(signal.SIGINT, "interrupted"), (signal.SIGHUP, "SIGHUP")])
def test_record_ctrl_c_and_sighup_flush_and_exit_0(
    publisher: PubThread, tmp_path: Path, capsys: pytest.CaptureFixture[str], sig: int, why: str
) -> None:
    out = tmp_path / "rec.h5"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), sig))
    timer.start()
    old = signal.getsignal(sig)
    try:
        assert listen.run_record(parse("record", publisher.endpoint, str(out), "--timeout", "5")) == 0
    finally:
        timer.cancel()
    assert signal.getsignal(sig) is old  # the handler is put back
    data = read_recording(out)
    assert len(data["seq"]) > 0 and data["cut_rows"] == 0 and len(data["headers"]) == len(data["rates"])
    assert f"stopped ({why})" in capsys.readouterr().out


def test_record_bad_endpoint_creates_no_file_and_keeps_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    with pytest.raises(VistError):
        listen.run_record(parse("record", "tcp://127.0.0.1", str(out), "--timeout", "1"))
    assert not out.exists()  # a retry with the endpoint fixed is not refused with "exists"
    out.write_bytes(b"an older recording")
    with pytest.raises(VistError):
        listen.run_record(parse("record", "tcp://127.0.0.1", str(out), "--timeout", "1", "--force"))
    assert out.read_bytes() == b"an older recording"


def test_record_goes_on_in_a_new_file_when_the_cell_count_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub, stop = _Pub(), threading.Event()
    # a publisher restart with another model: seq starts again, 4 cells instead of 3
    sender = pub.send_in_thread([_rates(s, 3) for s in range(10)] + [_rates(s, 4) for s in range(10)], stop)
    out = tmp_path / "rec.h5"
    (tmp_path / "rec-2.h5").write_bytes(b"taken")  # the next free name is used
    try:
        assert listen.run_record(parse("record", pub.endpoint, str(out), "--count", "30", "--timeout", "5")) == 0
    finally:
        stop.set()
        sender.join(5)
        pub.sock.close(0)
    # the publisher cycles 3 -> 4 -> 3 ... cells: every change opens the next free name
    rolled = [p for p in tmp_path.glob("rec-*.h5") if p.name != "rec-2.h5"]
    names = [out, *sorted(rolled, key=lambda p: int(p.stem.split("-")[1]))]
    assert [p.name for p in names[:2]] == ["rec.h5", "rec-3.h5"]
    parts = [read_recording(p) for p in names]
    assert [d["rates"].shape[1] for d in parts] == [3, 4, 3, 4, 3][: len(parts)]
    assert sum(len(d["seq"]) for d in parts) == 30 and parts[1]["seq"][0] == 0
    assert (tmp_path / "rec-2.h5").read_bytes() == b"taken"
    text = capsys.readouterr().out
    assert "going on in" in text and "rec-3.h5" in text and "recorded 30 rates" in text


def test_timeout_fires_when_every_message_is_malformed(capsys: pytest.CaptureFixture[str]) -> None:
    pub, stop = _Pub(), threading.Event()
    sender = pub.send_in_thread([[b"meta", b"{broken"]], stop, period=0.01)
    try:
        t0 = time.monotonic()
        assert listen.run_listen(parse("listen", pub.endpoint, "--timeout", "0.5")) == 0
        assert time.monotonic() - t0 < 5.0
    finally:
        stop.set()
        sender.join(5)
        pub.sock.close(0)
    captured = capsys.readouterr()
    assert "stopped (no message for 0.5 s)" in captured.out and "bad message skipped" in captured.err


def test_listen_json_writes_non_finite_rates_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    from vist_rt.runtime.wire import encode_rates

    pub, stop = _Pub(), threading.Event()
    msg = [bytes(p) for p in encode_rates(make_header(), np.array([np.nan, np.inf, 1.0], np.float32))]
    sender = pub.send_in_thread([msg], stop)
    try:
        assert listen.run_listen(parse("listen", pub.endpoint, "--count", "2", "--json", "--timeout", "5")) == 0
    finally:
        stop.set()
        sender.join(5)
        pub.sock.close(0)
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}")) for line in lines]
    assert [r["rates"] for r in records] == [[None, None, 1.0]] * 2


def test_a_stop_takes_the_messages_already_received() -> None:
    class Sub:
        def __init__(self) -> None:
            self.queue = list(range(5))

        def recv(self, timeout_ms: int) -> int | None:
            return self.queue.pop(0) if self.queue else None

    stop = threading.Event()
    stop.set()  # the signal came before the loop could take anything
    got: list[int] = []
    why = listen._receive(parse("listen", "tcp://127.0.0.1:1"), Sub(), stop, got.append)
    assert got == [0, 1, 2, 3, 4] and why == "terminated"


def test_record_skips_a_message_it_cannot_store_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub, stop = _Pub(), threading.Event()
    sender = pub.send_in_thread([_rates(1, 3), _rates(2, 3, t_frame_ns=2**64 - 1), _rates(3, 3)], stop)
    out = tmp_path / "rec.h5"
    try:
        assert listen.run_record(parse("record", pub.endpoint, str(out), "--count", "12", "--timeout", "5")) == 0
    finally:
        stop.set()
        sender.join(5)
        pub.sock.close(0)
    data = read_recording(out)
    assert 2 not in data["seq"].tolist() and {1, 3} <= set(data["seq"].tolist())
    captured = capsys.readouterr()
    assert "message not recorded" in captured.err and "does not fit a 64-bit integer" in captured.err
    assert "refused" in captured.out


class StreamsPubThread(PubThread):
    """Like PubThread, with two named streams of 3 and 2 cells (each: a meta every 10th tick, then rates)."""

    def _run(self) -> None:
        end = time.monotonic() + self.duration
        tick = 0
        while not self.stop_event.is_set() and time.monotonic() < end:
            for name, cells in (("cam", 3), ("cam2", 2)):  # "cam" is a prefix of "cam2" on the wire
                if tick % 10 == 0:
                    self.pub.publish_meta({"model": name, "cell_ids": list("abc"[:cells]), "fps": 30.0}, stream=name)
                self.pub.publish_rates(make_header(tick=tick), np.full(cells, tick, np.float32), stream=name)
            tick += 1
            time.sleep(self.period)


@pytest.fixture
def streams_publisher() -> Iterator[PubThread]:
    pt = StreamsPubThread()
    yield pt
    pt.stop()


def test_listen_one_stream_json(streams_publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("listen", streams_publisher.endpoint, "--stream", "cam", "--count", "12", "--json", "--timeout", "5")
    assert listen.run_listen(args) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(records) == 12 and {r["stream"] for r in records} == {"cam"}
    assert all(r["header"]["stream"] == "cam" and list(r)[:2] == ["topic", "stream"] for r in records)
    assert all(len(r["rates"]) == 3 for r in records if r["topic"] == "rates")


def test_listen_every_stream_says_which(streams_publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert listen.run_listen(parse("listen", streams_publisher.endpoint, "--count", "30", "--timeout", "5")) == 0
    body = capsys.readouterr().out.strip().splitlines()[:-1]
    assert len(body) == 30 and all(line.endswith(("stream cam", "stream cam2")) for line in body)
    assert {line.rsplit(" ", 1)[1] for line in body} == {"cam", "cam2"}


def test_listen_unnamed_stream_has_no_stream_key(publisher: PubThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert listen.run_listen(parse("listen", publisher.endpoint, "--count", "3", "--json", "--timeout", "5")) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(records) == 3 and not any("stream" in r or "stream" in r["header"] for r in records)


def test_record_one_stream(streams_publisher: PubThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.h5"
    args = parse("record", streams_publisher.endpoint, str(out), "--stream", "cam2", "--count", "20", "--timeout", "5")
    assert listen.run_record(args) == 0
    data = read_recording(out)
    assert data["rates"].shape[1] == 2 and len(data["seq"]) + len(data["meta"]) == 20
    assert all(h["stream"] == "cam2" for h in data["headers"]) and all(m["stream"] == "cam2" for m in data["meta"])
    assert data["gaps"].shape == (0, 2) and data["attrs"]["lost"] == 0  # seq jumps over the other stream's
    assert "; loss not tracked (one stream of several)" in capsys.readouterr().out


def test_record_refuses_several_streams(streams_publisher: PubThread, tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    with pytest.raises(VistError, match=r"several streams \(('cam', 'cam2'|'cam2', 'cam')\).*pass --stream") as info:
        listen.run_record(parse("record", streams_publisher.endpoint, str(out), "--timeout", "5"))
    assert "\n" not in str(info.value) and str(out) in str(info.value)
    data = read_recording(out)  # closed cleanly, with what came before: one stream's
    assert len({h["stream"] for h in data["headers"]} | {m["stream"] for m in data["meta"]}) == 1


def test_record_takes_one_stream_option(tmp_path: Path) -> None:
    out = tmp_path / "rec.h5"
    with pytest.raises(VistError, match="record takes one --stream"):
        listen.run_record(parse("record", "tcp://127.0.0.1:1", str(out), "--stream", "a", "--stream", "b"))
    assert not out.exists()


def test_stream_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (("listen", "--stream", "a b"), ("listen", "--stream", ""), ("record", "e", "o.h5", "--stream", "x/y")):
        with pytest.raises(SystemExit) as info:
            parse(*argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "bad stream name" in err and "Traceback" not in err
    assert parse("listen", "--stream", "a", "--stream", "b").stream == ["a", "b"]
    assert parse("listen").stream is None
