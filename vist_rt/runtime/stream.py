"""Streams and groups: a stream is one source -> capture ring -> newest features; a group is the streams that
share a checkpoint, stepped as one batch (the extractor over their new frames, the temporal model with B =
streams, each with its own RF set and state)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vist_rt.errors import VistError, error_line
from vist_rt.runtime import sources
from vist_rt.runtime.capture import CaptureThread
from vist_rt.runtime.config import RunConfig, StreamConfig
from vist_rt.runtime.engine import Engine
from vist_rt.runtime.records import Batch, Features
from vist_rt.runtime.sources import Frame, Source
from vist_rt.runtime.stats import RateHistory, RunStats


def source_for(cfg: RunConfig, stream: StreamConfig | None = None, *, check: bool) -> Source:
    """The (unopened) source of `stream` (None: the run's one source), suited to the run's mode; `check`: also open
    and close it once, so that what is wrong with it (no such file, not a video, a port in use, ...) is said
    before any model loads."""
    spec = str(cfg.source) if stream is None else stream.source
    fps, width, height = (cfg.fps, cfg.width, cfg.height) if stream is None else (stream.fps, stream.width,
                                                                                    stream.height)  # fmt: skip
    where = "" if stream is None else f"stream {stream.name}: "
    try:
        source = sources.make_source(spec, fps=fps, width=width, height=height, allow_remote=cfg.allow_remote)
        if check:
            source.check()
    except VistError as exc:
        raise VistError(f"{where}{exc}") from None
    if cfg.replay and source.live:
        hint = " (the synthetic movie as a file: synthetic:replay)" if spec.startswith("synthetic") else ""
        raise VistError(f"{where}--replay needs a file source (video:PATH, images:DIR){hint}, not {spec}")
    if not cfg.replay and not source.live:
        raise VistError(f"{where}{spec} is a file: play it with --replay (add --realtime to pace it)")
    return source


def frame_got(frame: Frame) -> float:
    """When the capture thread took `frame`, on the perf clock (latency is measured from there)."""
    return time.perf_counter() - max(0.0, (time.time_ns() - frame.recv_ns) / 1e9)


class Stream:
    """One source's state in a run: its capture ring, newest features, counters, row in its group's batch.

    `name` None: the one unnamed stream of a one-stream run (published on the plain v1 topics)."""

    def __init__(self, cfg: RunConfig, spec: StreamConfig | None, group: Group, row: int) -> None:
        self.cfg, self.spec, self.group, self.row = cfg, spec, group, row
        self.name = None if spec is None else spec.name
        self.source_desc = (
            "lock-step (frames from the control socket)" if cfg.lockstep else str(spec.source if spec else cfg.source)
        )
        self.source_state = "none" if cfg.lockstep else "opening"
        self.capture: CaptureThread | None = None
        self.latest: Features | None = None  # newest features (live: set by the group's feature thread)
        self.processed = -1  # seq of the newest frame through the feature stage (its features or its error)
        self.used = -1  # seq of the features last stepped
        self.stopped: str | None = None  # why this stream stopped (its source ended or failed), once it has
        self.failed = False  # it stopped because its source or feature stage failed
        self.paused = False  # paused alone (its row is still stepped, its rates are not published)
        self.ticks = self.stale = self.paused_ticks = 0
        self.history = RateHistory(group.engine.ckpt.config.cells)
        self.meta = self.make_meta()

    @property
    def label(self) -> str:
        """How log lines name it."""
        return f"stream {self.name}" if self.name else "the source"

    @property
    def active(self) -> bool:
        """Not stopped."""
        return self.stopped is None

    def make_meta(self) -> dict[str, Any]:
        """What this stream's meta messages say (model, cells, RF centres, mode, source)."""
        meta = self.group.engine.meta(self.row)
        meta.update({"mode": self.cfg.mode, "source": self.source_desc})
        if self.name is not None:
            meta["stream"] = self.name
        return meta

    def open(self, *, drop: bool, around_start: Callable[[], Any] = contextlib.nullcontext) -> None:
        """Open the source and start its capture thread (`around_start`: a context the thread is started in)."""
        source = source_for(self.cfg, self.spec, check=False)
        self.capture = CaptureThread(source, drop=drop, notify=self.group.new_frame)
        with around_start():
            self.capture.start()
        # described once open: a bound port (zmq:...:0), a video's size and rate are known only now
        self.source_desc = source.describe()
        self.meta = self.make_meta()

    def close(self) -> None:
        """Stop the capture thread."""
        if self.capture is not None:
            self.capture.stop()

    def check_capture(self) -> bool:
        """True while frames may still come; False when the source ended; VistError when it or the feature stage
        failed."""
        if self.group.failure:
            raise VistError(f"the feature stage failed: {self.group.failure}")
        cap = self.capture
        assert cap is not None
        if cap.failure:
            raise VistError(f"the source failed: {cap.failure}")
        return not cap.ended

    def done(self) -> bool:
        """After the source ended: True once its newest frame has been through the feature stage (features or an
        error) and the newest features were stepped, or there are none."""
        assert self.capture is not None
        if self.processed != self.capture.newest_seq:  # read before `latest`, which is set first
            return False
        latest = self.latest
        return latest is None or latest.seq == self.used

    def status(self) -> dict[str, Any]:
        """This stream's part of the run's status."""
        cap = self.capture
        return {
            "name": self.name,
            "source": self.source_desc,
            "source_state": cap.state if cap else self.source_state,
            "stopped": self.stopped,
            "paused": self.paused,
            "ticks": self.ticks,
            "stale": self.stale,
            "paused_ticks": self.paused_ticks,
            "dropped": int(cap.overwritten) if cap else 0,
            "source_errors": int(cap.errors) if cap else 0,
        }


class TokenBatches:
    """The newest tokens of every row of a group's batch [B, T, D], handed from the feature stage to the model
    clock with no copy on the clock's side (triple buffering): the writer (one thread) fills its buffer with the
    rows it computed and brings the other rows up to date, then makes it the ready one; the clock takes the ready
    one whenever there is a newer one. Rows without features yet are zeros."""

    def __init__(self, rows: int, tokens: int, dim: int) -> None:
        self._buffers = np.zeros((3, rows, tokens, dim), np.float32)
        self._feats: list[list[Features | None]] = [[None] * rows for _ in range(3)]
        self._front, self._ready, self._back = 0, 1, 2  # the clock's, the newest complete one, the writer's
        self._last = self._ready  # the buffer the writer made ready last (never the writer's own)
        self._fresh = False  # the ready buffer is newer than the clock's
        self._lock = threading.Lock()

    def put(self, new: dict[int, Features]) -> None:
        """Writer side: the rows in `new` (row -> features, tokens [1, T, D]) replace theirs; a new batch is ready."""
        back, last = self._back, self._last
        buf, feats = self._buffers[back], self._feats[back]
        newest = self._feats[last]
        for row in range(len(feats)):
            feat = new.get(row)
            if feat is not None:
                np.copyto(buf[row], feat.tokens[0])
                feats[row] = feat
            elif feats[row] is not newest[row]:  # this buffer's row is older than the last batch's
                np.copyto(buf[row], self._buffers[last][row])
                feats[row] = newest[row]
        with self._lock:
            self._back, self._ready, self._last, self._fresh = self._ready, back, back, True

    def take(self) -> tuple[np.ndarray, list[Features | None]]:
        """Clock side: the newest batch [B, T, D] and each row's features (None: none yet). The batch stays
        unchanged until the next `take`."""
        with self._lock:
            if self._fresh:
                self._front, self._ready, self._fresh = self._ready, self._front, False
            return self._buffers[self._front], list(self._feats[self._front])


class Group:
    """Streams that share a checkpoint: one Engine (B = its streams), their batch of tokens, their feature thread.

    A row's rates equal those of a one-stream run of that stream (rows are independent)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.streams: list[Stream] = []
        self.failure: str | None = None  # set by the feature thread when the extractor fails
        self.new_frame = threading.Event()  # set by the streams' capture threads on each frame
        self.steps = 0  # batched steps so far (B > 1)
        cfg = engine.ckpt.config
        self._batches = TokenBatches(engine.streams, cfg.tokens, cfg.feature_dim) if engine.streams > 1 else None
        self._lock = threading.Lock()  # guards each stream's `latest` between the feature and tick threads

    def add(self, cfg: RunConfig, spec: StreamConfig | None) -> Stream:
        """A new stream in the next row."""
        stream = Stream(cfg, spec, self, len(self.streams))
        self.streams.append(stream)
        return stream

    def compute(self, frames: list[tuple[Stream, Frame]], got: float) -> float:
        """Features of each stream's `frame` in one extractor call, made each stream's `latest` (replay). Returns
        the compute ms. A failing backend is one VistError line."""
        try:
            tokens, pre, vit = self.engine.features_many([(f.image, f.color) for _, f in frames])
        except VistError:
            raise
        except Exception as exc:  # out of memory, ...: one line, as in live mode
            raise VistError(f"the feature stage failed: {error_line(exc)}") from exc
        new = {}
        for i, (stream, frame) in enumerate(frames):
            wait = max(0.0, (got - frame_got(frame)) * 1e3)  # read ahead into the ring, then waited
            stream.latest = new[stream.row] = Features(frame.seq, frame.index, frame.t_ns, got, tokens[i : i + 1],
                                                       pre, vit, wait)  # fmt: skip
        if self._batches is not None:
            self._batches.put(new)
        return pre + vit

    def newest(self) -> Batch:
        """The newest features of each stream (None: none yet), and for B > 1 the batch [B, T, D] made of them
        (consistent with the feature thread)."""
        if self._batches is not None:
            tokens, latest = self._batches.take()
            return Batch(latest, tokens)
        with self._lock:
            return Batch([self.streams[0].latest], None)

    def step(self, batch: Batch) -> tuple[np.ndarray, float]:
        """One temporal step of every row of `batch` -> (rates [B, C], temporal ms). At least one row has
        features; a row without any yet is stepped on zeros, and its state is reset at its first features (a
        stream that joins late starts as a fresh one)."""
        if batch.tokens is None:
            feat = batch.latest[0]
            assert feat is not None
            return self.engine.step(feat.tokens)
        for row, (feat, stream) in enumerate(zip(batch.latest, self.streams)):
            if feat is not None and stream.used == -1 and self.steps:
                self.engine.reset(row)  # its first features: the zeros its row was stepped on are forgotten
        self.steps += 1
        return self.engine.step(batch.tokens)

    def feature_loop(self, stop: threading.Event, stats: RunStats) -> None:
        """Feature thread (live): the newest frame of each stream, whenever the extractor is free; streams with a
        new frame go through the extractor together."""
        cuda = None
        if self.engine.device == "cuda":
            import torch

            cuda = torch.cuda.Stream()  # the ViT must not queue in front of the temporal step's stream
        with contextlib.ExitStack() as stack:
            if cuda is not None:
                import torch

                stack.enter_context(torch.cuda.stream(cuda))
            last = [-1] * len(self.streams)  # seq per stream (a rig may repeat indices)
            while not stop.is_set():
                self.new_frame.clear()
                frames = []
                for row, stream in enumerate(self.streams):
                    cap = stream.capture
                    frame = cap.latest(after=last[row]) if cap is not None and stream.active else None
                    if frame is not None:
                        frames.append((row, frame))
                if not frames:
                    ended = all(s.capture is None or s.capture.ended or not s.active for s in self.streams)
                    (stop.wait if ended else self.new_frame.wait)(0.1)  # nothing more will come: no spinning
                    continue
                if not self._features(frames, last, stats):
                    return

    def _features(self, frames: list[tuple[int, Frame]], last: list[int], stats: RunStats) -> bool:
        start = time.perf_counter()
        try:
            tokens, pre, vit = self.engine.features_many([(f.image, f.color) for _, f in frames])
        except VistError as exc:  # a bad frame: counted, the run goes on (one at a time, to find it)
            if len(frames) > 1:
                return all(self._features([one], last, stats) for one in frames)
            row, frame = frames[0]
            stats.error(f"{self.streams[row].label}: frame {frame.index}: {exc}")
            last[row] = self.streams[row].processed = frame.seq
            return True
        except Exception as exc:  # a failing backend (out of memory, ...): the group stops, saying why
            self.failure = error_line(exc)
            stats.error(f"feature stage failed: {self.failure}")
            return False
        new = {}
        with self._lock:
            for i, (row, frame) in enumerate(frames):
                got = frame_got(frame)
                wait = (start - got) * 1e3
                self.streams[row].latest = new[row] = Features(frame.seq, frame.index, frame.t_ns, got,
                                                               tokens[i : i + 1], pre, vit, wait)  # fmt: skip
        if self._batches is not None:
            self._batches.put(new)  # the copy into the batch is made here, off the clock's thread
        with stats.lock:
            stats.features += len(frames)
        for row, frame in frames:
            last[row] = self.streams[row].processed = frame.seq  # after `latest`: see Stream.done
        return True
