"""Evaluating a checkpoint on a dataset movie the way live users get it: the streaming model, checked
against the offline forward; CC, SD-KL, noise-ceiling-normalised CC; an LN baseline; plots."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.data.dataset import open_dataset
from vist_rt.data.paths import check_output_dir
from vist_rt.data.simulate import noise_ceiling
from vist_rt.errors import VistError
from vist_rt.features import from_spec
from vist_rt.model import StreamingViST, load_checkpoint
from vist_rt.train.ln import LNModel
from vist_rt.train.metrics import sdkl_scale, summary
from vist_rt.train.trainer import cached_features, cell_columns

ALPHA_MAX = 10.0  # the largest SD-KL KDE bandwidth factor accepted (the published one is 0.3)
STREAM_TOLERANCE = 1e-4  # max |streaming - offline|, relative to the offline output's scale


def streaming_prediction(
    model: Any, rf: torch.Tensor, feats: np.ndarray, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Rates [T, C] from the streaming model, one frame per step; VistError if it departs from the offline forward."""
    stream = StreamingViST.from_model(model, rf)
    online = np.empty((len(feats), rf.shape[0]), np.float32)
    for t in range(len(feats)):
        online[t] = stream.step(feats[t : t + 1])[0].numpy()
        if progress and (t % 50 == 49 or t == len(feats) - 1):
            progress(t + 1, len(feats))
    with torch.no_grad():
        offline = model(torch.from_numpy(feats)[None], rf[None])[0].T.numpy()
    err = float(np.abs(online - offline).max() / max(1e-12, float(np.abs(offline).max())))
    if err > STREAM_TOLERANCE:
        raise VistError(f"streaming and offline predictions differ (max relative error {err:.2e})")
    return online


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | Path,
    movie: str,
    *,
    alpha: float = 0.3,
    ln_train_movie: str | None = None,
    vit_weights: str | None = None,
    cache_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(figures as JSON-ready dict, arrays for plots: pred, target, ln_pred). Checks shapes before any work.

    `progress(stage, done, total)` for the long parts: features per movie, the streaming pass."""

    def report(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    if not (math.isfinite(alpha) and 0 < alpha <= ALPHA_MAX):
        raise VistError(f"SD-KL alpha must be a number in (0, {ALPHA_MAX:g}], got {alpha!r}")
    if cache_dir is not None:
        check_output_dir(cache_dir, flag="--cache")  # before any work
    ckpt = load_checkpoint(checkpoint)
    with open_dataset(dataset) as ds:
        pick = _checkpoint_columns(ckpt, ds.cell_ids)
        m = ds.movie(movie)
        ln_movie = ln_train_movie or ckpt.meta.get("train_movie")  # a list: the checkpoint's training movies
        ln_names = [ln_movie] if isinstance(ln_movie, str) else list(ln_movie or [])
        ln_ms = [ds.movie(name) for name in ln_names]
        ext = from_spec(ckpt.extractor, weights=vit_weights)
        if ext.dim != ckpt.config.feature_dim:
            raise VistError(f"the extractor gives {ext.dim}-dim tokens, the model reads {ckpt.config.feature_dim}")
        cache = Path(cache_dir) if cache_dir else None

        def features(name: str, mov: Any) -> np.ndarray:  # [T, N, D]
            return cached_features(Path(dataset), name, mov.stimulus, ext, cache, progress=report(f"features {name}"))

        feats = features(movie, m)
        target = np.asarray(m.rates)[:, pick]
        scale = sdkl_scale(ds.units, ds.fps)
        ds_units = ds.units
        spikes = None if m.spikes is None else np.asarray(m.spikes)[:, :, pick]
        truth = m.extra("truth")  # the simulator's ground-truth rate, when the dataset has one
        truth = None if truth is None else np.asarray(truth)[:, pick]
        ln_feats = ln_rates = None
        if ln_ms:  # several movies: joined end to end (the LN's lags straddle a join for its first frames)
            ln_feats = np.concatenate([features(name, mov) for name, mov in zip(ln_names, ln_ms)])
            ln_rates = np.concatenate([np.asarray(mov.rates)[:, pick] for mov in ln_ms])
    pred = streaming_prediction(ckpt.model, ckpt.rf, feats, progress=report("streaming Vi-ST"))
    ceiling = noise_ceiling(spikes) if spikes is not None and spikes.shape[0] >= 2 else None
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "dataset": str(dataset),
        "movie": movie,
        "frames": len(target),
        "cells": ckpt.config.cells,
        "cell_ids": [str(c) for c in ckpt.cell_ids] if ckpt.cell_ids else None,
        "alpha": alpha,
        "features": ext.describe(),
        "units": ds_units,
        "vist": summary(pred, target, alpha=alpha, ceiling=ceiling, scale=scale),
        "noise_ceiling_mean": None if ceiling is None else float(np.mean(ceiling)),
    }
    if truth is not None:  # what a perfect model scores against these trial averages (a calibration)
        result["truth"] = summary(np.asarray(truth), target, alpha=alpha, ceiling=ceiling, scale=scale)
    arrays = {"pred": pred, "target": target}
    if ln_feats is not None and ln_rates is not None:
        ln = LNModel.fit(ln_feats, ln_rates)
        ln_pred = ln.predict(feats)
        result["ln"] = {"train_movie": ln_movie, **summary(ln_pred, target, alpha=alpha, ceiling=ceiling, scale=scale)}
        arrays["ln_pred"] = ln_pred
    return _jsonable(result), arrays


def _checkpoint_columns(ckpt: Any, dataset_ids: list[str]) -> np.ndarray:
    """The dataset's columns of the checkpoint's cells `[C]`: all of them, or (a checkpoint of a subset of cells)
    those its cell ids name."""
    ids = [str(c) for c in (ckpt.cell_ids or [])]
    if ids and ids != list(dataset_ids) and set(ids) <= set(dataset_ids):
        return cell_columns(dataset_ids, ids)
    if len(dataset_ids) != ckpt.config.cells:
        raise VistError(f"the checkpoint predicts {ckpt.config.cells} cells, the dataset has {len(dataset_ids)}")
    return np.arange(len(dataset_ids))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def save_figure(plt: Any, fig: Any, path: Path) -> None:
    """Write a matplotlib figure (one-line VistError if it cannot be written) and close it."""
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise VistError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def write_plots(
    result: dict[str, Any], arrays: dict[str, np.ndarray], folder: str | Path, fps: float = 30.0
) -> list[Path]:
    """PNGs like the paper's: predicted vs recorded rate for the best, median and worst cells; CC per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = check_output_dir(folder, flag="--plots")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VistError(f"cannot write --plots {folder}: {exc.strerror or exc}") from None
    cc = np.asarray(result["vist"]["cc"], dtype=float)
    order = np.argsort(cc)
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    t = np.arange(len(arrays["target"])) / fps
    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for ax, (name, c) in zip(axes, picks.items()):
        ax.plot(t, arrays["target"][:, c], color="0.3", lw=1, label="recorded")
        ax.plot(t, arrays["pred"][:, c], color="C1", lw=1, label="Vi-ST (streaming)")
        if "ln_pred" in arrays:
            ax.plot(t, arrays["ln_pred"][:, c], color="C0", lw=0.8, alpha=0.7, label="LN")
        ax.set_title(f"{name} cell {c}: CC {cc[c]:.2f}")
        ax.set_ylabel(f"rate ({result.get('units') or 'a.u.'})")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    traces = folder / "traces.png"
    save_figure(plt, fig, traces)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(len(cc)), cc, color="C1", label="Vi-ST")
    if "ln" in result:
        ax.plot(np.arange(len(cc)), result["ln"]["cc"], "o", color="C0", ms=3, label="LN")
    ax.set_xlabel("cell")
    ax.set_ylabel("CC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    bars = folder / "cc_per_cell.png"
    save_figure(plt, fig, bars)
    return [traces, bars]
