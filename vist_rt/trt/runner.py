"""Run a serialized TensorRT engine on torch CUDA tensors (TensorRT 10 name-based I/O, `execute_async_v3`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vist_rt.errors import VistError
from vist_rt.trt.cache import EngineCache, device_identity, require_tensorrt

_TRT_TO_TORCH = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}


def _torch_dtype(trt_dtype: Any) -> torch.dtype:
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _TRT_TO_TORCH:
        raise VistError(f"engine tensor type {name} has no torch equivalent here")
    return _TRT_TO_TORCH[name]


def _fmt(shape: Any) -> str:
    return "x".join("?" if int(d) < 0 else str(int(d)) for d in shape)


def check_sidecar(engine_path: Path, trt_version: str, gpu_name: str, compute_capability: tuple[int, int]) -> None:
    """Refuse an engine whose sidecar says it was built for another TensorRT or GPU (no sidecar: no check)."""
    sidecar = EngineCache.sidecar_for(engine_path)
    if not sidecar.is_file():
        return
    try:
        key = json.loads(sidecar.read_text())["key"]
    except (OSError, ValueError, KeyError, TypeError):
        raise VistError(f"{sidecar} is unreadable; rebuild the engine with `vist-rt engine build`") from None
    built = (key.get("trt_version"), key.get("gpu_name"), tuple(key.get("compute_capability") or ()))
    here = (trt_version, gpu_name, tuple(compute_capability))
    if built != here:
        raise VistError(
            f"{engine_path.name} was built for TensorRT {built[0]} on {built[1]}, this is TensorRT {here[0]} "
            f"on {here[1]}; rebuild it with `vist-rt engine build`"
        )


class TensorRTRunner:
    """One deserialised engine and execution context; call it with {input name: CUDA tensor}.

    Outputs are allocated once (again only when a dynamic input shape changes) and returned as the same
    tensors on every call: clone them to keep a result past the next call. Use as a context manager, or
    call `close()`, to free the engine.
    """

    def __init__(self, engine_path: str | os.PathLike[str], device: str | torch.device = "cuda") -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise VistError(f"engine file not found: {self.path}")
        trt = require_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise VistError(f"the TensorRT runner needs a CUDA device, got {device!r}")
        if not torch.cuda.is_available():
            raise VistError("the TensorRT runner needs a CUDA device; none is visible")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        name, cc = device_identity(self.device.index)
        check_sidecar(self.path, str(trt.__version__), name, cc)

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise VistError(
                    f"TensorRT {trt.__version__} cannot load {self.path} (built by another TensorRT version or for "
                    "another GPU?); rebuild it with `vist-rt engine build`"
                )
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise VistError(f"TensorRT could not create an execution context for {self.path} (out of memory?)")
            self._stream = torch.cuda.Stream(self.device)

        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # engine shapes; -1 marks a dynamic dim
        self.dtypes: dict[str, torch.dtype] = {}
        for i in range(self._engine.num_io_tensors):
            tensor = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self.input_names if is_input else self.output_names).append(tensor)
            self.shapes[tensor] = tuple(int(d) for d in self._engine.get_tensor_shape(tensor))
            self.dtypes[tensor] = _torch_dtype(self._engine.get_tensor_dtype(tensor))
        self._outputs: dict[str, torch.Tensor] = {}
        self._input_shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the context, engine and runtime (in that order) and the output buffers."""
        for attr in ("_context", "_engine", "_runtime"):
            if getattr(self, attr, None) is not None:
                setattr(self, attr, None)
        self._outputs = {}

    @property
    def closed(self) -> bool:
        return getattr(self, "_context", None) is None

    # ----------------------------------------------------------------------- run

    def _check(self, inputs: Mapping[str, torch.Tensor]) -> None:
        if set(inputs) != set(self.input_names):
            raise VistError(f"engine inputs are {', '.join(self.input_names)}; got {', '.join(inputs) or 'nothing'}")
        for name in self.input_names:
            x = inputs[name]
            if not isinstance(x, torch.Tensor):
                raise VistError(f"input {name!r} must be a torch tensor, got {type(x).__name__}")
            if x.device != self.device:
                raise VistError(f"input {name!r} is on {x.device}; this engine runs on {self.device}")
            if x.dtype != self.dtypes[name]:
                raise VistError(f"input {name!r} is {x.dtype}; the engine takes {self.dtypes[name]}")
            want = self.shapes[name]
            if len(x.shape) != len(want) or any(w >= 0 and w != s for w, s in zip(want, x.shape)):
                raise VistError(f"input {name!r} has shape {_fmt(x.shape)}; the engine takes {_fmt(want)}")
            if any(w < 0 for w in want):
                mn, _, mx = (tuple(int(d) for d in s) for s in self._engine.get_tensor_profile_shape(name, 0))
                if any(not a <= s <= b for a, s, b in zip(mn, x.shape, mx)):
                    raise VistError(
                        f"input {name!r} has shape {_fmt(x.shape)}; the engine was built for {_fmt(mn)} to {_fmt(mx)}"
                    )

    def _prepare_outputs(self, inputs: Mapping[str, torch.Tensor]) -> None:
        changed = not self._outputs
        for name in self.input_names:
            shape = tuple(inputs[name].shape)
            if self._input_shapes.get(name) != shape:
                if not self._context.set_input_shape(name, shape):
                    raise VistError(f"TensorRT refused shape {_fmt(shape)} for input {name!r}")
                self._input_shapes[name] = shape
                changed = True
        if changed:
            self._outputs = {
                name: torch.empty(
                    tuple(int(d) for d in self._context.get_tensor_shape(name)),
                    dtype=self.dtypes[name],
                    device=self.device,
                )
                for name in self.output_names
            }
            for name, out in self._outputs.items():
                self._context.set_tensor_address(name, out.data_ptr())

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the engine; inputs are checked against its names, shapes and dtypes (VistError on mismatch)."""
        if self.closed:
            raise VistError(f"the TensorRT runner for {self.path.name} is closed")
        self._check(inputs)
        with torch.cuda.device(self.device):
            self._prepare_outputs(inputs)
            contiguous = {name: inputs[name].contiguous() for name in self.input_names}
            for name, x in contiguous.items():
                self._context.set_tensor_address(name, x.data_ptr())
            # Run on our own stream (TensorRT warns about, and synchronises around, the default stream),
            # ordered after the caller's pending work and before anything the caller does next.
            current = torch.cuda.current_stream(self.device)
            self._stream.wait_stream(current)
            for x in contiguous.values():
                x.record_stream(self._stream)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise VistError(f"TensorRT failed to run {self.path.name} (its log above says why)")
            current.wait_stream(self._stream)
        return dict(self._outputs)
