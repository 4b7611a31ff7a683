"""Compile a vist-rt ONNX file into a serialized TensorRT engine (TensorRT 10 Python API), and `get_or_build`:
the engine from the cache (`vist_rt.trt.cache`) when it has a current one, else built and stored.

`import tensorrt` happens only inside `build_engine`. The pieces that decide things (which layers stay
in fp32, how progress events are forwarded) are plain Python and tested on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vist_rt.errors import VistError
from vist_rt.files import atomic_write
from vist_rt.trt.cache import (
    PRECISIONS,
    EngineCache,
    device_identity,
    engine_key,
    profile_is_static,
    require_tensorrt,
    resolve_profile,
    tensorrt_version,
)

# --------------------------------------------------------------------------------------- fp16 policy


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """What the fp16 policy needs to know about one network layer (TensorRT names, e.g. "REDUCE", "POW")."""

    type: str  # trt.LayerType member name
    op: str | None = None  # ElementWiseOperation / UnaryOperation member name for ELEMENTWISE / UNARY layers
    inputs_from: tuple[int, ...] = ()  # indices of the layers producing this layer's inputs
    float_output: bool = True  # every output is a float tensor (shape/index arithmetic is never pinned)


_ANCHORS = {"NORMALIZATION", "REDUCE"}  # fused LayerNorm, and the mean/variance reductions of a decomposed one
_DECOMPOSED_ELEMENTWISE = {"SUB", "SUM", "DIV", "PROD"}  # x - mean, var + eps, d / sqrt(...), when fed by them


def fp32_layers(layers: Sequence[LayerInfo]) -> list[int]:
    """Indices of the layers an fp16 engine keeps in fp32: normalisation and the pieces of a decomposed LayerNorm.

    Kept: NORMALIZATION layers (LayerNormalization, opset >= 17); REDUCE layers (mean and variance);
    UNARY SQRT; ELEMENTWISE POW; and ELEMENTWISE SUB / SUM / DIV / PROD fed directly by a REDUCE or
    a SQRT (x - mean, var + eps, d / sqrt(var + eps)). Only layers with float outputs.
    """
    keep: set[int] = set()
    for i, layer in enumerate(layers):
        if not layer.float_output:
            continue
        if (
            layer.type in _ANCHORS
            or (layer.type == "UNARY" and layer.op == "SQRT")
            or (layer.type == "ELEMENTWISE" and layer.op == "POW")
        ):
            keep.add(i)
    for i, layer in enumerate(layers):
        if not layer.float_output or layer.type != "ELEMENTWISE" or layer.op not in _DECOMPOSED_ELEMENTWISE:
            continue
        feeders = [layers[j] for j in layer.inputs_from if 0 <= j < len(layers)]
        if any(f.type == "REDUCE" or (f.type == "UNARY" and f.op == "SQRT") for f in feeders):
            keep.add(i)
    return sorted(keep)


def _network_layers(trt: Any, network: Any) -> list[LayerInfo]:
    """Describe a TensorRT network's layers for `fp32_layers`."""
    producer: dict[str, int] = {}
    raw = [network.get_layer(i) for i in range(network.num_layers)]
    for i, layer in enumerate(raw):
        for k in range(layer.num_outputs):
            producer[layer.get_output(k).name] = i
    floats = {trt.float32, trt.float16}
    infos = []
    for layer in raw:
        kind = layer.type.name
        op = None
        if layer.type == trt.LayerType.ELEMENTWISE:
            layer.__class__ = trt.IElementWiseLayer  # the network hands out ILayer; downcast to read .op
            op = layer.op.name
        elif layer.type == trt.LayerType.UNARY:
            layer.__class__ = trt.IUnaryLayer
            op = layer.op.name
        inputs = [layer.get_input(k) for k in range(layer.num_inputs)]
        infos.append(
            LayerInfo(
                type=kind,
                op=op,
                inputs_from=tuple(producer[t.name] for t in inputs if t is not None and t.name in producer),
                float_output=all(layer.get_output(k).dtype in floats for k in range(layer.num_outputs)),
            )
        )
    return infos


# ------------------------------------------------------------------------------------------ progress


class BuildProgress(Protocol):
    """Receives TensorRT build progress (what the CLI shows); `step_complete` returning False cancels."""

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None: ...

    def step_complete(self, phase: str, step: int) -> bool: ...

    def phase_finish(self, phase: str) -> None: ...


class ProgressForwarder:
    """Forwards TensorRT's progress calls to a `BuildProgress`, thread-safely and never raising into TensorRT.

    An exception in the sink (or Ctrl-C) cancels the build (step_complete returns False); `error` keeps it
    so that the caller can re-raise it once TensorRT has returned.
    """

    def __init__(self, sink: BuildProgress | None) -> None:
        self.sink = sink
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def _call(self, name: str, *args: Any) -> Any:
        if self.sink is None or self.error is not None:
            return None
        with self._lock:
            try:
                return getattr(self.sink, name)(*args)
            except BaseException as exc:  # must not unwind through TensorRT's C++ frames
                self.error = exc
                return None

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        self._call("phase_start", phase_name, parent_phase, int(num_steps))

    def step_complete(self, phase_name: str, step: int) -> bool:
        result = self._call("step_complete", phase_name, int(step))
        return self.error is None and result is not False

    def phase_finish(self, phase_name: str) -> None:
        self._call("phase_finish", phase_name)


def _make_monitor(trt: Any, forwarder: ProgressForwarder) -> Any:
    """A `trt.IProgressMonitor` whose three callbacks go to `forwarder`."""

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            forwarder.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return forwarder.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            forwarder.phase_finish(phase_name)

    return _Monitor()


# --------------------------------------------------------------------------------------------- build


