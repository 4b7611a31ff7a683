"""Validation of model inputs shared by the offline and streaming models."""

from __future__ import annotations

import torch

from vist_rt.errors import VistError
from vist_rt.model.config import ViSTConfig


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_features(
    features: torch.Tensor, cfg: ViSTConfig, *, streaming: bool, batch: int | None = None, finite: bool = True
) -> None:
    """Raise VistError unless features are `[B, T, N, D]` (offline) or `[B, N, D]` (streaming) and finite.

    finite=False skips the finiteness pass (for a caller that checks a cheaper derived value instead)."""
    if not isinstance(features, torch.Tensor):
        raise VistError(f"features must be a torch.Tensor, got {type(features).__name__}")
    n, d = cfg.tokens, cfg.feature_dim
    b = "B" if batch is None else str(batch)
    expected = f"[{b}, {n}, {d}]" if streaming else f"[B, T, {n}, {d}]"
    want_ndim = 3 if streaming else 4
    ok = features.ndim == want_ndim and features.shape[-2] == n and features.shape[-1] == d
    if ok and batch is not None and features.shape[0] != batch:
        ok = False
    if ok and not streaming and features.shape[1] < 1:
        ok = False
    if not ok:
        raise VistError(f"features must have shape {expected} (grid {cfg.grid}x{cfg.grid}), got {_shape(features)}")
    if not features.is_floating_point():
        raise VistError(f"features must be floating point, got {features.dtype}")
    # one cheap reduction: the sum is non-finite iff some value is (or the values are absurdly large)
    if finite and not bool(torch.isfinite(features.sum())):
        bad = int((~torch.isfinite(features)).sum())
        raise VistError(f"features contain {bad} NaN/inf value(s) (or overflow); refusing to use them")


def check_rf(rf: torch.Tensor, cfg: ViSTConfig, *, streams: int | None = None) -> torch.Tensor:
    """Return rf as `[B, C, grid, grid]` (a `[C, grid, grid]` input gets B=1); raise VistError otherwise.

    streams: a stream's batch; rf must then hold 1 RF set (shared) or one per stream."""
    if not isinstance(rf, torch.Tensor):
        raise VistError(f"rf must be a torch.Tensor, got {type(rf).__name__}")
    g, c = cfg.grid, cfg.cells
    given = rf
    if rf.ndim == 3:
        rf = rf.unsqueeze(0)
    if rf.ndim != 4 or rf.shape[2:] != (g, g) or rf.shape[1] != c:
        raise VistError(
            f"rf must have shape [B, {c}, {g}, {g}] or [{c}, {g}, {g}] ({c} cells on the {g}x{g} token grid), "
            f"got {_shape(given)}"
        )
    if not rf.is_floating_point():
        rf = rf.float()
    if not bool(torch.isfinite(rf).all()):
        raise VistError("rf contains NaN/inf values")
    if streams is not None and rf.shape[0] not in (1, streams):
        raise VistError(f"rf holds {rf.shape[0]} streams, this stream has {streams}")
    return rf
