"""The parts a tick is made of: the feature stage's handoff of a group's batch (TokenBatches) and the sinks'
fan-out (every stream's rates sent before any other sink works)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from vist_rt.runtime.records import Features
from vist_rt.runtime.sinks import Sink, Sinks
from vist_rt.runtime.stream import TokenBatches


def _feat(seq: int, value: float, tokens: int = 4, dim: int = 3) -> Features:
    return Features(seq, seq, 0, 0.0, np.full((1, tokens, dim), value, np.float32), 0.0, 0.0, None)


def test_a_taken_batch_holds_each_rows_newest_features_and_zeros_for_rows_without() -> None:
    batches = TokenBatches(3, 4, 3)
    tokens, latest = batches.take()
    assert latest == [None, None, None] and not tokens.any()
    a0 = _feat(0, 1.0)
    batches.put({0: a0})
    tokens, latest = batches.take()
    assert latest == [a0, None, None]
    assert (tokens[0] == 1.0).all() and not tokens[1:].any()
    c0, a1 = _feat(1, 3.0), _feat(2, 2.0)
    batches.put({2: c0})
    batches.put({0: a1})  # two puts before a take: the newer batch has both rows
    tokens, latest = batches.take()
    assert latest == [a1, None, c0]
    assert (tokens[0] == 2.0).all() and not tokens[1].any() and (tokens[2] == 3.0).all()
    again, latest_again = batches.take()  # nothing newer: the same batch
    assert np.shares_memory(again, tokens) and latest_again == latest
    b0 = _feat(3, 5.0)
    for _ in range(4):  # the writer's buffers rotate: rows it did not compute are brought up to date each time
        batches.put({1: b0})
        tokens, latest = batches.take()
        assert latest == [a1, b0, c0]
        assert [float(tokens[r, 0, 0]) for r in range(3)] == [2.0, 5.0, 3.0]


def test_the_clocks_batch_never_changes_while_the_writer_goes_on() -> None:
    """The writer (feature thread) never writes into the batch the clock holds, however fast it puts."""
    batches = TokenBatches(2, 64, 16)
    stop = threading.Event()
    puts = [0]

    def writer() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            batches.put({seq % 2: _feat(seq, float(seq), 64, 16)})
            puts[0] += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        checked = 0
        while checked < 300 or puts[0] < 300:
            tokens, latest = batches.take()
            held = tokens.copy()
            for _ in range(50):  # while the clock "steps" on it
                pass
            assert np.array_equal(tokens, held)
            for row, feat in enumerate(latest):  # the batch is the features it says it is
                if feat is not None:
                    assert (tokens[row] == float(feat.seq)).all()
            checked += 1
    finally:
        stop.set()
        thread.join(timeout=5.0)
    assert not thread.is_alive()


class _Logged(Sink):
    def __init__(self, name: str, log: list[tuple[str, str | None]], stage: str = "") -> None:
        self.name, self.log, self.stage = name, log, stage

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> dict[str, Any]:
        self.log.append((self.name, stream))
        return {**header, "seen_by": [*header.get("seen_by", []), self.name]}


def test_every_stream_is_sent_before_the_other_sinks_and_each_gets_the_header_as_sent() -> None:
    log: list[tuple[str, str | None]] = []
    sinks = Sinks([_Logged("pub", log, "publish"), _Logged("rec", log, "record"), _Logged("hist", log)])
    rates = np.zeros(3, np.float32)
    sent = [sinks.send(name, {"tick": 0}, rates, 0.0) for name in ("a", "b")]
    assert log == [("pub", "a"), ("pub", "b")]
    assert all(d.header["seen_by"] == ["pub"] and set(d.ms) == {"publish"} for d in sent)
    ms = [sinks.follow(name, d, rates, 0.0) for name, d in zip(("a", "b"), sent)]
    assert log[2:] == [("rec", "a"), ("hist", "a"), ("rec", "b"), ("hist", "b")]
    assert all(set(m) == {"record"} for m in ms)  # an untimed sink reports nothing