def _first_line(text: str, limit: int = 240) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def _parser_error(parser: Any) -> str:
    if parser.num_errors == 0:
        return "unknown parser error"
    err = parser.get_error(0)
    desc = err.desc() if hasattr(err, "desc") else str(err)
    node = ""
    if hasattr(err, "node_name") and err.node_name():
        node = f" at node {err.node_name()}"
    elif hasattr(err, "node") and err.node() >= 0:
        node = f" at node #{err.node()}"
    more = f" (+{parser.num_errors - 1} more)" if parser.num_errors > 1 else ""
    return f"{_first_line(desc)}{node}{more}"


def build_engine(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    input_shapes: Mapping[str, Any] | None = None,
    timing_cache_path: str | os.PathLike[str] | None = None,
    workspace_gib: float = 4,
    progress: BuildProgress | None = None,
) -> bytes:
    """Parse `onnx_path` and build a serialized engine for the current GPU.

    precision "fp16": FP16 kernels allowed, with normalisation (and decomposed-LayerNorm pieces) kept in
    fp32 via precision constraints; "fp32": FP32 only (TF32 disabled). Dynamic dims get one optimisation
    profile from `input_shapes` (see `resolve_profile`). The timing cache at `timing_cache_path` is
    loaded when present and saved after the build.
    """
    from vist_rt.export.onnx import read_meta

    if precision not in PRECISIONS:
        raise VistError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    onnx_path = Path(onnx_path)
    read_meta(onnx_path)  # a missing or foreign file is refused in one line before TensorRT sees it
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode; weakly typed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise VistError(f"TensorRT cannot parse {onnx_path}: {_parser_error(parser)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16") or not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS"):
            raise VistError(
                f"TensorRT {trt.__version__} has no weakly typed fp16 builds (removed in TensorRT 11); "
                'use --precision fp32, or pip install "tensorrt>=10,<11"'
            )
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for index in fp32_layers(_network_layers(trt, network)):
            layer = network.get_layer(index)
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
    elif hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)

    graph_inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        graph_inputs[tensor.name] = [int(d) for d in tensor.shape]
    profile = resolve_profile(graph_inputs, input_shapes)
    dynamic = any(d < 0 for dims in graph_inputs.values() for d in dims)
    if dynamic or not profile_is_static(profile):
        opt_profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profile.items():
            opt_profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(opt_profile)

    timing_path = Path(timing_cache_path) if timing_cache_path is not None else None
    blob = timing_path.read_bytes() if timing_path is not None and timing_path.is_file() else b""
    try:
        timing_cache = config.create_timing_cache(blob)
        attached = timing_cache is not None and config.set_timing_cache(timing_cache, ignore_mismatch=False)
    except (RuntimeError, TypeError, ValueError):  # a corrupt cache file
        attached = False
    if not attached:  # an unusable old cache (other TensorRT/GPU, corrupt): start afresh
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    forwarder = ProgressForwarder(progress)
    if progress is not None:
        config.progress_monitor = _make_monitor(trt, forwarder)

    serialized = builder.build_serialized_network(network, config)
    if forwarder.error is not None:
        raise forwarder.error
    if serialized is None:
        raise VistError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    if timing_path is not None:
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(timing_path, bytes(memoryview(config.get_timing_cache().serialize())), fsync=True)
    return bytes(memoryview(serialized))


# ------------------------------------------------------------------------------------------ get/build


Builder = Callable[..., bytes]


def get_or_build(
    onnx_path: str | os.PathLike[str],
    precision: str = "fp16",
    *,
    input_shapes: Mapping[str, Any] | None = None,
    engines: str | os.PathLike[str] = "engines",
    trt_version: str | None = None,
    gpu_name: str | None = None,
    compute_capability: tuple[int, int] | None = None,
    builder: Builder | None = None,
    force: bool = False,
    workspace_gib: float = 4,
    progress: Any = None,
    log: Callable[[str], Any] = print,
) -> Path:
    """The path of the engine for `onnx_path`: reused when the cache has it, built (and stored) otherwise.

    hit -> "reusing <path>"; miss -> build; stale -> "rebuilding: <what changed>" then build; force ->
    build regardless. `builder(onnx_path, precision=, input_shapes=, timing_cache_path=, workspace_gib=,
    progress=) -> bytes` defaults to `build_engine`; tests inject a fake.
    """
    if trt_version is None:
        trt_version = tensorrt_version()
    if gpu_name is None or compute_capability is None:
        name, cc = device_identity()
        gpu_name = name if gpu_name is None else gpu_name
        compute_capability = cc if compute_capability is None else compute_capability
    key = engine_key(
        onnx_path,
        precision=precision,
        input_shapes=input_shapes,
        trt_version=trt_version,
        gpu_name=gpu_name,
        compute_capability=compute_capability,
    )
    cache = EngineCache(engines)
    state = cache.status(key)
    if state.status == "hit" and not force:
        path = cache.lookup(key)
        if path is not None:
            log(f"reusing {path}")
            return path
    if force:
        log(f"building {state.path.name} (--force)")
    elif state.status == "stale":
        what = state.stale_path.name if state.stale_path else state.path.name
        log(f"rebuilding: {state.reason} (cached {what} is stale)")
    else:
        log(f"building {state.path.name} (not in {cache.root})")
    if builder is None:
        builder = build_engine
    engine = builder(
        onnx_path,
        precision=precision,
        input_shapes=key.profile,
        timing_cache_path=cache.timing_cache_path(key.trt_version, key.gpu_name, key.compute_capability),
        workspace_gib=workspace_gib,
        progress=progress,
    )
    path = cache.store(key, bytes(engine))
    log(f"built {path}")
    return path
