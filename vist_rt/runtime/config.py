"""`vist-rt run` settings: frozen dataclasses, loadable from TOML (a [run] table and [[stream]] tables), overridden
by flags."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS, TEMPORAL
from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_CONTROL, DEFAULT_PUB
from vist_rt.runtime.frames import MAX_SIDE
from vist_rt.runtime.lowlatency import RT_PRIORITIES
from vist_rt.tomlfile import read_toml

MIN_FPS, MAX_FPS = 0.01, 1000.0  # a source rate outside these is a typo, not a camera
MAX_HWM = 2**31 - 1  # ZeroMQ's high-water marks are C ints
# TOML keys are the flags' names; these flags store under another name
TOML_ALIASES = {"meta_every": "meta_every_s", "status_every": "status_every_s"}


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """One stream of a several-stream run: a `[[stream]]` table of the run's TOML file.

    Streams naming the same checkpoint (or none: the run's) are stepped as one batch, each with its own RF set
    (`rf`: a .npy file [C, g, g] on the checkpoint's token grid; default the checkpoint's own)."""

    name: str
    source: str
    checkpoint: str | None = None  # default: the run's checkpoint (or the demo model)
    rf: str | None = None
    fps: float | None = None  # as RunConfig's: source rate where the source has none, camera request
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        from vist_rt.runtime.wire import check_stream_name

        check_stream_name(self.name)
        for f in dataclasses.fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise VistError(f"stream {self.name}: {problem}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamConfig:
        """Strict: unknown keys, missing name/source and wrong types are one-line errors."""
        name = data.get("name")
        where = f"stream {name}" if isinstance(name, str) else "a [[stream]] table"
        for key in ("name", "source"):
            if key not in data:
                raise VistError(f"{where} has no {key}")
        return cls(**_typed(cls, data, what=f"{where} setting"))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything `vist-rt run` needs; field names are the flags' names (dashes as underscores)."""

    source: str | None = "synthetic"  # camera:N | URL | video:PATH | images:DIR | synthetic[:SEED] | zmq:ENDPOINT
    lockstep: bool = False  # no source: the model advances on the control socket's `predict`
    checkpoint: str | None = None
    vit_weights: str | None = None
    random_vit: int | None = None  # the checkpoint's ViT with random weights of this seed (timing; NOT its rates)
    backend: str = "auto"  # of the feature stage
    device: str = "cpu"
    precision: str = "auto"  # of the ViT: on the CPU the fastest native path within the accuracy bounds
    temporal: str = "torch"  # the streaming temporal model on the CPU: torch, or native (compiled C kernels)
    pub: str = DEFAULT_PUB
    control: str = DEFAULT_CONTROL
    replay: bool = False  # every frame of a file source, in order, resampled to the model rate
    realtime: bool = False  # replay paced to real time
    paused: bool = False  # start paused: subscribers connect, then a control `resume` starts the ticks
    max_frames: int | None = None  # stop after this many model ticks
    record: str | None = None  # HDF5 recording of everything published
    lsl: bool = False
    dashboard: bool = True
    allow_remote: bool = False  # bind beyond loopback (explicit choice)
    curve_keys: str | None = None  # folder with CurveZMQ server keys (required beyond loopback)
    fps: float | None = None  # source frame rate where the source has none (image folders)
    width: int | None = None  # camera resolution
    height: int | None = None
    engines: str = "engines"
    threads: int | None = None
    hwm: int = 1000  # ZMQ send high-water mark (messages)
    low_latency: bool = False  # hold a PM QoS request: idle CPUs poll, so waking a tick's threads costs us
    rt_priority: int | None = None  # run the tick thread under SCHED_FIFO at this priority (1-99, Linux)
    tick_cpu: int | None = None  # pin the tick thread (clock, temporal step, publish) to this CPU (Linux)
    io_cpu: int | None = None  # pin ZeroMQ's I/O thread (the run's PUB and control sockets) to this CPU
    meta_every_s: float = 5.0
    status_every_s: float = 5.0
    rf: str | None = None  # an RF set for the checkpoint (.npy [C, g, g]); default the checkpoint's own
    streams: tuple[StreamConfig, ...] = ()  # several named streams (from [[stream]] tables) instead of `source`

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise VistError(problem)
        if self.lockstep and self.source is not None:
            raise VistError("a lock-step run has no source: drop source (or lockstep)")
        if self.lockstep and self.replay:
            raise VistError("--lockstep and --replay exclude each other")
        if self.vit_weights is not None and self.random_vit is not None:
            raise VistError("give either vit_weights or random_vit, not both")
        if self.realtime and not self.replay:
            raise VistError("--realtime paces a --replay; it means nothing without it")
        if self.temporal == "native" and self.device != "cpu":
            raise VistError("--temporal native runs on the CPU; with --device cuda the temporal model runs on the GPU")
        if self.streams:
            self._check_streams()

    def _check_streams(self) -> None:
        if self.lockstep:
            raise VistError("a lock-step run serves one stream: drop the [[stream]] tables (or lockstep)")
        if self.source is not None:
            raise VistError("source names one stream, but the config has [[stream]] tables: give each its source")
        given = [name for name in ("rf", "fps", "width", "height") if getattr(self, name) is not None]
        if given:
            raise VistError(f"{', '.join(given)} belong(s) in each [[stream]] table of a several-stream run")
        names = [s.name for s in self.streams]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise VistError(f"two streams are named {twice[0]}: stream names must differ")
        from vist_rt.runtime.sources import device_key

        seen: dict[str, str] = {}
        for stream in self.streams:
            key = device_key(stream.source)
            if key is not None and key in seen:
                raise VistError(f"streams {seen[key]} and {stream.name} both read {key}: one device, one stream")
            if key is not None:
                seen[key] = stream.name

    @property
    def stream_configs(self) -> tuple[StreamConfig | None, ...]:
        """The streams: the [[stream]] tables, or (None,) for the one unnamed stream of `source` (or lock-step)."""
        return self.streams or (None,)

    @property
    def mode(self) -> str:
        """lockstep, replay or live."""
        return "lockstep" if self.lockstep else "replay" if self.replay else "live"

    @property
    def feature_threads(self) -> int | None:
        """Threads of the feature backend (ONNX Runtime / torch ViT): `threads` if given; else on the CPU every CPU
        this process may use but one, which the tick thread keeps for its temporal step (a ViT on all of them takes
        the tick thread's CPU: ticks go stale); None on CUDA (the backend's own choice)."""
        if self.threads is not None or self.device != "cpu":
            return self.threads
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cpus - 1)

    @property
    def pinning(self) -> str:
        """What --tick-cpu / --io-cpu pin, in words ("tick thread on CPU 0, ZeroMQ I/O on CPU 1"), or ""."""
        pinned = (("tick thread", self.tick_cpu), ("ZeroMQ I/O", self.io_cpu))
        return ", ".join(f"{what} on CPU {cpu}" for what, cpu in pinned if cpu is not None)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Settings from `[run]` in a TOML file (or its top level) and its `[[stream]]` tables, then `overrides`
        (flags given)."""
        whole = read_toml(path)
        top = {k: v for k, v in whole.items() if k != "stream"}
        table = top.get("run", top)
        if not isinstance(table, dict):
            raise VistError(f"config {path}: [run] must be a table")
        streams = _stream_tables(path, whole.get("stream"))
        if streams and overrides.get("lockstep"):
            raise VistError(f"a lock-step run serves one stream, but {path} has [[stream]] tables")
        if streams and overrides.get("source") is not None:
            raise VistError(f"--source names one stream, but {path} has [[stream]] tables (drop one or the other)")
        data: dict[str, Any] = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name == "no_dashboard":  # the flag's name; the setting is its opposite
                if not isinstance(value, bool):
                    raise VistError(f"run setting {key} must be true or false, got {value!r}")
                name, value = "dashboard", not value
            data[TOML_ALIASES.get(name, name)] = value
        if "streams" in data:
            raise VistError(f"{path}: streams are [[stream]] tables, not a run setting")
        for name, value in _typed(cls, data).items():  # the file's own values, even those a flag overrides
            problem = _field_problem(name, value)
            if problem:
                raise VistError(f"{path}: {problem}")
        if streams and "source" in data:
            raise VistError(f"{path}: source names one stream, but the file has [[stream]] tables: give each its "
                            "source")  # fmt: skip
        if streams:
            data = {**data, "source": None, "streams": streams}
        return cls.from_dict({**data, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Strict: unknown keys and wrong types are one-line errors."""
        if (data.get("lockstep") or data.get("streams")) and "source" not in data:
            data = {**data, "source": None}  # lock-step and several-stream runs have no (one) source
        streams = tuple(data.get("streams", ()))
        if not all(isinstance(s, StreamConfig) for s in streams):
            raise VistError("streams must be StreamConfig records")
        return cls(**_typed(cls, {k: v for k, v in data.items() if k != "streams"}), streams=streams)


