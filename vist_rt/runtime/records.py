"""Typed records that travel between the run-time's parts (feature stage -> model clock -> sinks)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Features(NamedTuple):
    """One frame of one stream through the feature stage."""

    seq: int  # the capture's sequence number (a source's index may repeat)
    index: int  # the source's frame index
    t_ns: int  # the frame's time stamp (media time for files, wall clock or the rig's clock for live sources)
    got: float  # perf clock when the capture thread took the frame (latency is measured from there)
    tokens: np.ndarray  # [1, T, D] float32
    pre_ms: float  # preprocessing (of the whole batch it was computed in)
    vit_ms: float  # the extractor (of the whole batch)
    wait_ms: float | None  # from capture to the feature stage's start; None when unknown


class Batch(NamedTuple):
    """A group's input to one model tick."""

    latest: list[Features | None]  # each stream's newest features (None: none yet)
    tokens: np.ndarray | None  # [B, T, D] the rows stepped (B > 1); None for one stream (its features' tokens)


class Delivery(NamedTuple):
    """What the sinks did with one rates message."""

    header: dict[str, Any]  # as sent (the publisher adds v, seq, n, t_pub_ns)
    sent: float  # perf clock when the publisher handed it to ZeroMQ
    ms: dict[str, float]  # each timed sink's time, by latency stage ("publish", "record", ...)


class Sent(NamedTuple):
    """One stream's rates of a tick, sent; what the sinks after the publisher still get."""

    stream: str | None  # the stream's name (None: the one stream of a one-stream run)
    delivery: Delivery
    rates: np.ndarray  # [C] float32, as sent
    got: float  # perf clock when the frame was taken
    lat: dict[str, float | None]  # the stages before the send (ms; None: not measured for this tick)
    stale: bool


class Ticked(NamedTuple):
    """One model tick of every group: when its last rates went out, and the temporal steps' time."""

    sent: float  # perf clock of the last send (the tick's start when nothing was sent)
    temporal_ms: float  # all groups' temporal steps
    sent_cpu: float  # the clock thread's CPU time (time.thread_time) at `sent`, give or take the loop's bookkeeping
    temporal_cpu_ms: float  # the clock thread's CPU time in the temporal steps
