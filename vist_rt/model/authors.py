"""Loading the Vi-ST authors' released (PyTorch Lightning) checkpoint."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from vist_rt.errors import CheckpointError
from vist_rt.model.config import ViSTConfig
from vist_rt.model.tensors import mismatch_report
from vist_rt.model.vist import ViST
from vist_rt.tensorfile import read_tensor_file

PREFIX = "net."


def _read(path: Path) -> Mapping[str, object]:
    return read_tensor_file(path, "authors' checkpoint", CheckpointError)


def _net_tensors(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping):
        raise CheckpointError("checkpoint 'state_dict' is not a dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    net = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    if not net and "stage1.conv_1x1.weight" in tensors:  # a bare state_dict of the module itself
        net = tensors
    if not net:
        some = ", ".join(sorted(tensors)[:4]) or "no tensors"
        raise CheckpointError(f"no Vi-ST tensors found (expected names like net.stage1.conv_1x1.weight); found {some}")
    return net


def infer_config(tensors: Mapping[str, torch.Tensor]) -> ViSTConfig:
    """Sizes of the model that the tensors (names without `net.`) belong to."""
    try:
        return _infer(tensors)
    except CheckpointError:
        raise
    except (IndexError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"cannot infer the model size: tensor shapes are not Vi-ST's ({exc})") from None


def _infer(tensors: Mapping[str, torch.Tensor]) -> ViSTConfig:
    try:
        w_in = tensors["stage1.conv_1x1.weight"]
        cells = tensors["stage1.conv_out.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the model size: missing {PREFIX}{exc.args[0]}") from None
    layers = {int(m.group(1)) for k in tensors if (m := re.match(r"stage1\.layers\.(\d+)\.", k))}
    windows = []
    k = 1
    while f"msb_{k}.mapping.weight" in tensors:
        js = sorted(
            {int(m.group(1)) for n in tensors if (m := re.match(rf"msb_{k}\.embed\.(\d+)\.0\.conv\.weight$", n))}
        )
        windows.append(tuple(int(tensors[f"msb_{k}.embed.{j}.0.conv.weight"].shape[2]) for j in js))
        k += 1
    readout = tensors.get(f"msb_{k}.weight")
    if readout is None or not windows:
        raise CheckpointError(f"cannot infer the model size: no CMST blocks or readout {PREFIX}msb_{k}.weight")
    side = math.isqrt(readout.shape[1] // max(cells, 1))
    return ViSTConfig(
        feature_dim=int(w_in.shape[1]),
        video_layers=len(layers),
        video_dim=int(w_in.shape[0]),
        cells=int(cells),
        grid=side + 2 * len(windows),
        windows=tuple(windows),
    )


def from_authors_checkpoint(
    state_dict_or_path: Mapping[str, object] | str | Path, config: ViSTConfig | None = None
) -> ViST:
    """Build a ViST (eval mode) from the authors' checkpoint: a path (.ckpt via weights_only, or
    .safetensors), a Lightning checkpoint dict, or its state_dict. Mismatches raise CheckpointError."""
    obj = _read(Path(state_dict_or_path)) if isinstance(state_dict_or_path, (str, Path)) else state_dict_or_path
    tensors = _net_tensors(obj)
    cfg = config if config is not None else infer_config(tensors)
    model = ViST(cfg)
    problem = mismatch_report(tensors, model, prefix=PREFIX)
    if problem:
        raise CheckpointError(f"authors' checkpoint does not fit ViST({_brief(cfg)}): {problem}")
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _brief(cfg: ViSTConfig) -> str:
    return f"D={cfg.feature_dim}, C={cfg.cells}, grid={cfg.grid}, layers={cfg.video_layers}"
