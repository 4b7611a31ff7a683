"""The engine cache: which compiled TensorRT engine belongs to which ONNX file, GPU and TensorRT version.

Pure Python (no TensorRT needed). An engine is identified by an `EngineKey` holding everything that
invalidates it; its file name carries a digest of the key, and a sidecar JSON next to it records the
full key. An engine is only ever used when its sidecar key equals the requested key, so a stale
engine (other TensorRT, other GPU, other weights, other shapes, ...) is rebuilt with a message, never
loaded silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from vist_rt.errors import VistError, first_line
from vist_rt.files import atomic_write

KEY_VERSION = 1  # bump when the build policy (fp16 policy, profile rules) changes: old engines become stale
PRECISIONS = ("fp16", "fp32")
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
TRT_INSTALL_HINT = 'pip install "vist-rt[tensorrt]" (needs an NVIDIA GPU and CUDA)'

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)
Status = Literal["hit", "miss", "stale"]

# Human names of the key's fields, for "rebuilding: ..." messages.
FIELD_NAMES = {
    "key_version": "vist-rt engine format",
    "onnx_name": "ONNX file name",
    "kind": "graph kind",
    "onnx_sha256": "ONNX file contents (sha256)",
    "spec": "model spec",
    "precision": "precision",
    "profile": "input shapes",
    "trt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
}


# --------------------------------------------------------------------------------------------- shapes


def _is_dynamic(dim: int | str) -> bool:
    return isinstance(dim, str) or dim <= 0


def _dim_label(dim: int | str) -> str:
    return "?" if isinstance(dim, int) and dim <= 0 else str(dim)


def parse_shape(text: str) -> Shape:
    """'1x3x224x224' -> (1, 3, 224, 224); VistError (one line) otherwise."""
    parts = text.strip().lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise VistError(f"bad shape {text!r}: expected sizes joined by 'x', e.g. 1x3x224x224") from None
    if not shape or any(d < 1 for d in shape):
        raise VistError(f"bad shape {text!r}: every size must be >= 1")
    return shape


def parse_shape_arg(text: str) -> tuple[str, Shape | tuple[Shape, Shape, Shape]]:
    """A `--shape` argument: 'NAME=1x3x224x224' (fixed) or 'NAME=MIN:OPT:MAX' (a range of shapes)."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise VistError(f"bad --shape {text!r}: expected NAME=1x3x224x224 or NAME=MINx..:OPTx..:MAXx..")
    pieces = rest.split(":")
    if len(pieces) == 1:
        return name.strip(), parse_shape(pieces[0])
    if len(pieces) != 3:
        raise VistError(f"bad --shape {text!r}: a range is MIN:OPT:MAX (three shapes)")
    mn, opt, mx = (parse_shape(p) for p in pieces)
    return name.strip(), (mn, opt, mx)


def resolve_profile(
    graph_inputs: Mapping[str, Sequence[int | str]],
    input_shapes: Mapping[str, Any] | None = None,
) -> Profile:
    """The (min, opt, max) shape of every graph input.

    `graph_inputs` maps input name -> dims (an int, or a str / value <= 0 for a dynamic dim), as
    `read_meta` or a TensorRT network gives them. `input_shapes` maps a name to one shape S or to a
    (min, opt, max) triple. With one shape S: opt = max = S and min is S with every dynamic dim set
    to 1. An input not mentioned has every dynamic dim min = opt = max = 1. Static dims must match.
    """
    given = dict(input_shapes or {})
    unknown = sorted(set(given) - set(graph_inputs))
    if unknown:
        names, inputs = ", ".join(unknown), ", ".join(graph_inputs)
        raise VistError(f"--shape names {names}, not an input of the graph (inputs: {inputs})")
    profile: Profile = {}
    for name, dims in graph_inputs.items():
        dims = list(dims)
        if name not in given:
            fixed = tuple(1 if _is_dynamic(d) else int(d) for d in dims)
            profile[name] = (fixed, fixed, fixed)
            continue
        value = given[name]
        triple = _as_triple(name, value)
        if triple is None:
            shape = tuple(int(d) for d in value)
            triple = (tuple(1 if _is_dynamic(d) else s for d, s in zip(dims, shape)), shape, shape)
        wanted = "x".join(_dim_label(d) for d in dims)
        for shape in triple:
            if len(shape) != len(dims):
                raise VistError(f"shape for {name!r} has {len(shape)} dims; the graph input is {wanted}")
            for d, s in zip(dims, shape):
                if s < 1:
                    raise VistError(f"shape for {name!r}: every size must be >= 1")
                if not _is_dynamic(d) and s != int(d):
                    raise VistError(f"shape {'x'.join(map(str, shape))} for {name!r} does not fit the graph's {wanted}")
        mn, opt, mx = triple
        if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
            raise VistError(f"shape range for {name!r} must have min <= opt <= max in every dim")
        profile[name] = triple
    return profile


