"""The ViT token graph as an ONNX file: exported once per extractor spec, checked before reuse."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vist_rt.errors import VistError, first_line
from vist_rt.export.onnx import META_KEY, OnnxFileError, export_module, file_sha256, read_meta
from vist_rt.export.ort import require_ort
from vist_rt.files import atomic_path

KIND = "features"
INPUT, OUTPUT = "pixels", "tokens"
# int8: ONNX Runtime's dynamic quantization (weights int8 per channel, activations scaled per call: no
# calibration set); bump INT8_VERSION when these settings change, so that cached files are rebuilt
INT8_VERSION = 1
INT8_SETTINGS = {"method": "onnxruntime.quantize_dynamic", "weights": "QInt8", "per_channel": True, "ops": ["MatMul"]}


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


def int8_key(source: Path) -> dict[str, Any]:
    """What makes an int8 graph: its fp32 source's bytes, the quantization settings and the ONNX Runtime version."""
    ort = require_ort()
    sha = file_sha256(source)
    return {"version": INT8_VERSION, **INT8_SETTINGS, "source_sha256": sha, "onnxruntime": ort.__version__}


def ensure_int8_onnx(source: Path, spec: dict[str, Any], log: Callable[[str], None] = print) -> Path:
    """The int8 graph of the fp32 features graph `source` (next to it, `*-int8.onnx`), quantized now if missing,
    stale (other source, settings or ONNX Runtime) or unreadable; never used stale."""
    path = source.with_name(source.stem + "-int8.onnx")
    want = int8_key(source)
    if path.is_file():
        try:
            got = check_features_onnx(path, spec).get("int8")
            if got == want:
                log(f"reusing int8 graph {path}")
                return path
            changed = sorted(k for k in want if not isinstance(got, dict) or got.get(k) != want[k])
            log(f"re-quantizing int8 graph {path}: {', '.join(changed)} changed")
        except OnnxFileError as exc:
            log(f"re-quantizing int8 graph: {exc}")
    else:
        log(f"quantizing the ViT to int8: {path}")
    return _quantize(source, path, want)


def _quantize(source: Path, path: Path, key: dict[str, Any]) -> Path:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # the quantizer's advice on pre-processing goes to the root logger
        with atomic_path(path) as tmp:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=INT8_SETTINGS["ops"])  # fmt: skip
            model = onnx.load(str(tmp))
            props = {p.key: p for p in model.metadata_props}
            meta = json.loads(props[META_KEY].value)
            props[META_KEY].value = json.dumps({**meta, "int8": key})
            onnx.save(model, str(tmp))
    except OSError as exc:
        raise OnnxFileError(f"cannot write the int8 graph {path}: {exc.strerror or exc}") from None
    except (KeyError, ValueError, RuntimeError) as exc:
        raise VistError(f"cannot quantize {source} to int8: {first_line(exc)[:200]}") from None
    finally:
        root.setLevel(level)
    return path
