"""vist-rt checkpoints: one safetensors file holding the weights, the RF condition and a JSON config.

Layout (format "vist-rt/checkpoint", version 1):
- tensors `model.<name>` for every entry of `ViST.state_dict()`, and `rf` `[C, grid, grid]`;
- metadata key `vist_rt`: JSON with `format`, `version`, `model` (ViSTConfig), `fps`,
  `extractor` (feature extractor spec), `cell_ids`, `units`, `meta` (provenance and the rest).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

import vist_rt
from vist_rt.errors import CheckpointError, VistError, first_line
from vist_rt.files import atomic_path
from vist_rt.model.config import ViSTConfig
from vist_rt.model.tensors import mismatch_report
from vist_rt.model.vist import ViST

FORMAT = "vist-rt/checkpoint"
VERSION = 1
META_KEY = "vist_rt"
MODEL_PREFIX = "model."


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and everything needed to run it."""

    model: ViST
    rf: torch.Tensor  # [C, grid, grid], the AdaLN condition on the token grid
    fps: float  # model frame rate (Hz): the unit of the learned temporal filters
    extractor: dict[str, Any]  # feature extractor spec
    cell_ids: list[str]
    units: str
    meta: dict[str, Any]  # provenance and anything else saved with it
    path: Path | None = None

    @property
    def config(self) -> ViSTConfig:
        """The model's configuration."""
        return self.model.config


def _check_rf(rf: torch.Tensor, cfg: ViSTConfig) -> torch.Tensor:
    if not isinstance(rf, torch.Tensor):
        rf = torch.as_tensor(rf)
    if rf.ndim == 4 and rf.shape[0] == 1:
        rf = rf[0]
    want = (cfg.cells, cfg.grid, cfg.grid)
    if tuple(rf.shape) != want:
        raise CheckpointError(f"rf must be [{want[0]}, {want[1]}, {want[2]}] for this model, got {list(rf.shape)}")
    rf = rf.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(rf).all()):
        raise CheckpointError("rf contains NaN/inf values")
    return rf


def _check_fps(fps: object) -> float:
    if isinstance(fps, bool):
        raise CheckpointError(f"fps must be a number, got {fps!r}")
    try:
        value = float(fps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CheckpointError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"fps must be a positive frame rate in Hz, got {fps!r}")
    return value


def _check_cell_ids(cell_ids: object, cells: int) -> list[str]:
    if cell_ids is None:
        return [str(i) for i in range(cells)]
    if not isinstance(cell_ids, (list, tuple, np.ndarray)):
        raise CheckpointError(f"cell_ids must be a list of {cells} ids, got {type(cell_ids).__name__}")
    ids = [str(c) for c in cell_ids]
    if len(ids) != cells:
        raise CheckpointError(f"cell_ids has {len(ids)} entries but the model predicts {cells} cells")
    if len(set(ids)) != len(ids):
        raise CheckpointError("cell_ids are not unique")
    return ids


def save_checkpoint(
    path: str | Path,
    model: ViST,
    *,
    rf: torch.Tensor,
    fps: float,
    extractor: dict[str, Any],
    cell_ids: list[str] | None = None,
    **meta: Any,
) -> Path:
    """Write model + rf `[C, grid, grid]` + config to `path` (safetensors), atomically; returns the path.

    `units` in meta names the unit of the rates (default "a.u."); every other keyword is stored in `meta`.
    """
    from safetensors.torch import save_file

    cfg = model.config
    if not isinstance(extractor, Mapping):
        raise CheckpointError(f"extractor must be a dict (the extractor spec), got {type(extractor).__name__}")
    units = str(meta.pop("units", "a.u."))
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": cfg.to_dict(),
        "fps": _check_fps(fps),
        "extractor": dict(extractor),
        "cell_ids": _check_cell_ids(cell_ids, cfg.cells),
        "units": units,
        "meta": {"vist_rt_version": vist_rt.__version__, **meta},
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    tensors = {MODEL_PREFIX + k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    tensors["rf"] = _check_rf(rf, cfg).clone()
    from safetensors import SafetensorError

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={META_KEY: text})
    except (OSError, SafetensorError) as exc:  # safetensors reports its write errors as its own error
        raise CheckpointError(f"cannot write checkpoint {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return path


def _read_file(path: Path, *, tensors: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The checked header and (unless `tensors` is False) every tensor of a checkpoint file."""
    from safetensors import SafetensorError, safe_open

    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (.safetensors)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            found = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = first_line(exc) or type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from None
    return _parse_header(path, metadata), found


class Summary(NamedTuple):
    """What a checkpoint's header says, read without its tensors (cheap: checks before any model loads)."""

    config: ViSTConfig
    fps: float
    extractor: dict[str, Any]


def read_summary(path: str | Path) -> Summary:
    """A checkpoint's config, frame rate and extractor spec from its header only; one CheckpointError line."""
    path = Path(path)
    header, _ = _read_file(path, tensors=False)
    try:
        return Summary(ViSTConfig.from_dict(header["model"]), _check_fps(header["fps"]), dict(header["extractor"]))
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint config lacks '{exc.args[0]}'") from None
    except (VistError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None


def _parse_header(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The vist-rt header in a safetensors file's metadata, checked (format and version)."""
    if META_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a vist-rt checkpoint (no '{META_KEY}' metadata)")
    try:
        header = json.loads(metadata[META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint config is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} config")
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {header.get('version')!r}, this vist-rt reads {VERSION}"
        )
    return header


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint written by save_checkpoint; any problem is one CheckpointError line."""
    path = Path(path)
    header, tensors = _read_file(path)
    try:
        cfg = ViSTConfig.from_dict(header["model"])
        fps = _check_fps(header["fps"])
        extractor = header["extractor"]
        units = str(header.get("units", "a.u."))
        meta = header.get("meta", {})
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint config lacks '{exc.args[0]}'") from None
    except VistError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if not isinstance(extractor, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: 'extractor' and 'meta' must be JSON objects")
    try:
        cell_ids = _check_cell_ids(header.get("cell_ids"), cfg.cells)
        rf = tensors.pop("rf", None)
        if rf is None:
            raise CheckpointError("no 'rf' tensor")
        rf = _check_rf(rf, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    others = sorted(k for k in tensors if not k.startswith(MODEL_PREFIX))
    model = ViST(cfg)
    problem = mismatch_report(weights, model, prefix=MODEL_PREFIX)
    if others:
        problem = "; ".join(p for p in (problem, "unexpected " + ", ".join(others[:4])) if p)
    if problem:
        raise CheckpointError(f"{path} does not match its config: {problem}")
    model.load_state_dict(weights, strict=False)
    model = model.to(device).eval()
    return Checkpoint(model, rf.to(device), fps, extractor, cell_ids, units, meta, path)
