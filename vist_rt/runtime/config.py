"""`vist-rt run` settings: a frozen dataclass, loadable from TOML ([run] table), overridden by flags."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from vist_rt.choices import BACKENDS, DEVICES, PRECISIONS, TEMPORAL
from vist_rt.errors import VistError
from vist_rt.runtime.frames import MAX_SIDE
from vist_rt.tomlfile import read_toml

DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"
MIN_FPS, MAX_FPS = 0.01, 1000.0  # a source rate outside these is a typo, not a camera
MAX_HWM = 2**31 - 1  # ZeroMQ's high-water marks are C ints
# TOML keys are the flags' names; these flags store under another name
TOML_ALIASES = {"meta_every": "meta_every_s", "status_every": "status_every_s"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything `vist-rt run` needs; field names are the flags' names (dashes as underscores)."""

    source: str | None = "synthetic"  # camera:N | URL | video:PATH | images:DIR | synthetic[:SEED] | zmq:ENDPOINT
    lockstep: bool = False  # no source: the model advances on the control socket's `predict`
    checkpoint: str | None = None
    vit_weights: str | None = None
    backend: str = "auto"  # of the feature stage
    device: str = "cpu"
    precision: str = "fp32"
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
    tick_cpu: int | None = None  # pin the tick thread (clock, temporal step, publish) to this CPU (Linux)
    io_cpu: int | None = None  # pin ZeroMQ's I/O thread (the run's PUB and control sockets) to this CPU
    meta_every_s: float = 5.0
    status_every_s: float = 5.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise VistError(problem)
        if self.lockstep and self.source is not None:
            raise VistError("a lock-step run has no source: drop source (or lockstep)")
        if self.lockstep and self.replay:
            raise VistError("--lockstep and --replay exclude each other")
        if self.realtime and not self.replay:
            raise VistError("--realtime paces a --replay; it means nothing without it")
        if self.temporal == "native" and self.device != "cpu":
            raise VistError("--temporal native runs on the CPU; with --device cuda the temporal model runs on the GPU")

    @property
    def mode(self) -> str:
        """lockstep, replay or live."""
        return "lockstep" if self.lockstep else "replay" if self.replay else "live"

    @property
    def pinning(self) -> str:
        """What --tick-cpu / --io-cpu pin, in words ("tick thread on CPU 0, ZeroMQ I/O on CPU 1"), or ""."""
        pinned = (("tick thread", self.tick_cpu), ("ZeroMQ I/O", self.io_cpu))
        return ", ".join(f"{what} on CPU {cpu}" for what, cpu in pinned if cpu is not None)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Settings from `[run]` in a TOML file (or its top level), then `overrides` (flags given)."""
        table = read_toml(path, "run")
        data: dict[str, Any] = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name == "no_dashboard":  # the flag's name; the setting is its opposite
                if not isinstance(value, bool):
                    raise VistError(f"run setting {key} must be true or false, got {value!r}")
                name, value = "dashboard", not value
            data[TOML_ALIASES.get(name, name)] = value
        for name, value in cls._typed(data).items():  # the file's own values, even those a flag overrides
            problem = _field_problem(name, value)
            if problem:
                raise VistError(f"{path}: {problem}")
        return cls.from_dict({**data, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Strict: unknown keys and wrong types are one-line errors."""
        if data.get("lockstep") and "source" not in data:
            data = {**data, "source": None}  # lock-step runs have no source
        return cls(**cls._typed(data))

    @classmethod
    def _typed(cls, data: dict[str, Any]) -> dict[str, Any]:
        """`data` with each value checked against its field's type (ints made floats where floats are due)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise VistError(f"unknown run setting(s): {', '.join(unknown)}")
        clean: dict[str, Any] = {}
        names = {"str": str, "bool": bool, "int": int, "float": float}
        for key, value in data.items():
            allowed = [t.strip() for t in str(fields[key].type).split("|")]
            if value is None and "None" in allowed:
                clean[key] = None
            elif isinstance(value, bool):
                if "bool" not in allowed:
                    raise VistError(f"run setting {key} must be {' or '.join(allowed)}, got {value!r}")
                clean[key] = value
            elif "float" in allowed and isinstance(value, (int, float)):
                clean[key] = float(value)
            elif any(isinstance(value, names[t]) for t in allowed if t in names):
                clean[key] = value
            else:
                raise VistError(f"run setting {key} must be {' or '.join(allowed)}, got {value!r}")
        return clean


_CHOICES = {"backend": BACKENDS, "device": DEVICES, "temporal": TEMPORAL, "precision": PRECISIONS}
_PATHS = ("source", "checkpoint", "vit_weights", "pub", "control", "record", "curve_keys", "engines")


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
    if name in ("tick_cpu", "io_cpu") and value < 0:
        return f"{name} must be a CPU number >= 0, got {value}"
    if name == "hwm" and not 1 <= value <= MAX_HWM:
        return f"hwm must be between 1 and {MAX_HWM}, got {value}"
    return None
