"""Where each tick's rates go: the ZeroMQ publisher first, then the recorder, the LSL outlet, the dashboard's
history; all behind one interface (`Sink`), fanned out by `Sinks`, which times each sink."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vist_rt.runtime.records import Delivery
from vist_rt.runtime.stats import RateHistory
from vist_rt.runtime.wire import Message


class Sink:
    """Receives each stream's rates and meta messages. `stream` is the stream's name (None: the one stream of a
    one-stream run). `stage`: the latency stage its time is reported under ("" = not timed)."""

    stage = ""

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> dict[str, Any] | None:
        """Take one tick's rates [C] (`got`: perf clock when the frame was taken); may return the header as passed
        on to the sinks after it (the publisher's, as sent)."""
        return None

    def meta(self, stream: str | None, header: dict[str, Any]) -> dict[str, Any] | None:
        """Take one meta message; may return the header as passed on (as sent)."""
        return None

    def periodic(self) -> None:
        """Called after each tick's sends and while paused (timed flushes)."""


class PublisherSink(Sink):
    """The ZeroMQ PUB socket (wire format v1): named streams on `rates/<name>`, `meta/<name>`."""

    stage = "publish"

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> dict[str, Any]:
        self.publisher.publish_rates(header, rates, stream=stream)
        return self.publisher.last_rates_header  # a new dict per message

    def meta(self, stream: str | None, header: dict[str, Any]) -> dict[str, Any]:
        self.publisher.publish_meta(header, stream=stream)  # the publisher keeps its own copy
        return self.publisher.last_meta_header


class RecorderSink(Sink):
    """HDF5 recordings (one per stream) of everything published, as sent."""

    stage = "record"

    def __init__(self, recorders: Mapping[str | None, Any]) -> None:
        self.recorders = dict(recorders)

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> None:
        self.recorders[stream].add(Message("rates", header, rates))

    def meta(self, stream: str | None, header: dict[str, Any]) -> None:
        self.recorders[stream].add(Message("meta", header, None))

    def periodic(self) -> None:
        for recorder in self.recorders.values():
            recorder.flush_due()  # rows never wait on disk longer than its interval (e.g. while paused)

    @property
    def rates_count(self) -> int:
        """Rates rows recorded, all streams."""
        return sum(r.rates_count for r in self.recorders.values())


class LslSink(Sink):
    """LSL outlets (one per stream), each sample stamped with its frame's capture time."""

    stage = "lsl"

    def __init__(self, outlets: Mapping[str | None, Any]) -> None:
        self.outlets = dict(outlets)

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> None:
        self.outlets[stream].push(rates, time.perf_counter() - got)


class HistorySink(Sink):
    """The recent rates of each stream, for the dashboard."""

    def __init__(self, histories: Mapping[str | None, RateHistory]) -> None:
        self.histories = dict(histories)

    def rates(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> None:
        self.histories[stream].push(rates)


class Sinks:
    """Fan-out: the first sink (the publisher) sends, the others get the header as it was sent. A tick sends every
    stream's rates first (`send`), then gives them to the other sinks (`follow`): no stream's rates wait on
    another stream's recording."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise ValueError("Sinks needs at least the publisher")
        self.sinks = tuple(sinks)

    def send(self, stream: str | None, header: dict[str, Any], rates: np.ndarray, got: float) -> Delivery:
        """One stream's rates [C] to the first sink only (the send); its time in the Delivery."""
        t0 = time.perf_counter()
        first = self.sinks[0]
        header = first.rates(stream, header, rates, got) or header
        sent = time.perf_counter()
        return Delivery(header, sent, {first.stage: (sent - t0) * 1e3} if first.stage else {})

    def follow(self, stream: str | None, delivery: Delivery, rates: np.ndarray, got: float) -> dict[str, float]:
        """The sent rates [C] to every other sink, in order -> each timed sink's ms."""
        ms: dict[str, float] = {}
        header = delivery.header
        for sink in self.sinks[1:]:
            t0 = time.perf_counter()
            header = sink.rates(stream, header, rates, got) or header
            if sink.stage:
                ms[sink.stage] = (time.perf_counter() - t0) * 1e3
        return ms

    def meta(self, stream: str | None, header: dict[str, Any]) -> dict[str, Any]:
        """One meta message to every sink; the header as sent."""
        for sink in self.sinks:
            header = sink.meta(stream, header) or header
        return header

    def periodic(self) -> None:
        """Every sink's periodic work."""
        for sink in self.sinks:
            sink.periodic()
