"""Writing and identifying vist-rt ONNX files.

Every ONNX file vist-rt writes carries one metadata property, `vist_rt`: JSON
`{"format": "vist-rt/onnx", "version": 1, "kind": ..., "spec": {...}}` where `kind` says what the
graph is (`"features"` for a ViT, `"temporal-step"` for the streaming Vi-ST step) and `spec`
identifies the model it came from. Consumers (ONNX Runtime, TensorRT engine builds) check it, so
an ONNX file of another model is refused with one line instead of running silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vist_rt.errors import VistError
from vist_rt.files import atomic_path

FORMAT = "vist-rt/onnx"
VERSION = 1
META_KEY = "vist_rt"
MIN_OPSET = 17


class OnnxFileError(VistError):
    """An ONNX file that is missing, unreadable, or not the graph that is asked for."""


def _require_onnx():  # type: ignore[no-untyped-def]
    try:
        import onnx
    except ImportError:
        raise VistError('ONNX support needs the onnx extra: pip install "vist-rt[onnx]"') from None
    return onnx


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _max_opset() -> int:
    """The highest opset this torch's TorchScript-based exporter writes (20 in torch 2.4-2.14)."""
    try:
        from torch.onnx import _constants
    except ImportError:
        return 20
    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def export_module(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    kind: str,
    spec: Mapping[str, Any],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = MIN_OPSET,
) -> Path:
    """Export `module(*args)` to a self-contained ONNX file at `path` (written atomically) with vist-rt metadata.

    Uses the TorchScript-based exporter (`dynamo=False`): deterministic, no extra dependency, and it
    keeps LayerNormalization as one op (which TensorRT needs to keep normalisation in fp32).
    """
    onnx = _require_onnx()
    max_opset = _max_opset()
    if not MIN_OPSET <= opset <= max_opset:
        raise VistError(f"ONNX opset must be {MIN_OPSET}..{max_opset} (this torch's exporter), got {opset}")
    path = Path(path)
    if path.is_dir():
        raise OnnxFileError(f"cannot write the ONNX file: {path} is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's deprecation/tracer chatter is not the user's business
                torch.onnx.export(
                    module,
                    args,
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
                    do_constant_folding=True,
                )
            model = onnx.load(str(tmp))
            _fix_output_shapes(model, module, args, output_names, dynamic_axes or {})
            del model.metadata_props[:]
            prop = model.metadata_props.add()
            prop.key = META_KEY
            prop.value = json.dumps({"format": FORMAT, "version": VERSION, "kind": kind, "spec": dict(spec)})
            onnx.checker.check_model(model)
            onnx.save(model, str(tmp))
    except OSError as exc:
        raise OnnxFileError(f"cannot write the ONNX file {path}: {exc.strerror or exc}") from None
    return path


def _fix_output_shapes(
    model: Any,
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> None:
    """Write the traced output shapes into the graph (the exporter may leave them symbolic)."""
    with torch.no_grad():
        outs = module(*args)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    by_name = {o.name: o for o in model.graph.output}
    for name, out in zip(output_names, outs):
        dims = by_name[name].type.tensor_type.shape.dim
        dynamic = dynamic_axes.get(name, {})
        for i, size in enumerate(out.shape):
            if i < len(dims) and i not in dynamic:
                dims[i].Clear()
                dims[i].dim_value = int(size)


def read_meta(path: str | os.PathLike[str], *, kind: str | None = None) -> dict[str, Any]:
    """The vist-rt metadata of an ONNX file (`kind`, `spec`, plus `inputs`/`outputs` name -> shape).

    Raises OnnxFileError (one line) for a missing, unreadable or foreign file, or one of another kind.
    """
    onnx = _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a corrupt file
        raise OnnxFileError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise OnnxFileError(f"{path} was not written by vist-rt (no '{META_KEY}' metadata); export it with vist-rt")
    try:
        meta = json.loads(props[META_KEY])
    except json.JSONDecodeError:
        raise OnnxFileError(f"{path}: its '{META_KEY}' metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OnnxFileError(f"{path}: metadata format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise OnnxFileError(f"{path}: vist-rt ONNX version {meta.get('version')!r}; this vist-rt reads {VERSION}")
    if kind is not None and meta.get("kind") != kind:
        raise OnnxFileError(f"{path} holds a {meta.get('kind')!r} graph, expected a {kind!r} graph")

    def shapes(values) -> dict[str, list[int | str]]:  # type: ignore[no-untyped-def]
        return {
            v.name: [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim] for v in values
        }

    init = {i.name for i in model.graph.initializer}
    meta["inputs"] = {k: v for k, v in shapes(model.graph.input).items() if k not in init}
    meta["outputs"] = shapes(model.graph.output)
    meta["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return meta
