"""The run-time pipeline: source -> features -> temporal model -> ZeroMQ (and recorder), in three modes.

- live: a capture thread keeps the newest frames; a feature thread runs the extractor on the newest
  frame whenever it is free; the model clock ticks at the checkpoint's rate and steps the temporal
  model on the newest features it has (sample-and-hold). A tick whose features are not new is
  `stale`; a slow ViT never makes the clock slip (missed ticks are counted, see ModelClock).
- replay: every source frame in order, resampled to the model rate by its timestamp (tick k uses
  the newest frame whose media time is <= k / fps), as fast as possible or paced (`realtime`).
- lockstep: no source; each control `predict` is one frame in, that frame's rates out (also published).

One thread (the caller's) owns every socket and the recorder: ticks, control requests and meta
messages are served from it, so no socket is shared between threads.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.errors import VistError, error_line
from vist_rt.runtime.clock import ModelClock
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.engine import Engine
from vist_rt.runtime.stats import RateHistory, RunStats
from vist_rt.runtime.wire import Message

COMMANDS = ("status", "meta", "reset", "pause", "resume", "predict")
SWITCH_INTERVAL_S = 2e-4  # Python's default 5 ms GIL hand-over would delay ticks behind the capture/feature threads


class Runtime:
    """One run of the pipeline (see the module docstring). `run()` blocks until done or `stop()`."""

    def __init__(self, cfg: RunConfig, engine: Engine, *, log: Callable[[str], None] = print) -> None:
        self.cfg, self.engine, self.log = cfg, engine, log
        self.fps = float(engine.ckpt.fps)
        self.stats = RunStats()
        self._stop = threading.Event()
        self.paused = cfg.paused
        self.tick = 0
        self.source_state = "none" if cfg.lockstep else "opening"
        self.source_desc = "lock-step (frames from the control socket)" if cfg.lockstep else str(cfg.source)
        self.capture: Any = None
        self.publisher: Any = None
        self.control: Any = None
        self.recorder: Any = None
        self.lsl: Any = None
        self.low_latency: Any = None  # the PM QoS request of --low-latency, while held
        self.pinned: Any = None  # the tick thread's CPU pinning (--tick-cpu), while held
        # newest features: (seq, index, t_ns, got, tokens, pre, vit, capture wait); seq is the capture's
        self._latest: tuple[int, int, int, float, np.ndarray, float, float, float] | None = None
        self._processed = -1  # seq of the newest frame through the feature stage (its features or its error)
        self._latest_lock = threading.Lock()
        self._last_meta = 0.0
        self._last_status = 0.0
        self._temporal_ms = 0.0  # of the last tick (for the overhead figure)
        self._sent = 0.0  # perf clock when the last tick's rates were handed to ZeroMQ
        self._failure: str | None = None  # set by the feature thread when its backend fails
        self._mark_start()  # started, and the paused-time account (reset again when the clock starts)
        self.meta = self._meta()
        self.history = RateHistory(engine.ckpt.config.cells)  # what the dashboard draws
        self.status_lines = True  # headless status lines (off while a dashboard shows the status)
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()  # commands from other threads (the keys)

    @classmethod
    def from_config(cls, cfg: RunConfig, *, log: Callable[[str], None] = print) -> Runtime:
        """Load the checkpoint and extractor the settings name."""
        from vist_rt.demo import demo_checkpoint

        checkpoint = cfg.checkpoint if cfg.checkpoint is not None else demo_checkpoint()
        if cfg.record:
            check_new_file(cfg.record)  # before minutes of model loading, not after
        if not cfg.lockstep:
            source_for(cfg, check=True)  # likewise: the file exists and decodes, the port binds, ...
        if cfg.low_latency:
            from vist_rt.runtime.lowlatency import CpuLatencyRequest

            with CpuLatencyRequest(0):  # can it be made? (a one-line error now, not after the model loads)
                pass
        if cfg.tick_cpu is not None or cfg.io_cpu is not None:
            from vist_rt.runtime.affinity import check_cpus

            check_cpus(tick_cpu=cfg.tick_cpu, io_cpu=cfg.io_cpu)
        engine = Engine.from_files(
            checkpoint,
            vit_weights=cfg.vit_weights,
            backend=cfg.backend,
            device=cfg.device,
            precision=cfg.precision,
            engines=cfg.engines,
            threads=cfg.threads,
            temporal=cfg.temporal,
            log=log,
        )
        return cls(cfg, engine, log=log)

    # ---- control ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to end (thread- and signal-safe); `run()` then cleans up and returns."""
        self._stop.set()

    def _mark_start(self) -> None:
        """The rate's time origin: now. Paused time (excluded from the rate) is counted from here:
        `_paused_s` before the current pause, `_paused_since` when the current one began."""
        self.started = time.perf_counter()
        self._paused_s, self._paused_since = 0.0, self.started

    def request(self, cmd: str) -> None:
        """Queue a control command (reset, pause, resume) from another thread; the tick thread runs it."""
        if cmd not in ("reset", "pause", "resume", "toggle-pause"):
            raise VistError(f"request: {cmd!r} is not reset, pause, resume or toggle-pause")
        self._requests.put(cmd)

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def _meta(self) -> dict[str, Any]:
        meta = self.engine.meta()
        meta.update({"mode": self.cfg.mode, "source": self.source_desc})
        return meta

    def status(self) -> dict[str, Any]:
        """Everything the status line, the control `status` and the summary report."""
        snap = self.stats.snapshot()
        now = time.perf_counter()
        elapsed = now - self.started
        paused_s = self._paused_s + (now - self._paused_since if self.paused else 0.0)
        active = elapsed - min(paused_s, elapsed)  # the rate is over time not spent paused
        cap = self.capture
        snap.update(
            {
                "mode": self.cfg.mode,
                "paused": self.paused,
                "source": self.source_desc,
                "source_state": getattr(cap, "state", self.source_state) if cap else self.source_state,
                "dropped": int(getattr(cap, "overwritten", 0)) if cap else 0,
                "source_errors": int(getattr(cap, "errors", 0)) if cap else 0,
                "target_hz": self.fps,
                "rate_hz": snap["ticks"] / active if active > 0 else 0.0,
                "paused_s": paused_s,
                "elapsed_s": elapsed,
                "pub": self.publisher.endpoint if self.publisher else self.cfg.pub,
                "control": self.control.endpoint if self.control else self.cfg.control,
                "record": self.cfg.record,
                "extractor": self.engine.extractor.describe(),
                "torch_threads": getattr(self, "torch_threads", None),
                "low_latency": self.low_latency is not None and self.low_latency.active,
                "tick_cpu": self.cfg.tick_cpu,
                "io_cpu": self.cfg.io_cpu,
                "runtime": self.engine.extractor.runtime,
            }
        )
        return snap

    def handle(self, request: dict[str, Any], payload: bytes | None) -> tuple[dict[str, Any], bytes | None]:
        """One control request -> (reply, payload). A VistError becomes `{"ok": false, "error": ...}`."""
        cmd = request.get("cmd")
        if cmd not in COMMANDS:
            raise VistError(f"unknown cmd {cmd!r}; one of {', '.join(COMMANDS)}")
        if cmd == "status":
            return {"ok": True, **self.status()}, None
        if cmd == "meta":
            self._publish_meta()
            return {"ok": True, **self.meta}, None
        if cmd == "reset":
            self.engine.reset()
            self.history.clear()
            return {"ok": True, "reset": True, "tick": self.tick}, None
        if cmd in ("pause", "resume"):
            now = time.perf_counter()
            changed = self.paused != (cmd == "pause")
            if cmd == "pause" and not self.paused:
                self._paused_since = now
            elif cmd == "resume" and self.paused:
                self._paused_s += now - self._paused_since
            self.paused = cmd == "pause"
            if changed and self.publisher is not None:
                self._publish_meta()  # subscribers learn of the pause now, not from a gap in `tick`
            return {"ok": True, "paused": self.paused}, None
        # predict: lock-step only. Everything is checked before anything acts: a refused predict has no effect.
        if not self.cfg.lockstep:
            raise VistError("predict is for lock-step runs (vist-rt run --lockstep)")
        if self.paused:
            raise VistError("paused: send resume first")
        from vist_rt.runtime.control import predict_reply
        from vist_rt.runtime.frames import decode_frame

        frame = decode_frame(request, payload or b"", "predict")
        t_ns = time.time_ns() if frame.t_ns is None else frame.t_ns
        index = self.tick if frame.index is None else frame.index
        got = time.perf_counter()
        tokens, pre, vit = self.engine.features(frame.image, frame.color)
        self.stats.features += 1
        header, rates = self._step_and_publish(self.tick, index, t_ns, got, tokens, pre, vit, stale=False)
        return predict_reply(header, rates)

    def _poll_control(self, seconds: float) -> None:
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

    # ---- publishing ---------------------------------------------------------------------------------------------

    def _record(self, topic: str, header: dict[str, Any], rates: np.ndarray | None) -> None:
        if self.recorder is not None:
            self.recorder.add(Message(topic, header, rates))

    def _publish_meta(self) -> None:
        self.publisher.publish_meta({**self.meta, "paused": self.paused})  # the publisher keeps its own copy
        self.stats.messages += 1
        self._record("meta", self.publisher.last_meta_header, None)
        self._last_meta = time.perf_counter()

    def _step_and_publish(
        self,
        tick: int,
        index: int,
        t_ns: int,
        got: float,
        tokens: np.ndarray,
        pre: float | None,
        vit: float | None,
        *,
        stale: bool,
        capture: float | None = None,
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Step the temporal model once on `tokens` for model tick `tick` and publish the rates (and record them).

        `got`: when the frame was taken (perf clock); `pre`/`vit` None when this tick's features were computed
        for an earlier tick (they are not counted twice); `capture` = how long the frame waited for the feature
        stage after the capture thread took it. `e2e` runs to the moment of sending."""
        rates, temporal = self.engine.step(tokens)
        lat: dict[str, float | None] = {"capture": capture, "preprocess": pre, "vit": vit, "temporal": temporal}
        t0 = time.perf_counter()
        lat["e2e"] = (t0 - got) * 1e3
        header: dict[str, Any] = {
            "tick": tick,
            "frame": index,
            "t_frame_ns": t_ns,
            "stale": stale,
            "lat_ms": {k: None if v is None else round(v, 4) for k, v in lat.items()},
            "mode": self.cfg.mode,
            "paused_ticks": self.stats.paused_ticks,
        }
        self.publisher.publish_rates(header, rates)
        self._sent = time.perf_counter()  # the rates are out: what follows delays nothing (see _run_live)
        self.history.push(rates)
        lat["publish"] = (self._sent - t0) * 1e3
        header = self.publisher.last_rates_header  # as sent (v, seq, n, t_pub_ns): a new dict per message
        if self.recorder is not None:
            t_rec = time.perf_counter()
            self._record("rates", header, rates)
            lat["record"] = (time.perf_counter() - t_rec) * 1e3
        if self.lsl is not None:
            self.lsl.push(rates, time.perf_counter() - got)
        with self.stats.lock:
            self.stats.ticks += 1
            self.stats.messages += 1
            self.stats.stale += int(stale)
        fresh = {k: v for k, v in lat.items() if v is not None}
        again = ("temporal", "publish", "record")  # what a stale tick did anew
        self.stats.add_latencies(fresh if not stale else {k: fresh[k] for k in again if k in fresh})
        self.tick = tick + 1
        self._temporal_ms = temporal
        return header, rates

    def _apply_requests(self) -> None:
        """Commands queued by other threads (the dashboard's keys), in order."""
        while not self._requests.empty():
            cmd = self._requests.get_nowait()
            if cmd == "toggle-pause":
                cmd = "resume" if self.paused else "pause"
            reply, _ = self.handle({"cmd": cmd}, None)
            self.log(f"{cmd}: done (tick {self.tick})" if reply.get("ok") else f"{cmd}: {reply}")

    def _housekeeping(self) -> None:
        """Queued requests, periodic meta messages, the recording's timed flush and the headless status line."""
        self._apply_requests()
        self._periodic()

    def _periodic(self) -> None:
        """Periodic meta messages, the recording's timed flush and the headless status line."""
        now = time.perf_counter()
        if now - self._last_meta >= self.cfg.meta_every_s:
            self._publish_meta()
        if self.recorder is not None:
            self.recorder.flush_due()  # rows never wait on disk longer than its interval (e.g. while paused)
        if self.status_lines and now - self._last_status >= self.cfg.status_every_s:
            self._last_status = now
            self.log(status_line(self.status()))

    # ---- the three modes ----------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Open the sockets (and recorder), run the mode until done or stopped, clean up; return the status.

        A run that fails before publishing any rates leaves no recording file behind."""
        import torch

        self._drop_empty_recording = False
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
            self._drop_empty_recording = True
            raise
        finally:
            sys.setswitchinterval(switch)
            torch.set_num_threads(threads)
            if self._drop_empty_recording and self.recorder is not None and self.recorder.rates_count == 0:
                Path(self.cfg.record).unlink(missing_ok=True)  # type: ignore[arg-type]

    def _run(self) -> dict[str, Any]:
        from vist_rt.runtime.control import ControlServer
        from vist_rt.runtime.frames import MAX_JSON_BYTES
        from vist_rt.runtime.publish import Publisher, load_curve_keys

        cfg = self.cfg
        secret = load_curve_keys(cfg.curve_keys)[1] if cfg.curve_keys else None
        with contextlib.ExitStack() as stack:
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
            if cfg.lsl:  # before the recorder, so the recording is closed first (liblsl's teardown can crash)
                from vist_rt.runtime.lsl import LslOutlet

                self.lsl = stack.enter_context(LslOutlet(self.meta))
            if cfg.record:
                from vist_rt.runtime.record import Recorder

                # the journal makes every row durable as it is added; the HDF5 file is written in batches (each
                # costs ~10 ms on the tick thread, after a send), so rarely: every 5 s or 1000 messages
                self.recorder = stack.enter_context(
                    Recorder(cfg.record, cells=self.engine.ckpt.config.cells, flush_every=1000, flush_interval_s=5.0)
                )
            self.log(
                f"publishing on {self.publisher.endpoint}, control on {self.control.endpoint} ({cfg.mode}; "
                f"torch threads {self.torch_threads}{'; low latency' if cfg.low_latency else ''}"
                f"{'; ' + cfg.pinning if cfg.pinning else ''})"
            )
            self._publish_meta()
            if cfg.tick_cpu is not None:  # after the sockets and LSL outlet: their threads keep every CPU
                from vist_rt.runtime.affinity import pin_tick

                self.pinned = stack.enter_context(pin_tick(cfg.tick_cpu, cfg.io_cpu))
            self._mark_start()
            try:
                if cfg.lockstep:
                    self._run_lockstep()
                elif cfg.replay:
                    self._run_replay()
                else:
                    self._run_live()
            except KeyboardInterrupt:
                self.stop()
            finally:
                if self.capture is not None:
                    self.capture.stop()
                self.engine.close()
            return self.status()

    def _open_source(self, *, drop: bool) -> Any:
        from vist_rt.runtime.capture import CaptureThread

        source = source_for(self.cfg, check=False)
        self.capture = CaptureThread(source, drop=drop)
        with self._off_tick_cpu():  # the capture thread and whatever opening the source starts
            self.capture.start()
        # described once open: a bound port (zmq:...:0), a video's size and rate are known only now
        self.source_desc = source.describe()
        self.meta = self._meta()
        self._publish_meta()  # the meta sent at the start named the source before it was open
        return source

    def _off_tick_cpu(self) -> Any:
        """Threads started meanwhile are born off the tick thread's CPU (--tick-cpu)."""
        return self.pinned.away() if self.pinned is not None else contextlib.nullcontext()

    def _check_capture(self) -> bool:
        """True while frames may still come; False when the source ended; VistError when it or a stage failed."""
        if self._failure:
            raise VistError(f"the feature stage failed: {self._failure}")
        cap = self.capture
        if cap.failure:
            raise VistError(f"the source failed: {cap.failure}")
        return not cap.ended

    def _got(self, frame: Any) -> float:
        """When the capture thread took `frame`, on the perf clock (latency is measured from there)."""
        return time.perf_counter() - max(0.0, (time.time_ns() - frame.recv_ns) / 1e9)

    def _run_lockstep(self) -> None:
        while not self.stopping:
            self.control.poll(100)
            self._housekeeping()
            if self.cfg.max_frames is not None and self.tick >= self.cfg.max_frames:
                return

    def _next_frame(self, stall_s: float = 10.0) -> Any:
        """The next replay frame; None at the end; VistError if the source fails or stalls for `stall_s`.

        Control requests are answered while it waits (a slow source must not make the run deaf)."""
        deadline = time.perf_counter() + stall_s
        while not self.stopping:
            frame = self.capture.next_in_order(timeout=0.05)
            if frame is not None:
                return frame
            if not self._check_capture():
                frame = self.capture.next_in_order(timeout=0.0)  # the last frames written before it ended
                return frame
            self.control.poll(0)
            if time.perf_counter() >= deadline:
                raise VistError(f"the source gave no frame for {stall_s:.0f} s ({self.capture.state})")
        return None

    def _run_replay(self) -> None:
        """Tick k uses the newest source frame with media time <= k / fps (from the first frame's time)."""
        self._open_source(drop=False)
        period_ns = 1e9 / self.fps
        current = self._next_frame()
        if current is None:
            if self.stopping:
                return
            raise VistError(f"the source {self.source_desc} gave no frame")
        t0_ns = current.t_ns
        pending = self._next_frame()
        frame_ns = (pending.t_ns - current.t_ns) if pending is not None else period_ns
        tokens = None
        used = -1
        start = time.perf_counter()
        k = 0
        tol = 1e3  # 1 us: media times are rounded to whole ns (or ms) by containers
        while not self.stopping:
            top = time.perf_counter()
            tick_ns = t0_ns + k * period_ns
            while pending is not None and pending.t_ns <= tick_ns + tol:
                frame_ns = pending.t_ns - current.t_ns
                current, pending = pending, self._next_frame()
            if pending is None and tick_ns + tol >= current.t_ns + max(frame_ns, 1.0):
                return  # past the last frame's display interval: the replay is complete
            waited = time.perf_counter()
            if self.cfg.realtime:
                self._poll_control(max(0.0, start + k / self.fps - time.perf_counter()))
            else:
                self.control.poll(0)
            if self.paused:
                pause_start = time.perf_counter()
                while self.paused and not self.stopping:
                    self._poll_control(0.05)
                    self._housekeeping()
                start += time.perf_counter() - pause_start  # real-time pacing resumes where it stopped
            got = time.perf_counter()
            compute = 0.0
            pre = vit = wait = None
            if current.seq != used:  # the capture's seq: a source's index may repeat
                wait = max(0.0, (got - self._got(current)) * 1e3)  # read ahead into the ring, then waited
                try:
                    tokens, pre, vit = self.engine.features(current.image, current.color)
                except VistError:
                    raise
                except Exception as exc:  # a failing backend (out of memory, ...): one line, as in live mode
                    raise VistError(f"the feature stage failed: {error_line(exc)}") from exc
                compute = pre + vit
                self.stats.features += 1
                used = current.seq
            assert tokens is not None
            self._step_and_publish(k, current.index, current.t_ns, got, tokens, pre, vit, stale=False, capture=wait)
            self._housekeeping()
            busy = (self._sent - top - (got - waited)) * 1e3  # to the send, without pacing/pause waits
            self.stats.add_latencies(
                {"overhead": busy - compute - self._temporal_ms,
                 "housekeeping": (time.perf_counter() - self._sent) * 1e3}
            )  # fmt: skip
            k += 1
            if self.cfg.max_frames is not None and self.tick >= self.cfg.max_frames:
                return

    def _feature_loop(self) -> None:
        """Feature thread (live): the newest frame through the extractor, whenever the extractor is free."""
        stream = None
        if self.engine.device == "cuda":
            import torch

            stream = torch.cuda.Stream()  # the ViT must not queue in front of the temporal step's stream
        with contextlib.ExitStack() as stack:
            if stream is not None:
                import torch

                stack.enter_context(torch.cuda.stream(stream))
            last = -1
            while not self.stopping:
                frame = self.capture.latest(after=last, timeout=0.1)  # `last`: a seq (a rig may repeat indices)
                if frame is None:
                    if self.capture.ended:
                        self._stop.wait(0.1)  # nothing more will come: wait for the run to stop, without spinning
                    continue
                start = time.perf_counter()
                try:
                    tokens, pre, vit = self.engine.features(frame.image, frame.color)
                except VistError as exc:  # a bad frame: counted, the run goes on
                    self.stats.error(f"frame {frame.index}: {exc}")
                    last = self._processed = frame.seq
                    continue
                except Exception as exc:  # a failing backend (out of memory, ...): the run stops, saying why
                    self._failure = error_line(exc)
                    self.stats.error(f"feature stage failed: {self._failure}")
                    return
                got = self._got(frame)
                with self._latest_lock:
                    self._latest = (frame.seq, frame.index, frame.t_ns, got, tokens, pre, vit, (start - got) * 1e3)
                self.stats.features += 1
                last = self._processed = frame.seq  # after `_latest`: see _source_done

    def _run_live(self) -> None:
        """Missed ticks are not computed: the model steps once per served tick (status counts the missed ones)."""
        self._open_source(drop=True)
        worker = threading.Thread(target=self._feature_loop, name="vist-features", daemon=True)
        with self._off_tick_cpu():
            worker.start()
        try:
            while self._latest is None and not self.stopping:  # the clock starts with the first features
                if not self._check_capture() and self._source_done(-1):
                    raise VistError(f"the source {self.source_desc} ended before its first frame was processed")
                self._poll_control(0.05)
                self._housekeeping()
            while self.paused and not self.stopping:  # --paused: the clock starts at the resume (tick 0)
                if not self._check_capture() and self._source_done(-1):
                    self.log(f"the source ended ({self.source_desc}); stopping")
                    return
                self._poll_control(0.05)
                self._housekeeping()
            clock = ModelClock(self.fps)
            clock.begin()
            self._mark_start()  # the rate is measured from the clock's start
            used = -1
            while not self.stopping:
                tick = clock.wait(self._poll_control)
                woke = time.perf_counter()
                self.stats.missed = clock.missed
                if not self._check_capture() and self._source_done(used):
                    self.log(f"the source ended ({self.source_desc}); stopping")
                    return
                self._apply_requests()  # a key pressed during the wait acts on this tick
                if self.paused:
                    self.stats.paused_ticks += 1
                    self._periodic()
                    continue
                with self._latest_lock:
                    latest = self._latest
                assert latest is not None
                seq, index, t_ns, got, tokens, pre, vit, wait = latest
                fresh = seq != used
                self._step_and_publish(
                    tick, index, t_ns, got, tokens, *((pre, vit) if fresh else (None, None)), stale=not fresh,
                    capture=wait if fresh else None,
                )  # fmt: skip
                self._periodic()  # after the send: meta messages, flushes and status lines delay no rates
                self.stats.add_latencies(
                    {"overhead": (self._sent - woke) * 1e3 - self._temporal_ms,
                     "housekeeping": (time.perf_counter() - self._sent) * 1e3}
                )  # fmt: skip
                used = seq
                if self.cfg.max_frames is not None and self.stats.ticks >= self.cfg.max_frames:
                    return
        finally:
            self.stop()
            worker.join(timeout=5.0)

    def _source_done(self, used: int) -> bool:
        """After the source ended: True once its newest frame has been through the feature stage (features or
        an error) and the newest features were stepped (`used`: their seq), or there are none, or the run is
        paused (a paused run steps nothing, so it would never finish)."""
        if self._processed != self.capture.newest_seq:  # read before `_latest`, which is set first
            return False
        latest = self._latest
        return self.paused or latest is None or latest[0] == used


def source_for(cfg: RunConfig, *, check: bool) -> Any:
    """The (unopened) source `cfg` names, suited to its mode; `check`: also open and close it once, so that what
    is wrong with it (no such file, not a video, a port in use, ...) is said before any model loads."""
    from vist_rt.runtime.sources import make_source

    source = make_source(
        str(cfg.source), fps=cfg.fps, width=cfg.width, height=cfg.height, allow_remote=cfg.allow_remote
    )
    if check:
        source.check()
    if cfg.replay and source.live:
        synthetic = str(cfg.source).startswith("synthetic")
        hint = " (the synthetic movie as a file: synthetic:replay)" if synthetic else ""
        raise VistError(f"--replay needs a file source (video:PATH, images:DIR){hint}, not {cfg.source}")
    if not cfg.replay and not source.live:
        raise VistError(f"{cfg.source} is a file: play it with --replay (add --realtime to pace it)")
    return source


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
