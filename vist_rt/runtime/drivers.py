"""The three modes of a run, as drivers over the same parts (streams, groups, clock, sinks) of a `Runtime`.

- live: each stream's capture thread keeps its newest frames; each group's feature thread runs the extractor
  on the newest frames whenever it is free; the model clock ticks at the checkpoint's rate and steps every
  group on the newest features it has (sample-and-hold). A tick whose features are not new is `stale`; a slow
  ViT never makes the clock slip (missed ticks are counted, see ModelClock).
- replay: every frame of each stream's file in order, resampled to the model rate by its timestamp (tick k uses
  the newest frame whose media time is <= k / fps from the stream's first frame), as fast as possible or paced
  (`realtime`).
- lockstep: no source; each control `predict` is one frame in, that frame's rates out (also published).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from vist_rt.errors import VistError
from vist_rt.runtime.clock import ModelClock
from vist_rt.runtime.sources import Frame
from vist_rt.runtime.stream import Group, Stream

if TYPE_CHECKING:
    from vist_rt.runtime.pipeline import Runtime

REPLAY_TOLERANCE_NS = 1e3  # 1 us: media times are rounded to whole ns (or ms) by containers
START_GRACE_S = 1.0  # live: how long the clock waits for the other streams' first features after the first's


def lockstep(rt: Runtime) -> None:
    """Serve control requests (each `predict` is a tick) until stopped or --max-frames."""
    while not rt.stopping:
        rt.control.poll(100)
        rt.housekeeping()
        if rt.cfg.max_frames is not None and rt.tick >= rt.cfg.max_frames:
            return


def _open(rt: Runtime, *, drop: bool) -> None:
    for stream in rt.streams:
        stream.open(drop=drop, around_start=rt.off_tick_cpu)
    rt.publish_meta()  # the meta sent at the start named the sources before they were open


def live(rt: Runtime) -> None:
    """Missed ticks are not computed: the model steps once per served tick (status counts the missed ones)."""
    _open(rt, drop=True)
    workers = [
        threading.Thread(target=g.feature_loop, args=(rt.stop_event, rt.stats), name="vist-features", daemon=True)
        for g in rt.groups
    ]
    with rt.off_tick_cpu():
        for worker in workers:
            worker.start()
    try:
        if not _first_features(rt):
            return
        while rt.paused and not rt.stopping:  # --paused: the clock starts at the resume (tick 0)
            if not rt.check_streams():
                return
            rt.poll_control(0.05)
            rt.housekeeping()
        clock = ModelClock(rt.fps)
        clock.begin()
        rt.pauses.restart()  # the rate is measured from the clock's start
        while not rt.stopping:
            tick = clock.wait(rt.poll_control)
            woke, woke_cpu = time.perf_counter(), time.thread_time()
            rt.stats.missed = clock.missed
            if not rt.check_streams():
                return
            rt.apply_requests()  # a key pressed during the wait acts on this tick
            if rt.paused:
                rt.stats.paused_ticks += 1
                rt.periodic()
                continue
            done = rt.step_groups(tick)
            rt.periodic()  # after the send: meta messages, flushes and status lines delay no rates
            wall, cpu = (done.sent - woke) * 1e3, (done.sent_cpu - woke_cpu) * 1e3  # wake-up to send
            rt.stats.add_latencies(
                {"overhead": wall - done.temporal_ms, "overhead_cpu": cpu - done.temporal_cpu_ms,
                 "off_cpu": max(0.0, wall - cpu), "housekeeping": (time.perf_counter() - done.sent) * 1e3}
            )  # fmt: skip
            if rt.cfg.max_frames is not None and rt.stats.ticks >= rt.cfg.max_frames:
                return
    finally:
        rt.stop()
        for worker in workers:
            worker.join(timeout=5.0)


def _first_features(rt: Runtime) -> bool:
    """Wait for the streams' first features: the clock starts with every stream's, or START_GRACE_S after the
    first stream's (a stream that sends nothing must not hold the others; it joins at its first frame). False
    when the run ends meanwhile."""
    first: float | None = None
    while not rt.stopping:
        waiting = [s for s in rt.streams if s.active and s.latest is None]
        if not waiting:
            return True
        if first is None and any(s.latest is not None for s in rt.streams):
            first = time.perf_counter()
        if first is not None and time.perf_counter() - first >= START_GRACE_S:
            rt.log(f"{', '.join(s.label for s in waiting)}: no frame yet; the clock starts without "
                   f"{'it' if len(waiting) == 1 else 'them'} (each joins at its first frame)")  # fmt: skip
            return True
        if not rt.check_streams(starting=True):
            return False
        rt.poll_control(0.05)
        rt.housekeeping()
    return False


class _Cursor:
    """A stream's place in its file during a replay: the frame shown now, the next one, the first one's time."""

    def __init__(self, rt: Runtime, stream: Stream) -> None:
        self.rt, self.stream = rt, stream
        period_ns = 1e9 / rt.fps
        self.current = self.next_frame()
        if self.current is None:
            self.pending = None
            self.t0_ns = 0
            self.frame_ns = period_ns
            return
        self.t0_ns = self.current.t_ns
        self.pending = self.next_frame()
        self.frame_ns = (self.pending.t_ns - self.current.t_ns) if self.pending is not None else period_ns

    def next_frame(self, stall_s: float = 10.0) -> Any:
        """The stream's next frame; None at the end; VistError if the source fails or stalls for `stall_s`.

        Control requests are answered while it waits (a slow source must not make the run deaf)."""
        rt, cap = self.rt, self.stream.capture
        assert cap is not None
        deadline = time.perf_counter() + stall_s
        while not rt.stopping:
            frame = cap.next_in_order(timeout=0.05)
            if frame is not None:
                return frame
            if not self.stream.check_capture():
                return cap.next_in_order(timeout=0.0)  # the last frames written before it ended
            rt.control.poll(0)
            if time.perf_counter() >= deadline:
                raise VistError(f"the source gave no frame for {stall_s:.0f} s ({cap.state})")
        return None

    def advance(self, k: int) -> bool:
        """Move to tick k's frame; False once past the last frame's display interval (the replay is complete)."""
        tick_ns = self.t0_ns + k * 1e9 / self.rt.fps
        tol = REPLAY_TOLERANCE_NS
        while self.pending is not None and self.pending.t_ns <= tick_ns + tol:
            self.frame_ns = self.pending.t_ns - self.current.t_ns
            self.current, self.pending = self.pending, self.next_frame()
        return not (self.pending is None and tick_ns + tol >= self.current.t_ns + max(self.frame_ns, 1.0))


def replay(rt: Runtime) -> None:
    """Tick k uses each stream's newest frame with media time <= k / fps (from its first frame's time)."""
    _open(rt, drop=False)
    single = len(rt.streams) == 1
    cursors: list[_Cursor] = []
    for stream in rt.streams:
        try:
            cursor = _Cursor(rt, stream)
        except VistError as exc:
            if single:
                raise
            rt.stop_streams([stream], str(exc), failed=True)
            continue
        if rt.stopping:
            return
        if cursor.current is None:
            if single:
                raise VistError(f"the source {stream.source_desc} gave no frame")
            rt.stop_streams([stream], "the source gave no frame", failed=False)
            continue
        cursors.append(cursor)
    rt.pauses.restart()  # the rate, and a paced replay's schedule, from here
    k = 0
    while not rt.stopping:
        top = time.perf_counter()
        for cursor in cursors:
            if not cursor.stream.active:
                continue
            try:
                more = cursor.advance(k)
            except VistError as exc:
                if single:
                    raise
                rt.stop_streams([cursor.stream], str(exc), failed=True)
                continue
            if not more:
                if single:
                    return
                rt.stop_streams([cursor.stream], "the replay is complete", failed=False)
        if not any(c.stream.active for c in cursors):
            return
        waited = time.perf_counter()
        if rt.cfg.realtime:
            rt.poll_control(max(0.0, rt.pauses.origin + rt.pauses.paused_s() + k / rt.fps - time.perf_counter()))
        else:
            rt.control.poll(0)
        while rt.paused and not rt.stopping:  # pacing resumes where it stopped (the pause account)
            rt.poll_control(0.05)
            rt.housekeeping()
        got = time.perf_counter()
        compute = 0.0
        for group in rt.groups:
            frames = [(c.stream, c.current) for c in cursors
                      if c.stream.group is group and c.stream.active and c.current.seq != c.stream.used]  # fmt: skip
            if frames:  # only streams whose frame changed (the capture's seq: a source's index may repeat)
                compute += _compute(rt, group, frames, got, single)
        if not any(c.stream.active for c in cursors):
            return
        done = rt.step_groups(k, held_is_stale=False)  # a frame shown over several ticks is not stale
        rt.housekeeping()
        busy = (done.sent - top - (got - waited)) * 1e3  # to the send, without pacing/pause waits
        rt.stats.add_latencies(
            {"overhead": busy - compute - done.temporal_ms, "housekeeping": (time.perf_counter() - done.sent) * 1e3}
        )
        k += 1
        if rt.cfg.max_frames is not None and rt.tick >= rt.cfg.max_frames:
            return


def _compute(rt: Runtime, group: Group, frames: list[tuple[Stream, Frame]], got: float, single: bool) -> float:
    """The features of each stream's frame (replay) -> compute ms. A frame or backend that fails stops its
    stream alone (a batch that fails is retried one frame at a time, to find which); a one-stream run ends."""
    try:
        ms = group.compute(frames, got)
    except VistError as exc:
        if single:
            raise
        if len(frames) > 1:
            return sum(_compute(rt, group, [one], got, single) for one in frames)
        stream, frame = frames[0]
        rt.stop_streams([stream], f"frame {frame.index}: {exc}", failed=True)
        return 0.0
    with rt.stats.lock:
        rt.stats.features += len(frames)
    return ms