def _stream_tables(path: str | Path, tables: Any) -> tuple[StreamConfig, ...]:
    """The [[stream]] tables of `path` as StreamConfigs (one-line errors naming the file)."""
    if tables is None:
        return ()
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise VistError(f"config {path}: stream must be [[stream]] tables")
    if not tables:
        return ()
    try:
        return tuple(StreamConfig.from_dict({k.replace("-", "_"): v for k, v in t.items()}) for t in tables)
    except VistError as exc:
        raise VistError(f"{path}: {exc}") from None


def _typed(cls: type, data: dict[str, Any], what: str = "run setting") -> dict[str, Any]:
    """`data` with each value checked against its field's type in dataclass `cls` (ints made floats where floats
    are due); unknown keys and wrong types are one-line errors."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "streams"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise VistError(f"unknown {what}(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    names = {"str": str, "bool": bool, "int": int, "float": float}
    for key, value in data.items():
        allowed = [t.strip() for t in str(fields[key].type).split("|")]
        if value is None and "None" in allowed:
            clean[key] = None
        elif isinstance(value, bool):
            if "bool" not in allowed:
                raise VistError(f"{what} {key} must be {' or '.join(allowed)}, got {value!r}")
            clean[key] = value
        elif "float" in allowed and isinstance(value, (int, float)):
            clean[key] = float(value)
        elif any(isinstance(value, names[t]) for t in allowed if t in names):
            clean[key] = value
        else:
            raise VistError(f"{what} {key} must be {' or '.join(allowed)}, got {value!r}")
    return clean


_CHOICES = {"backend": BACKENDS, "device": DEVICES, "temporal": TEMPORAL, "precision": PRECISIONS}
_PATHS = ("source", "checkpoint", "vit_weights", "pub", "control", "record", "curve_keys", "engines", "rf", "name")


def _field_problem(name: str, value: Any) -> str | None:
    """What is wrong with one setting on its own (None: nothing); the combinations are checked by RunConfig."""
    if name in _PATHS and isinstance(value, str) and not value.strip():
        return f"{name} must not be empty"
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"{name} must be one of {', '.join(_CHOICES[name])}, got {value!r}"
    if value is None or isinstance(value, (bool, str)):
        return None
    if name == "max_frames" and value < 1:
        return f"max_frames must be >= 1, got {value}"
    if name in ("meta_every_s", "status_every_s") and not 0 < value < math.inf:
        return f"{name} must be a number of seconds > 0, got {value}"
    if name == "fps" and not MIN_FPS <= value <= MAX_FPS:
        return f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {value}"
    if name == "threads" and value < 1:
        return f"threads must be >= 1, got {value}"
    if name in ("width", "height") and not 1 <= value <= MAX_SIDE:
        return f"{name} must be 1 to {MAX_SIDE} pixels, got {value}"
    if name == "rt_priority" and not RT_PRIORITIES[0] <= value <= RT_PRIORITIES[1]:
        return f"rt_priority must be {RT_PRIORITIES[0]} to {RT_PRIORITIES[1]}, got {value}"
    if name == "random_vit" and not 0 <= value < 2**63:
        return f"random_vit must be a seed in 0..2**63-1, got {value}"
    if name in ("tick_cpu", "io_cpu") and value < 0:
        return f"{name} must be a CPU number >= 0, got {value}"
    if name == "hwm" and not 1 <= value <= MAX_HWM:
        return f"hwm must be between 1 and {MAX_HWM}, got {value}"
    return None