def _as_triple(name: str, value: Any) -> tuple[Shape, Shape, Shape] | None:
    """(min, opt, max) if `value` is a triple of shapes, None if it is one shape."""
    items = list(value)
    if items and all(isinstance(v, int) for v in items):
        return None
    if len(items) == 3 and all(isinstance(v, (tuple, list)) for v in items):
        return tuple(tuple(int(d) for d in v) for v in items)  # type: ignore[return-value]
    raise VistError(f"shape for {name!r} must be one shape or a (min, opt, max) triple")


def profile_is_static(profile: Profile) -> bool:
    """True when every input has one shape (min == opt == max)."""
    return all(mn == opt == mx for mn, opt, mx in profile.values())


# ------------------------------------------------------------------------------------------------ key


def _sanitise(text: str, limit: int = 40) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (clean or "model")[:limit]


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything that makes a compiled engine valid; two engines are interchangeable iff keys are equal."""

    onnx_name: str
    kind: str
    onnx_sha256: str
    spec_json: str  # canonical JSON of the ONNX metadata spec (model, weights hash, block, image size, ...)
    precision: str
    profile_json: str  # canonical JSON of {input: [min, opt, max]}
    trt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    key_version: int = KEY_VERSION

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)

    @property
    def profile(self) -> Profile:
        return {k: tuple(tuple(s) for s in v) for k, v in json.loads(self.profile_json).items()}  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """The key as plain JSON-able data (what the sidecar records)."""
        return {
            "key_version": self.key_version,
            "onnx_name": self.onnx_name,
            "kind": self.kind,
            "onnx_sha256": self.onnx_sha256,
            "spec": self.spec,
            "precision": self.precision,
            "profile": json.loads(self.profile_json),
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        """Inverse of `to_dict` (raises KeyError/TypeError/ValueError on malformed data)."""
        return cls(
            onnx_name=str(data["onnx_name"]),
            kind=str(data["kind"]),
            onnx_sha256=str(data["onnx_sha256"]),
            spec_json=_canonical(data["spec"]),
            precision=str(data["precision"]),
            profile_json=_canonical(data["profile"]),
            trt_version=str(data["trt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=(int(data["compute_capability"][0]), int(data["compute_capability"][1])),
            key_version=int(data["key_version"]),
        )

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of every field (stable across runs and machines)."""
        return hashlib.sha256(_canonical(self.to_dict()).encode()).hexdigest()[:16]

    @property
    def model_label(self) -> str:
        spec = self.spec
        label = spec.get("backbone") or spec.get("model") or spec.get("name") or Path(self.onnx_name).stem
        return _sanitise(str(label))

    @property
    def filename(self) -> str:
        """`{kind}-{backbone or model}-{precision}-{digest}.engine`, safe on every file system."""
        return f"{_sanitise(self.kind, 24)}-{self.model_label}-{self.precision}-{self.digest}{ENGINE_SUFFIX}"


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def engine_key(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    input_shapes: Mapping[str, Any] | None = None,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
) -> EngineKey:
    """The key of the engine that `onnx_path` compiles to on this GPU / TensorRT, with these shapes.

    Reads the vist-rt metadata (OnnxFileError for a missing or foreign file) and hashes the file.
    """
    from vist_rt.export.onnx import file_sha256, read_meta

    if precision not in PRECISIONS:
        raise VistError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    meta = read_meta(onnx_path)
    profile = resolve_profile(meta["inputs"], input_shapes)
    cc = tuple(int(c) for c in compute_capability)
    if len(cc) != 2:
        raise VistError(f"compute capability must be MAJOR.MINOR, got {compute_capability!r}")
    return EngineKey(
        onnx_name=Path(onnx_path).name,
        kind=str(meta["kind"]),
        onnx_sha256=file_sha256(onnx_path),
        spec_json=_canonical(meta.get("spec", {})),
        precision=precision,
        profile_json=_canonical({k: [list(s) for s in v] for k, v in profile.items()}),
        trt_version=str(trt_version),
        gpu_name=str(gpu_name),
        compute_capability=(cc[0], cc[1]),
    )


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """'TensorRT version 10.3 -> 10.7, GPU A -> B' for the fields that differ between two key dicts."""

    def short(field: str, value: Any) -> str:
        if field == "onnx_sha256":
            return str(value)[:12]
        if field == "compute_capability" and isinstance(value, (list, tuple)) and len(value) == 2:
            return f"{value[0]}.{value[1]}"
        if field == "profile" and isinstance(value, Mapping):
            return ", ".join(f"{k} {_range_label(v)}" for k, v in value.items())
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    parts = []
    for field, label in FIELD_NAMES.items():
        a, b = old.get(field), new.get(field)
        if a != b:
            parts.append(f"{label} {short(field, a)} -> {short(field, b)}")
    return ", ".join(parts) or "no difference"


