"""The run-time: streams (source -> capture ring -> features) -> model clock -> temporal step -> sinks.

A run is made of named parts (docs/runtime.md has the diagram):
- streams (`stream.Stream`): one per source, each with its capture thread and newest features;
- groups (`stream.Group`): the streams that share a checkpoint, stepped as one batch (B = streams);
- the model clock (`clock.ModelClock`) and the pause account (`clock.PauseAccount`);
- sinks (`sinks.Sinks`): the ZeroMQ publisher, the recorder, the LSL outlet, the dashboard's history;
- three drivers (`drivers`): live, replay and lock-step, over the same parts.
`Runtime` is the front: it loads the parts, owns their lifetimes, answers control requests and reports status.

One thread (the caller's) owns every socket and the recorder: ticks, control requests and meta messages are
served from it, so no socket is shared between threads.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.clock import PauseAccount
from vist_rt.runtime.config import RunConfig, StreamConfig
from vist_rt.runtime.engine import Engine, read_rf
from vist_rt.runtime.records import Features, Sent, Ticked
from vist_rt.runtime.sinks import HistorySink, LslSink, PublisherSink, RecorderSink, Sinks
from vist_rt.runtime.stats import RateHistory, RunStats
from vist_rt.runtime.stream import Group, Stream, source_for

COMMANDS = ("status", "meta", "reset", "pause", "resume", "predict")
SWITCH_INTERVAL_S = 2e-4  # Python's default 5 ms GIL hand-over would delay ticks behind the capture/feature threads
STALE_AGAIN = ("temporal", "publish", "record", "lsl")  # what a stale tick did anew (its latency stages)

__all__ = ["COMMANDS", "Runtime", "check_new_file", "record_paths", "source_for", "status_line"]


class Runtime:
    """One run (see the module docstring). `run()` blocks until done or `stop()`."""

    def __init__(self, cfg: RunConfig, groups: list[Group], *, log: Callable[[str], None] = print) -> None:
        self.cfg, self.groups, self.log = cfg, groups, log
        order = {spec.name: i for i, spec in enumerate(cfg.streams)}  # the config's order (groups: by checkpoint)
        self.streams: list[Stream] = sorted((s for g in groups for s in g.streams), key=lambda s: order.get(s.name, 0))
        fps = {float(g.engine.ckpt.fps) for g in groups}
        if len(fps) != 1:
            raise VistError(f"the streams' checkpoints run at different rates ({', '.join(map(str, sorted(fps)))} "
                            "Hz): one run has one model clock")  # fmt: skip
        self.fps = fps.pop()
        self.stats = RunStats()
        self._stop = threading.Event()
        self.pauses = PauseAccount(paused=cfg.paused)
        self.tick = 0
        self.sinks: Sinks | None = None  # while running
        self.publisher: Any = None
        self.control: Any = None
        self.recorder: RecorderSink | None = None
        self.low_latency: Any = None  # the PM QoS request of --low-latency, while held
        self.rt_priority: Any = None  # the tick thread's SCHED_FIFO of --rt-priority, while held
        self.pinned: Any = None  # the tick thread's CPU pinning (--tick-cpu), while held
        self.torch_threads: int | None = None
        self.frozen_objects = 0  # objects out of the garbage collector's reach while running (frozen_heap)
        self._last_meta = 0.0
        self._last_status = 0.0
        self.status_lines = True  # headless status lines (off while a dashboard shows the status)
        self._requests: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()  # from other threads (keys)

    @classmethod
    def from_engine(cls, cfg: RunConfig, engine: Engine, *, log: Callable[[str], None] = print) -> Runtime:
        """A one-stream run (or one group of `cfg.streams`, all on `engine`'s checkpoint, row by row)."""
        group = Group(engine)
        for spec in cfg.stream_configs:
            group.add(cfg, spec)
        if len(group.streams) != engine.streams:
            raise VistError(f"the engine steps {engine.streams} streams, the settings have {len(group.streams)}")
        return cls(cfg, [group], log=log)

    @classmethod
    def from_config(cls, cfg: RunConfig, *, log: Callable[[str], None] = print) -> Runtime:
        """Check everything that can be checked cheaply, then load each checkpoint (and extractor) once."""
        from vist_rt.demo import demo_checkpoint
        from vist_rt.model.checkpoint import read_summary

        default = cfg.checkpoint if cfg.checkpoint is not None else str(demo_checkpoint())
        for path in record_paths(cfg).values():
            check_new_file(path)  # before minutes of model loading, not after
        if not cfg.lockstep:
            for spec in cfg.stream_configs:
                source_for(cfg, spec, check=True)  # likewise: the file exists and decodes, the port binds, ...
        plan: dict[Path, list[tuple[StreamConfig | None, Any]]] = {}  # checkpoint -> its streams and RF sets
        summaries = {}
        for spec in cfg.stream_configs:
            path = Path(spec.checkpoint if spec and spec.checkpoint else default).resolve()  # one file, one group
            if path not in summaries:
                summaries[path] = read_summary(str(path))
            rf_path = spec.rf if spec else cfg.rf
            where = f"stream {spec.name}: " if spec else ""
            rf = None if rf_path is None else read_rf(rf_path, summaries[path].config, where=where)
            plan.setdefault(path, []).append((spec, rf))
        rates = {s.fps for s in summaries.values()}
        if len(rates) > 1:
            raise VistError(f"the streams' checkpoints run at different rates ({', '.join(map(str, sorted(rates)))}"
                            " Hz): one run has one model clock; run them as separate runs")  # fmt: skip
        if cfg.low_latency:
            from vist_rt.runtime.lowlatency import CpuLatencyRequest

            with CpuLatencyRequest(0):  # can it be made? (a one-line error now, not after the model loads)
                pass
        if cfg.rt_priority is not None:
            from vist_rt.runtime.lowlatency import ClockPriority

            with ClockPriority(cfg.rt_priority):  # can it be had? (a one-line error now, not after the model loads)
                pass
        if cfg.tick_cpu is not None or cfg.io_cpu is not None:
            from vist_rt.runtime.affinity import check_cpus

            check_cpus(tick_cpu=cfg.tick_cpu, io_cpu=cfg.io_cpu)
        groups: list[Group] = []
        try:
            for path, members in plan.items():
                rfs = [rf for _, rf in members]
                engine = Engine.from_files(
                    str(path), vit_weights=cfg.vit_weights, random_vit=cfg.random_vit, backend=cfg.backend,
                    device=cfg.device, precision=cfg.precision, engines=cfg.engines, threads=cfg.feature_threads,
                    temporal=cfg.temporal, rf=None if rfs == [None] else rfs, log=log,
                )  # fmt: skip
                group = Group(engine)
                groups.append(group)
                for spec, _ in members:
                    group.add(cfg, spec)
            return cls(cfg, groups, log=log)
        except BaseException:
            for group in groups:
                group.engine.close()
            raise

    # ---- one-stream views --------------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The first group's engine (the run's, in a one-checkpoint run)."""
        return self.groups[0].engine

    @property
    def meta(self) -> dict[str, Any]:
        """The first stream's meta (the run's, in a one-stream run)."""
        return self.streams[0].meta

    @property
    def history(self) -> RateHistory:
        """The first stream's recent rates."""
        return self.streams[0].history

    @property
    def capture(self) -> Any:
        """The first stream's capture thread (None before it starts and in lock-step)."""
        return self.streams[0].capture

    @property
    def source_desc(self) -> str:
        """The source(s), in words."""
        if len(self.streams) == 1:
            return self.streams[0].source_desc
        return "; ".join(f"{s.name}: {s.source_desc}" for s in self.streams)

    @property
    def paused(self) -> bool:
        """The whole run is paused."""
        return self.pauses.paused

    @property
    def stop_event(self) -> threading.Event:
        """Set once stop() was called (threads of the run wait on it)."""
        return self._stop

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    # ---- control ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end (thread- and signal-safe); `run()` then cleans up and returns."""
        self._stop.set()

    def request(self, cmd: str, stream: str | None = None) -> None:
        """Queue a control command (reset, pause, resume, toggle-pause; of one stream or all) from another thread;
        the tick thread runs it."""
        if cmd not in ("reset", "pause", "resume", "toggle-pause"):
            raise VistError(f"request: {cmd!r} is not reset, pause, resume or toggle-pause")
        if stream is not None:
            self._stream(stream)
        self._requests.put((cmd, stream))

    def _stream(self, name: Any) -> Stream:
        """The stream a request names; VistError when there is no such stream."""
        if len(self.streams) == 1 and self.streams[0].name is None:
            raise VistError("this run has one unnamed stream: drop `stream`")
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise VistError(f"no stream {name!r}; streams: {', '.join(str(s.name) for s in self.streams)}")

    def handle(self, request: dict[str, Any], payload: bytes | None) -> tuple[dict[str, Any], bytes | None]:
        """One control request -> (reply, payload). A VistError becomes `{"ok": false, "error": ...}`.

        Everything is checked before anything acts: a refused request has no effect."""
        cmd = request.get("cmd")
        if cmd not in COMMANDS:
            raise VistError(f"unknown cmd {cmd!r}; one of {', '.join(COMMANDS)}")
        stream = self._stream(request["stream"]) if "stream" in request else None
        if cmd == "status":
            return {"ok": True, **(stream.status() if stream else self.status())}, None
        if cmd == "meta":
            if stream is None:
                self.publish_meta()
            else:
                self._publish_meta_of(stream)
            return {"ok": True, **(stream or self.streams[0]).meta}, None
        if cmd == "reset":
            for s in self.streams if stream is None else [stream]:
                s.history.clear()
            if stream is None:
                for group in self.groups:
                    group.engine.reset()
            else:
                stream.group.engine.reset(stream.row)
            return {"ok": True, "reset": True, "tick": self.tick, **({"stream": stream.name} if stream else {})}, None
        if cmd in ("pause", "resume"):
            return self._pause(cmd == "pause", stream), None
        return self._predict(request, payload)

    def _pause(self, pause: bool, stream: Stream | None) -> dict[str, Any]:
        if stream is not None:
            changed = stream.paused != pause
            stream.paused = pause
            if changed and self.sinks is not None:
                self._publish_meta_of(stream)  # its subscribers learn of the pause now
            return {"ok": True, "paused": pause, "stream": stream.name}
        changed = self.pauses.set(pause)
        if changed and self.sinks is not None:
            self.publish_meta()  # subscribers learn of the pause now, not from a gap in `tick`
        return {"ok": True, "paused": self.paused}

    def _predict(self, request: dict[str, Any], payload: bytes | None) -> tuple[dict[str, Any], bytes | None]:
        """Lock-step only: one frame in, its rates out (and published)."""
        if not self.cfg.lockstep:
            raise VistError("predict is for lock-step runs (vist-rt run --lockstep)")
        if self.paused:
            raise VistError("paused: send resume first")
        from vist_rt.runtime.control import predict_reply
        from vist_rt.runtime.frames import decode_frame

        frame = decode_frame(request, payload or b"", "predict")
        stream = self.streams[0]
        t_ns = time.time_ns() if frame.t_ns is None else frame.t_ns
        index = self.tick if frame.index is None else frame.index
        got = time.perf_counter()
        tokens, pre, vit = stream.group.engine.features(frame.image, frame.color)
        self.stats.features += 1
        feat = Features(self.tick, index, t_ns, got, tokens, pre, vit, None)
        rates, temporal = stream.group.engine.step(tokens)
        sent = self.send(stream, self.tick, feat, rates[0], temporal, fresh=True)
        self.after_sends([sent])
        self._count_tick(self.tick)
        return predict_reply(sent.delivery.header, rates[0])

    def poll_control(self, seconds: float) -> None:
        """Serve control requests for up to `seconds` (the clock's wait)."""
        if self.control is None:
            time.sleep(seconds)
            return
        end = time.perf_counter() + seconds
        while True:
            left = end - time.perf_counter()
            if left <= 0 or self.stopping:
                return
            self.control.poll(max(1, int(left * 1000)))

    def apply_requests(self) -> None:
        """Commands queued by other threads (the dashboard's keys), in order."""
        while not self._requests.empty():
            cmd, name = self._requests.get_nowait()
            if cmd == "toggle-pause":
                paused = self.paused if name is None else self._stream(name).paused
                cmd = "resume" if paused else "pause"
            reply, _ = self.handle({"cmd": cmd, **({"stream": name} if name else {})}, None)
            self.log(f"{cmd}{' ' + name if name else ''}: done (tick {self.tick})" if reply.get("ok") else
                     f"{cmd}: {reply}")  # fmt: skip

    # ---- status ---------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything the status line, the control `status` and the summary report."""
        snap = self.stats.snapshot()
        now = time.perf_counter()
        elapsed = self.pauses.elapsed_s(now)
        paused_s = self.pauses.paused_s(now)
        active = elapsed - min(paused_s, elapsed)  # the rate is over time not spent paused
        paths = record_paths(self.cfg)
        streams = [{**s.status(), "record": paths.get(s.name)} for s in self.streams]
        ext = self.engine.extractor
        snap.update(
            {
                "mode": self.cfg.mode,
                "paused": self.paused,
                "source": self.source_desc,
                "source_state": streams[0]["source_state"] if len(streams) == 1 else
                                ", ".join(f"{s['name']} {s['source_state']}" for s in streams),
                "dropped": sum(s["dropped"] for s in streams),
                "source_errors": sum(s["source_errors"] for s in streams),
                "target_hz": self.fps,
                "rate_hz": snap["ticks"] / active if active > 0 else 0.0,
                "paused_s": paused_s,
                "elapsed_s": elapsed,
                "pub": self.publisher.endpoint if self.publisher else self.cfg.pub,
                "control": self.control.endpoint if self.control else self.cfg.control,
                "record": self.cfg.record,
                "extractor": ext.describe(),
                "torch_threads": self.torch_threads,
                "vit_threads": self.cfg.feature_threads if self._vit_on_cpu else None,
                "low_latency": self.low_latency is not None and self.low_latency.active,
                "rt_priority": self.rt_priority.priority if self.rt_priority and self.rt_priority.active else None,
                "tick_cpu": self.cfg.tick_cpu,
                "io_cpu": self.cfg.io_cpu,
                "runtime": ext.runtime,
                "streams": streams,
            }
        )  # fmt: skip
        return snap

    # ---- ticks ----------------------------------------------------------------------------------------------------

    def send(
        self,
        stream: Stream,
        tick: int,
        feat: Features,
        rates: np.ndarray,
        temporal: float,
        *,
        fresh: bool,
        stale: bool | None = None,
    ) -> Sent:
        """One stream's rates [C] for model tick `tick` to the publisher. `feat`: the features stepped (their
        pre/ViT times are counted only when `fresh`, i.e. computed for this tick); `stale` (default: not fresh) is
        what the header says (a replay holding a frame over several ticks is not stale). `e2e` runs to the send."""
        stale = not fresh if stale is None else stale
        assert self.sinks is not None
        lat: dict[str, float | None] = {
            "capture": feat.wait_ms if fresh else None,
            "preprocess": feat.pre_ms if fresh else None,
            "vit": feat.vit_ms if fresh else None,
            "temporal": temporal,
            "e2e": (time.perf_counter() - feat.got) * 1e3,
        }
        header: dict[str, Any] = {
            "tick": tick,
            "frame": feat.index,
            "t_frame_ns": feat.t_ns,
            "stale": stale,
            "lat_ms": {k: None if v is None else round(v, 4) for k, v in lat.items()},
            "mode": self.cfg.mode,
            "paused_ticks": self.stats.paused_ticks + stream.paused_ticks,
        }
        delivery = self.sinks.send(stream.name, header, rates, feat.got)
        stream.ticks += 1
        stream.stale += int(stale)
        return Sent(stream.name, delivery, rates, feat.got, lat, stale)

    def after_sends(self, sent: Sequence[Sent]) -> None:
        """A tick's sent rates to the other sinks (recorder, LSL, history), then the counters and latencies."""
        assert self.sinks is not None
        for one in sent:
            lat = {k: v for k, v in one.lat.items() if v is not None}  # the stages measured for this tick
            lat.update(one.delivery.ms)  # the send's, then the other sinks'
            lat.update(self.sinks.follow(one.stream, one.delivery, one.rates, one.got))
            self.stats.add_latencies(lat if not one.stale else {k: lat[k] for k in STALE_AGAIN if k in lat})
        with self.stats.lock:
            self.stats.messages += len(sent)
            self.stats.stale += sum(one.stale for one in sent)

    def step_groups(self, tick: int, *, held_is_stale: bool = True) -> Ticked:
        """Model tick `tick` for every group with a running stream that has features: one batched temporal step
        each and each running, unpaused stream's rates sent, then (after every send) the other sinks."""
        sent, sent_cpu, temporal, temporal_cpu = time.perf_counter(), time.thread_time(), 0.0, 0.0
        out: list[Sent] = []
        for group in self.groups:
            batch = group.newest()
            if not any(s.active for s in group.streams) or all(f is None for f in batch.latest):
                continue
            cpu = time.thread_time()
            rates, ms = group.step(batch)
            temporal, temporal_cpu = temporal + ms, temporal_cpu + (time.thread_time() - cpu) * 1e3
            for stream, feat in zip(group.streams, batch.latest):
                if feat is None:
                    continue
                if stream.active and stream.paused:
                    stream.paused_ticks += 1
                elif stream.active:
                    fresh = feat.seq != stream.used
                    stale = not fresh and held_is_stale
                    out.append(self.send(stream, tick, feat, rates[stream.row], ms, fresh=fresh, stale=stale))
                    sent = out[-1].delivery.sent
                stream.used = feat.seq
        if out:  # once, not per send: only the loop's bookkeeping runs between the last send and here
            sent_cpu = time.thread_time()
        self.after_sends(out)
        self._count_tick(tick)
        return Ticked(sent, temporal, sent_cpu, temporal_cpu)

    def _count_tick(self, tick: int) -> None:
        with self.stats.lock:
            self.stats.ticks += 1
        self.tick = tick + 1

    def stop_streams(self, streams: Sequence[Stream], why: str, *, failed: bool) -> None:
        """Streams whose source ended or failed stop alone, with one line saying so; the others keep their clock."""
        streams = [s for s in streams if s.stopped is None]
        if not streams:
            return
        for stream in streams:
            stream.stopped, stream.failed = why, failed
        others = any(s.active for s in self.streams)
        names = ", ".join(s.label for s in streams)
        one = len(streams) == 1
        self.log(f"{names}: {why}; " + (f"{'it stops' if one else 'they stop'}, the other streams go on" if others
                                        else f"{'it was the last stream' if one else 'they were the last streams'}"
                                        ": the run ends"))  # fmt: skip
        if self.sinks is not None:
            for stream in streams:
                self._publish_meta_of(stream)

    def check_streams(self, *, starting: bool = False) -> bool:
        """Stop the streams whose source ended (all its frames stepped) or failed; False once none runs.

        A one-stream run keeps its one-stream behaviour: a failure is the run's VistError, an end stops the run."""
        single = len(self.streams) == 1
        for group in self.groups:
            if group.failure and any(s.active for s in group.streams):
                why = f"the feature stage failed: {group.failure}"
                if single:
                    raise VistError(why)
                self.stop_streams(group.streams, why, failed=True)  # one line for the group
        for stream in self.streams:
            if not stream.active:
                continue
            try:
                alive = stream.check_capture()
            except VistError as exc:
                if single:
                    raise
                self.stop_streams([stream], str(exc), failed=True)
                continue
            if alive:
                continue
            # a paused stream steps nothing, so it would never be done: it ends once its frames are through the
            # feature stage
            idle = (self.paused or stream.paused) and not starting
            assert stream.capture is not None
            if (idle and stream.processed == stream.capture.newest_seq) or stream.done():
                if single and starting and stream.latest is None:
                    raise VistError(f"the source {stream.source_desc} ended before its first frame was processed")
                if single:
                    self.log(f"the source ended ({stream.source_desc}); stopping")
                    stream.stopped = "the source ended"
                else:
                    self.stop_streams([stream], f"the source ended ({stream.source_desc})", failed=False)
        return any(s.active for s in self.streams)

    def check_failed(self) -> None:
        """After a several-stream run: VistError when every stream failed (the run did not do its job)."""
        if len(self.streams) > 1 and all(s.failed for s in self.streams):
            raise VistError("every stream failed: " + "; ".join(f"{s.name}: {s.stopped}" for s in self.streams))

    # ---- meta, housekeeping -----------------------------------------------------------------------------------

    def publish_meta(self) -> None:
        """A meta message for each stream (now)."""
        for stream in self.streams:
            self._publish_meta_of(stream)
        self._last_meta = time.perf_counter()

    def _publish_meta_of(self, stream: Stream) -> None:
        assert self.sinks is not None
        meta = {**stream.meta, "paused": self.paused or stream.paused}
        if stream.stopped is not None and stream.name is not None:
            meta["stopped"] = stream.stopped
        self.sinks.meta(stream.name, meta)
        self.stats.messages += 1

    def housekeeping(self) -> None:
        """Queued requests, periodic meta messages, the sinks' timed work and the headless status line."""
        self.apply_requests()
        self.periodic()

    def periodic(self) -> None:
        """Periodic meta messages, the sinks' timed work (the recording's flush) and the headless status line."""
        now = time.perf_counter()
        if now - self._last_meta >= self.cfg.meta_every_s:
            self.publish_meta()
        if self.sinks is not None:
            self.sinks.periodic()
        if self.status_lines and now - self._last_status >= self.cfg.status_every_s:
            self._last_status = now
            self.log(status_line(self.status()))

    def off_tick_cpu(self) -> Any:
        """Threads started meanwhile are born off the tick thread's CPU (--tick-cpu)."""
        return self.pinned.away() if self.pinned is not None else contextlib.nullcontext()

    @property
    def _vit_on_cpu(self) -> bool:
        """Whether the features come from a ViT on the CPU (whose threads `feature_threads` sets)."""
        return self.engine.extractor.spec["kind"] == "dinov2" and self.cfg.device == "cpu"

    # ---- lifetimes --------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Open the sockets (and recorder), run the mode until done or stopped, clean up; return the status.

        A run that fails before publishing any rates leaves no recording file behind."""
        import torch

        failed = False
        switch, threads = sys.getswitchinterval(), torch.get_num_threads()
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # the tick thread gets the GIL back quickly from the others
        # one intra-op thread: on a small, busy CPU a spinning torch pool makes ticks slow and ragged (measured
        # on 2 cores: temporal p99 30 ms with 2 threads, 8 ms with 1); --threads N overrides, except with
        # --tick-cpu (the tick thread has one CPU: a pool of its own would only share it)
        default_one = self.cfg.threads is None and self.engine.extractor.runtime["backend"] != "torch"
        if default_one or self.cfg.tick_cpu is not None:
            torch.set_num_threads(1)
        self.torch_threads = torch.get_num_threads()
        try:
            return self._run()
        except BaseException:  # anything from the recorder's creation on (LSL outlet, source, first tick, ...)
            failed = True
            raise
        finally:
            sys.setswitchinterval(switch)
            torch.set_num_threads(threads)
            if failed and self.recorder is not None:
                for recorder in self.recorder.recorders.values():
                    if recorder.rates_count == 0:
                        recorder.path.unlink(missing_ok=True)

    def _open_sinks(self, stack: contextlib.ExitStack, secret: bytes | None) -> None:
        from vist_rt.runtime.control import ControlServer
        from vist_rt.runtime.frames import MAX_JSON_BYTES
        from vist_rt.runtime.publish import Publisher

        cfg = self.cfg
        if cfg.low_latency:
            from vist_rt.runtime.lowlatency import CpuLatencyRequest

            self.low_latency = stack.enter_context(CpuLatencyRequest(0))
        context = None  # ZeroMQ's shared context, unless its I/O thread is pinned (a context of the run's own)
        if cfg.io_cpu is not None:
            from vist_rt.runtime.affinity import io_context

            context = stack.enter_context(io_context(cfg.io_cpu))
        sockets = {"allow_remote": cfg.allow_remote, "curve_secret_key": secret, "context": context}
        self.publisher = stack.enter_context(Publisher(cfg.pub, hwm=cfg.hwm, **sockets))
        limit = None if cfg.lockstep else MAX_JSON_BYTES  # a frame's size in lock-step, else a request's JSON
        self.control = stack.enter_context(ControlServer(cfg.control, self.handle, max_part_bytes=limit, **sockets))
        sinks = [PublisherSink(self.publisher), HistorySink({s.name: s.history for s in self.streams})]
        if cfg.lsl:  # before the recorder, so the recording is closed first (liblsl's teardown can crash)
            from vist_rt.runtime.lsl import LslOutlet

            outlets = {s.name: stack.enter_context(LslOutlet(s.meta, name=f"vist-rt-{s.name}" if s.name else "vist-rt"))
                       for s in self.streams}  # fmt: skip
        paths = record_paths(cfg)
        if paths:
            from vist_rt.runtime.record import Recorder

            # the journal makes every row durable as it is added; the HDF5 file is written in batches (each
            # costs ~10 ms on the tick thread, after a send), so rarely: every 5 s or 1000 messages. A stream's
            # recording of a several-stream run sees the publisher's seq jump over the other streams' messages:
            # those are not losses
            several = len(self.streams) > 1
            self.recorder = RecorderSink({})  # filled one by one: a file made before a failure is removed (run)
            for s in self.streams:
                self.recorder.recorders[s.name] = stack.enter_context(
                    Recorder(paths[s.name], cells=s.group.engine.ckpt.config.cells, flush_every=1000,
                             flush_interval_s=5.0, gaps=not several)
                )  # fmt: skip
            sinks.append(self.recorder)
        if cfg.lsl:
            sinks.append(LslSink(outlets))
        self.sinks = Sinks(sinks)

    def _run(self) -> dict[str, Any]:
        from vist_rt.runtime import drivers
        from vist_rt.runtime.lowlatency import frozen_heap
        from vist_rt.runtime.publish import load_curve_keys

        cfg = self.cfg
        secret = load_curve_keys(cfg.curve_keys)[1] if cfg.curve_keys else None
        with contextlib.ExitStack() as stack:
            try:
                self._open_sinks(stack, secret)
                self.log(
                    f"publishing on {self.publisher.endpoint}, control on {self.control.endpoint} ({cfg.mode}; "
                    f"torch threads {self.torch_threads}"
                    f"{f', ViT threads {cfg.feature_threads}' if self._vit_on_cpu else ''}"
                    f"{'; low latency' if cfg.low_latency else ''}"
                    f"{f'; real-time priority {cfg.rt_priority}' if cfg.rt_priority else ''}"
                    f"{'; ' + cfg.pinning if cfg.pinning else ''})"
                )
                self.publish_meta()
                if cfg.tick_cpu is not None:  # after the sockets and LSL outlet: their threads keep every CPU
                    from vist_rt.runtime.affinity import pin_tick

                    self.pinned = stack.enter_context(pin_tick(cfg.tick_cpu, cfg.io_cpu))
                if cfg.rt_priority is not None:  # after the sockets: only this thread, and what it starts is not
                    from vist_rt.runtime.lowlatency import ClockPriority

                    self.rt_priority = stack.enter_context(ClockPriority(cfg.rt_priority))
                self.frozen_objects = stack.enter_context(frozen_heap())  # no full collection walks the model
                self.pauses.restart()
                driver = drivers.lockstep if cfg.lockstep else drivers.replay if cfg.replay else drivers.live
                driver(self)
                self.check_failed()
            except KeyboardInterrupt:
                self.stop()
            finally:
                for stream in self.streams:
                    stream.close()
                for group in self.groups:
                    group.engine.close()
            return self.status()


def record_paths(cfg: RunConfig) -> dict[str | None, str]:
    """Where each stream is recorded: `record` itself for one stream; `STEM.NAME.SUFFIX` per stream of several."""
    if not cfg.record:
        return {}
    if not cfg.streams:
        return {None: cfg.record}
    path = Path(cfg.record)
    return {s.name: str(path.with_name(f"{path.stem}.{s.name}{path.suffix}")) for s in cfg.streams}


def check_new_file(path: str) -> None:
    """VistError unless `path` can be created: it must not exist (recordings are never overwritten)."""
    from vist_rt.runtime.record import check_writable

    if Path(path).exists():
        raise VistError(f"{path} exists: choose another path (a recording is never overwritten)")
    check_writable(Path(path))


def status_line(s: dict[str, Any]) -> str:
    """One line for headless runs: mode, ticks and rate, stale/missed/dropped, latency."""
    e2e = s["latency_ms"].get("e2e")
    lat = f"e2e p50 {e2e['p50']:.1f} p99 {e2e['p99']:.1f} ms" if e2e else "e2e -"
    paused = " PAUSED" if s["paused"] else ""
    return (
        f"[{s['mode']}{paused}] tick {s['ticks']} ({s['rate_hz']:.1f}/{s['target_hz']:.1f} Hz) "
        f"stale {s['stale']} missed {s['missed']} dropped {s['dropped']} msgs {s['messages']} | {lat} "
        f"| source {s['source_state']}"
    )
