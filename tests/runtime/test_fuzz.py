"""Standing fuzz: thousands of malformed control requests and frames, kinds drawn with a fixed seed, against
running pipelines (loopback, random ports, bounded in count and time). Every request is answered, the run keeps
ticking, and nothing malformed is published or recorded."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zmq

from tests.runtime.helpers import free_port, wait_for
from tests.runtime.run_thread import RunThread, run_config, running
from vist_rt.bench.fuzz import REQUEST_KINDS, malformed_frame, malformed_request
from vist_rt.runtime.control import MAX_ERROR_CHARS
from vist_rt.runtime.frames import encode_frame
from vist_rt.runtime.record import read_recording
from vist_rt.runtime.wire import decode

SEED = 20261204


class Rig:
    """One REQ socket that must get exactly one reply per request."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def ask(self, parts: list[bytes]) -> dict:
        self.sock.send_multipart(parts)
        assert self.sock.poll(10_000), f"no reply to {parts[0][:60]!r}"
        reply = self.sock.recv_multipart()
        return {**json.loads(reply[0]), "_parts": len(reply)}


@contextmanager
def published(ctx: zmq.Context, endpoint: str) -> Iterator[list[list[bytes]]]:
    """Everything published on `endpoint` while the block runs (and shortly after), collected in a thread."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    got: list[list[bytes]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() or sub.poll(200):
            if sub.poll(50):
                got.append(sub.recv_multipart())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        stop.set()
        thread.join(10.0)
        sub.close()


def check_stream(messages: list[list[bytes]]) -> list[dict]:
    """Every message published is wire format v1, seq without a gap; the rates headers."""
    decoded = [decode(m) for m in messages]
    seqs = [m.seq for m in decoded]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    return [m.header for m in decoded if m.topic == "rates"]


def test_malformed_control_requests_on_a_live_run(tmp_path: Path, run_checkpoint: Path, ctx: zmq.Context) -> None:
    rng = np.random.default_rng(SEED)
    cfg = run_config(run_checkpoint, source="synthetic", width=80, height=60, record=str(tmp_path / "c.h5"),
                     meta_every_s=0.5)  # fmt: skip
    kinds: Counter[str] = Counter()
    with published(ctx, cfg.pub) as got:
        with running(cfg, until_ticks=3) as run:
            rig = Rig(ctx, cfg.control)
            start, ticks, missed = time.perf_counter(), run.ticks(), run.runtime.stats.missed
            for i in range(2000):
                kind, parts = malformed_request(rng)
                kinds[kind] += 1
                reply = rig.ask(parts)
                assert reply["ok"] is False and reply["_parts"] == 1, (kind, reply)
                assert "\n" not in reply["error"] and len(reply["error"]) <= MAX_ERROR_CHARS, kind
                if i % 250 == 0:
                    assert rig.ask([b'{"cmd": "status"}'])["ok"] is True
            assert set(kinds) == set(REQUEST_KINDS)  # every kind was sent
            elapsed = time.perf_counter() - start
            assert run.ticks() - ticks >= int(elapsed * 30) - 2  # the clock kept its rate meanwhile
            assert run.runtime.stats.missed - missed <= 2
        time.sleep(0.2)
    rates = check_stream(got)
    rec = read_recording(tmp_path / "c.h5")
    assert len(rec["rates"]) == run.summary["ticks"]  # every tick recorded
    assert {h["seq"] for h in rates} <= set(rec["seq"].tolist())  # what was published is in the file


def test_malformed_predicts_in_lockstep(tmp_path: Path, run_checkpoint: Path, ctx: zmq.Context) -> None:
    rng = np.random.default_rng(SEED + 1)
    cfg = run_config(run_checkpoint, source=None, lockstep=True, record=str(tmp_path / "p.h5"))
    good: list[int] = []
    frame = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    with published(ctx, cfg.pub) as got:
        with running(cfg):
            rig = Rig(ctx, cfg.control)
            assert wait_for(lambda: (rig.ask([b'{"cmd": "meta"}']), len(got) > 0)[1], timeout=10.0)  # connected
            for i in range(1500):
                if rng.random() < 0.2:
                    reply = rig.ask(encode_frame(frame, index=10_000 + i, extra={"cmd": "predict"}))
                    assert reply["ok"] is True and reply["tick"] == len(good) and reply["_parts"] == 2
                    good.append(10_000 + i)
                else:
                    kind, parts = malformed_request(rng)
                    reply = rig.ask(parts)
                    assert reply["ok"] is False and reply["_parts"] == 1, (kind, reply)
        time.sleep(0.2)
    rates = check_stream(got)
    assert [h["frame"] for h in rates] == good and [h["tick"] for h in rates] == list(range(len(good)))
    rec = read_recording(tmp_path / "p.h5")
    assert rec["frame"].tolist() == good and rec["tick"].tolist() == list(range(len(good)))


def test_malformed_frames_on_a_zmq_source(tmp_path: Path, run_checkpoint: Path, ctx: zmq.Context) -> None:
    rng = np.random.default_rng(SEED + 2)
    port = free_port()
    cfg = run_config(run_checkpoint, source=f"zmq:tcp://127.0.0.1:{port}", record=str(tmp_path / "z.h5"))
    image = np.random.default_rng(1).integers(0, 256, (24, 32), dtype=np.uint8)
    sent_bad = 0
    run = RunThread(cfg)
    with published(ctx, cfg.pub) as got:
        run.thread.start()
        try:
            with ctx.socket(zmq.PUSH) as push:
                push.setsockopt(zmq.LINGER, 0)
                push.connect(f"tcp://127.0.0.1:{port}")
                push.send_multipart(encode_frame(image, index=0))  # the stream's shape, and its first features
                assert wait_for(lambda: run.ticks() >= 3, timeout=30.0)
                for i in range(3000):
                    if i % 10 == 0:
                        push.send_multipart(encode_frame(image, index=1 + i // 10, t_ns=i))
                    else:
                        push.send_multipart(malformed_frame(rng, image.shape)[1])
                        sent_bad += 1
                    if i % 100 == 0:
                        time.sleep(0.01)
                ticks = run.ticks()
                assert wait_for(lambda: run.runtime.capture.errors >= sent_bad, timeout=20.0)
                assert wait_for(lambda: run.ticks() > ticks + 10, timeout=10.0)  # still ticking after the flood
            assert run.thread.is_alive() and run.runtime.capture.failure is None
        finally:
            run.runtime.stop()
            summary = run.join(30.0)
    assert summary["source_errors"] == sent_bad
    rates = check_stream(got)
    good = set(range(0, 301))
    assert {h["frame"] for h in rates} <= good
    rec = read_recording(tmp_path / "z.h5")
    assert set(rec["frame"].tolist()) <= good and len(rec["rates"]) == summary["ticks"]
    assert (((rec["t_frame_ns"] >= 0) & (rec["t_frame_ns"] < 3000)) | (rec["frame"] == 0)).all()
