"""The ViT token graph as an ONNX file: exported once per extractor spec, checked before reuse."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vist_rt.export.onnx import OnnxFileError, export_module, read_meta

KIND = "features"
INPUT, OUTPUT = "pixels", "tokens"


def onnx_filename(spec: dict[str, Any]) -> str:
    """A file name that changes with everything in the spec that changes the graph."""
    w = spec["weights"]
    ident = w.get("sha256", "")[:12] if w["kind"] == "file" else f"random{w['seed']}-{spec['weights_sha256'][:8]}"
    norm = "-norm" if spec.get("norm") else ""
    return f"{spec['kind']}-{spec['backbone']}-b{spec['block']}{norm}-{spec['image_size']}-{ident}.onnx"


def export_features_onnx(module: nn.Module, spec: dict[str, Any], path: str | Path, opset: int = 17) -> Path:
    """Export a token module (`pixels [N,3,S,S] -> tokens [N,T,D]`, dynamic N) with `spec` as its identity."""
    s = int(spec["image_size"])
    dummy = torch.zeros(1, 3, s, s)
    module = copy.deepcopy(module).to(dtype=torch.float32, device="cpu").eval()  # never move the caller's module
    with torch.no_grad():
        return export_module(
            module,
            (dummy,),
            path,
            kind=KIND,
            spec=spec,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset=opset,
        )


def check_features_onnx(path: str | Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The file's metadata if it is the token graph of exactly `spec`, else OnnxFileError naming what differs."""
    meta = read_meta(path, kind=KIND)
    theirs = meta["spec"]
    diff = sorted(k for k in set(spec) | set(theirs) if spec.get(k) != theirs.get(k))
    if diff:
        shown = "; ".join(f"{k}: file {theirs.get(k)!r}, wanted {spec.get(k)!r}" for k in diff[:3])
        raise OnnxFileError(f"{path} is the ONNX graph of another extractor ({shown})")
    return meta


def ensure_features_onnx(
    module: nn.Module, spec: dict[str, Any], cache_dir: Path, log: Callable[[str], None] = print
) -> Path:
    """The ONNX file for `spec` under cache_dir/onnx/, exported now if missing or stale (never used stale)."""
    path = Path(cache_dir) / "onnx" / onnx_filename(spec)
    if path.is_file():
        try:
            check_features_onnx(path, spec)
            log(f"reusing ONNX graph {path}")
            return path
        except OnnxFileError as exc:
            log(f"re-exporting ONNX graph: {exc}")
    else:
        log(f"exporting ONNX graph to {path}")
    return export_features_onnx(module, spec, path)