def _range_label(value: Any) -> str:
    try:
        mn, opt, mx = ("x".join(str(d) for d in s) for s in value)
    except (TypeError, ValueError):
        return str(value)
    return mn if mn == opt == mx else f"{mn}:{opt}:{mx}"


# ---------------------------------------------------------------------------------------------- cache


@dataclasses.dataclass(frozen=True)
class CacheStatus:
    """What the cache holds for a key: `hit` (usable engine), `miss` (nothing), `stale` (an outdated one)."""

    status: Status
    path: Path  # where the engine for the key is (hit) or will be written
    reason: str = ""  # for stale: which fields differ; for an unusable file at `path`: why
    stale_path: Path | None = None


@dataclasses.dataclass(frozen=True)
class CachedEngine:
    """One engine file in the cache directory and what its sidecar says."""

    path: Path
    key: dict[str, Any] | None  # None: sidecar missing or unreadable (the engine is never used)
    size: int
    created: str
    problem: str = ""


class EngineCache:
    """A directory of engines, each with a sidecar `<engine>.json` recording its full key."""

    def __init__(self, root: str | os.PathLike[str] = "engines") -> None:
        self.root = Path(root)

    def path_for(self, key: EngineKey) -> Path:
        return self.root / key.filename

    @staticmethod
    def sidecar_for(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)

    def timing_cache_path(self, trt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> Path:
        """One timing cache per (TensorRT version, GPU, compute capability), shared by all engines."""
        major, minor = compute_capability
        return self.root / f"timing-trt{_sanitise(trt_version)}-{_sanitise(gpu_name)}-sm{major}{minor}.cache"

    def _read_sidecar(self, engine_path: Path) -> tuple[dict[str, Any] | None, str]:
        sidecar = self.sidecar_for(engine_path)
        if not sidecar.is_file():
            return None, f"{engine_path.name} has no sidecar {sidecar.name}"
        try:
            data = json.loads(sidecar.read_text())
            key = data["key"]
            size = int(data["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"sidecar {sidecar.name} is unreadable"
        if not isinstance(key, dict):
            return None, f"sidecar {sidecar.name} is unreadable"
        try:
            actual = engine_path.stat().st_size
        except OSError:
            return None, f"{engine_path.name} is unreadable"
        if actual != size:
            return None, f"{engine_path.name} is {actual} bytes, its sidecar says {size} (truncated?)"
        return key, ""

    def lookup(self, key: EngineKey) -> Path | None:
        """The engine for exactly this key, or None (never an engine whose sidecar key differs)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        recorded, _ = self._read_sidecar(path)
        return path if recorded == key.to_dict() else None

    def entries(self) -> list[CachedEngine]:
        """Every engine file under root, newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.glob(f"*{ENGINE_SUFFIX}"):
            if not path.is_file():
                continue
            key, problem = self._read_sidecar(path)
            stat = path.stat()
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stat.st_mtime))
            found.append(CachedEngine(path, key, stat.st_size, created, problem))
        return sorted(found, key=lambda e: (e.path.stat().st_mtime, e.path.name), reverse=True)

    def status(self, key: EngineKey) -> CacheStatus:
        """hit / miss / stale for a key; for stale, `reason` names the fields that differ."""
        path = self.path_for(key)
        want = key.to_dict()
        if path.is_file():
            recorded, problem = self._read_sidecar(path)
            if recorded == want:
                return CacheStatus("hit", path)
            reason = problem or describe_changes(recorded or {}, want)
            return CacheStatus("stale", path, reason, stale_path=path)
        same = [
            e
            for e in self.entries()
            if e.key is not None and e.key.get("onnx_name") == key.onnx_name and e.key.get("kind") == key.kind
        ]
        if not same:
            return CacheStatus("miss", path)

        def n_diff(e: CachedEngine) -> int:
            return sum(e.key.get(f) != want.get(f) for f in FIELD_NAMES)  # type: ignore[union-attr]

        closest = min(same, key=n_diff)  # entries are newest first; min keeps the newest among equals
        return CacheStatus("stale", path, describe_changes(closest.key or {}, want), stale_path=closest.path)

    def store(self, key: EngineKey, engine: bytes) -> Path:
        """Write the engine and its sidecar atomically (a reader never sees a partial file); returns its path."""
        if not engine:
            raise VistError("refusing to store an empty engine")
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        sidecar = {
            "key": key.to_dict(),
            "digest": key.digest,
            "size": len(engine),
            "sha256": hashlib.sha256(engine).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # Remove a previous sidecar first: until the new one is in place the engine is not "hit".
        with contextlib.suppress(FileNotFoundError):
            self.sidecar_for(path).unlink()
        atomic_write(path, engine, fsync=True)
        atomic_write(self.sidecar_for(path), json.dumps(sidecar, indent=2) + "\n", fsync=True)
        return path


# ----------------------------------------------------------------------------------- device identity


def device_identity(device: int | None = None) -> tuple[str, tuple[int, int]]:
    """(GPU name, compute capability) of a CUDA device, from torch.cuda; VistError when there is none."""
    import torch

    if not torch.cuda.is_available():
        raise VistError("no CUDA device is visible; TensorRT engines are built for (and on) one GPU")
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), (int(major), int(minor))


def require_tensorrt():  # type: ignore[no-untyped-def]
    """The tensorrt module, or a one-line VistError with the install hint."""
    try:
        import tensorrt
    except ImportError:
        raise VistError(f"TensorRT is not installed: {TRT_INSTALL_HINT}") from None
    except OSError as exc:  # the wheel is there but its CUDA libraries are not
        raise VistError(f"TensorRT cannot load ({first_line(exc)[:120]}): {TRT_INSTALL_HINT}") from None
    return tensorrt


def tensorrt_version() -> str:
    """The installed TensorRT version (`tensorrt.__version__`); VistError when it is not installed."""
    return str(require_tensorrt().__version__)
