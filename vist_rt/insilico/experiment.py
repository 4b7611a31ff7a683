"""`vist-rt mei`: one optimized clip for one cell (or group), its report, its files, and, on a simulated
dataset, the known retina's own response to it."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.data.dataset import open_dataset
from vist_rt.data.paths import check_output_dir
from vist_rt.data.simulate import Retina, retina_from_params, simulation_params
from vist_rt.errors import VistError
from vist_rt.features import Extractor, from_spec
from vist_rt.files import atomic_path, atomic_write, check_output_file, read_npy, write_npy
from vist_rt.insilico.differentiable import PixelsToRates
from vist_rt.insilico.objectives import Objective, Regularizers
from vist_rt.insilico.optimize import Optimized, Settings, optimize_stimulus
from vist_rt.model import load_checkpoint
from vist_rt.model.checkpoint import Checkpoint
from vist_rt.movie import SyntheticMovie

NATURAL_FRAMES = 600  # frames of the synthetic movie that stands for natural stimulation without --data
OUTPUTS = ("stimulus.avi", "stimulus.npy", "report.json", "figure.png")
VIDEO_FOURCC = "FFV1"  # lossless: a replay of the video gives the model exactly the clip's pixels


@dataclasses.dataclass(frozen=True)
class Natural:
    """The movie that sets the bar: frames uint8 `[T, H, W(, 3)]`, its name, and the known retina if it has one."""

    frames: np.ndarray
    name: str
    retina: Retina | None
    params: dict[str, Any] | None = None  # the simulation's parameters (seed, cells, size, fps, ...)


def cell_index(ckpt: Checkpoint, cell: str) -> int:
    """The checkpoint's index of cell `cell`; one line listing some ids for an unknown one."""
    if cell in ckpt.cell_ids:
        return ckpt.cell_ids.index(cell)
    shown = ", ".join(ckpt.cell_ids[:8]) + (", ..." if len(ckpt.cell_ids) > 8 else "")
    raise VistError(f"no cell {cell!r} in this checkpoint ({len(ckpt.cell_ids)} cells: {shown})")


def natural_movie(data: str | None, movie: str | None, size: int, fps: float, seed: int) -> Natural:
    """`movie` of dataset `data` (default its first), or the synthetic movie at size x size without `data`."""
    if data is None:
        if movie is not None:
            raise VistError("--movie needs --data (the dataset that holds it)")
        frames = SyntheticMovie(seed=seed, size=(size, size), fps=fps).frames(NATURAL_FRAMES)
        return Natural(frames, f"synthetic movie seed {seed} ({NATURAL_FRAMES} frames)", None)
    with open_dataset(data) as ds:
        name = movie or ds.movies[0]
        frames = ds.movie(name).stimulus[()]
        attribute = ds.attrs.get("simulation")
        params = None if attribute is None else simulation_params(attribute)
        retina = None if attribute is None else retina_from_params(params, where=str(data))
    return Natural(frames, f"{Path(data).name} {name}", retina, params)


def predict(ckpt: Checkpoint, extractor: Extractor, frames: np.ndarray, color: str | None) -> np.ndarray:
    """Rates `[T, C]` of the offline model on uint8 frames through the run's own preprocessing and extractor;
    `color`: the channel order of colour frames (None: the checkpoint's, as training read the dataset's)."""
    tokens = np.concatenate([extractor.tokens_from_pixels(extractor.preprocess(frames[i : i + 64], color=color))
                             for i in range(0, len(frames), 64)])  # fmt: skip
    with torch.no_grad():
        return ckpt.model(torch.from_numpy(tokens)[None], ckpt.rf[None])[0].T.numpy()


def best_window(trace: np.ndarray, length: int) -> float:
    """The highest mean of `trace` `[T]` over any `length` consecutive frames; VistError for a shorter trace."""
    if len(trace) < length:
        raise VistError(f"the natural movie has {len(trace)} frames, fewer than the {length} the objective scores")
    sums = np.convolve(trace.astype(np.float64), np.ones(length), mode="valid")
    return float(sums.max() / length)


def run_mei(
    checkpoint: str | Path,
    cells: list[str],
    out: str | Path,
    *,
    objective: str = "mei",
    target: str | None = None,
    frames: int = 30,
    window: int = 10,
    color: bool = False,
    data: str | None = None,
    movie: str | None = None,
    regularizers: Regularizers | None = None,
    settings: Settings | None = None,
    vit_weights: str | None = None,
    precision: str = "fp32",
    progress: Callable[[int, int, float], None] | None = None,
    figure: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Optimize a clip for `cells` (their mean rate: `mei`; against the others: `mds`; the first cell's rate to
    the time course in the .npy file `target`: `target`), write DIR/stimulus.npy,
    DIR/stimulus.avi (lossless), DIR/report.json and DIR/figure.png; return the report. Outputs already in DIR
    are refused unless `overwrite`; nothing is written before every figure is ready."""
    out_dir = check_output_dir(out, flag="--out")
    for name in OUTPUTS:
        check_output_file(out_dir / name, overwrite=overwrite, flag="--out")
    if objective != "target" and window > frames:
        raise VistError(f"--window {window} is longer than the clip's {frames} frames")
    regs = regularizers or Regularizers()
    opts = settings or Settings()
    ckpt = load_checkpoint(checkpoint)
    idx = tuple(cell_index(ckpt, c) for c in cells)
    trace = None
    if objective == "target":
        if target is None:
            raise VistError("--objective target needs --target TRACE.npy (the cell's wanted rate, one per frame)")
        values = read_npy(target, "target time course", "[T]")
        if values.ndim != 1 or len(values) != frames or values.dtype.kind not in "fiu":
            raise VistError(f"the target time course must be {frames} numbers (one per frame of the clip), "
                            f"got {values.dtype} {list(values.shape)}")  # fmt: skip
        if not np.isfinite(values).all():
            raise VistError("the target time course holds NaN/inf values")
        trace = tuple(float(v) for v in values)
    elif target is not None:
        raise VistError("--target is for --objective target")
    goal = Objective(objective, idx, window, trace)
    runtime = {"backend": "torch"} if ckpt.extractor.get("kind") == "dinov2" else {}
    extractor = from_spec(ckpt.extractor, vit_weights, **runtime)
    try:
        size = int(ckpt.extractor["image_size"])
        nat = natural_movie(data, movie, size, ckpt.fps, opts.seed)
        h, w = nat.frames.shape[1:3]
        net = PixelsToRates(ckpt, extractor, (h, w), precision)
        found = optimize_stimulus(net, goal, regs, frames=frames, color=color, settings=opts, progress=progress)
        pred_clip = predict(ckpt, extractor, found.stimulus, "rgb")  # the clip is RGB
        pred_nat = predict(ckpt, extractor, nat.frames, None)  # a dataset's frames: as training read them
    finally:
        extractor.close()
    report = _report(ckpt, cells, idx, goal, regs, opts, found, nat, pred_clip, pred_nat, checkpoint)
    png = plot_mei(found.stimulus, pred_clip, pred_nat, idx, goal, report) if figure else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_video(out_dir / "stimulus.avi", found.stimulus, ckpt.fps)
    write_npy(out_dir / "stimulus.npy", found.stimulus)
    atomic_write(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    if png is not None:
        atomic_write(out_dir / "figure.png", png)
    return report


def _report(
    ckpt: Checkpoint,
    cells: list[str],
    idx: tuple[int, ...],
    goal: Objective,
    regs: Regularizers,
    opts: Settings,
    found: Optimized,
    nat: Natural,
    pred_clip: np.ndarray,
    pred_nat: np.ndarray,
    checkpoint: str | Path,
) -> dict[str, Any]:
    scored = goal.window(len(found.stimulus))
    k = scored.stop - scored.start
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "cells": cells,
        "objective": goal.kind,
        "objective_frames": k,
        "frames": int(found.stimulus.shape[0]),
        "size": list(found.stimulus.shape[1:3]),
        "color": found.stimulus.ndim == 4,
        "natural": nat.name,
        "pred_stimulus": float(pred_clip[scored][:, list(idx)].mean()),
        "pred_natural_max": best_window(pred_nat[:, list(idx)].mean(axis=1), k),
        "objective_value": goal.score(pred_clip),
        "steps": found.steps,
        "stopped": found.stopped,
        "regularizers": dataclasses.asdict(regs),
        "settings": dataclasses.asdict(opts),
        "units": ckpt.units,
    }
    report["pred_ratio"] = report["pred_stimulus"] / report["pred_natural_max"] if report["pred_natural_max"] else None
    if nat.retina is not None:
        true_clip, true_nat = nat.retina.rates(found.stimulus), nat.retina.rates(nat.frames)
        sim_idx = [nat.retina.cell_ids.index(c) for c in cells if c in nat.retina.cell_ids]
        missing = [c for c in cells if c not in nat.retina.cell_ids]
        if missing:
            report["true_missing"] = f"{', '.join(missing)}: not a cell of the simulated retina"
        else:
            report["true_stimulus"] = float(true_clip[scored][:, sim_idx].mean())
            report["true_natural_max"] = best_window(true_nat[:, sim_idx].mean(axis=1), k)
            trained = (ckpt.meta.get("provenance") or {}).get("simulation") or {}
            keys = ("seed", "cells", "size", "fps")
            # the model learned this very retina (same simulation settings), or another one
            report["retina_is_the_checkpoints"] = bool(trained) and all(
                trained.get(key) == (nat.params or {}).get(key) for key in keys
            )
    return report


def write_video(path: Path, stimulus: np.ndarray, fps: float) -> None:
    """uint8 frames `[T, H, W(, 3 RGB)]` as a lossless video (FFV1 in AVI), atomically; OpenCV writes BGR."""
    import cv2

    h, w = stimulus.shape[1:3]
    with atomic_path(path) as tmp:
        named = tmp.with_name(tmp.name + path.suffix)  # OpenCV picks the container by the name's extension
        try:
            writer = cv2.VideoWriter(str(named), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), float(fps), (w, h), True)
            if not writer.isOpened():
                raise VistError(f"this OpenCV cannot write {VIDEO_FOURCC} video: {path} not written")
            try:
                for frame in stimulus:
                    bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[:, :, ::-1].copy()
                    writer.write(bgr)
            finally:
                writer.release()
            named.replace(tmp)
        finally:
            named.unlink(missing_ok=True)


def plot_mei(
    stimulus: np.ndarray,
    pred_clip: np.ndarray,
    pred_nat: np.ndarray,
    idx: tuple[int, ...],
    goal: Objective,
    report: dict[str, Any],
) -> bytes:
    """PNG bytes: the clip's frames, the target's predicted rate on the clip against its rates on the natural
    movie, and the other cells' rates on the clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = np.linspace(0, len(stimulus) - 1, min(8, len(stimulus))).round().astype(int)
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, max(2, len(shown)), height_ratios=[1, 1.4])
    for j, t in enumerate(shown):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(stimulus[t], cmap="gray" if stimulus.ndim == 3 else None, vmin=0, vmax=255)
        ax.set_title(f"frame {t}", fontsize=8)
        ax.axis("off")
    half = max(1, max(2, len(shown)) // 2)
    ax = fig.add_subplot(grid[1, :half])
    target = pred_clip[:, list(idx)].mean(axis=1)
    natural = pred_nat[:, list(idx)].mean(axis=1)
    k = report["objective_frames"]
    end = int(np.convolve(natural, np.ones(k), mode="valid").argmax()) + k if len(natural) >= k else len(natural)
    start = max(0, end - len(target))  # the natural stretch of the clip's length that ends with its best window
    ax.plot(np.arange(end - start) + len(target) - (end - start), natural[start:end], color="0.5", lw=1.0,
            label=f"natural movie, frames {start}-{end - 1}")  # fmt: skip
    ax.plot(np.arange(len(target)), target, color="C3", lw=1.5, label="optimized clip")
    ax.axhline(report["pred_natural_max"], color="0.3", ls=":", lw=0.8, label="natural best window")
    span = goal.window(len(target))
    ax.axvspan(span.start, span.stop - 1, color="C3", alpha=0.1)
    ax.set_xlabel("frame of the clip")
    ax.set_ylabel(f"predicted rate ({report['units']})")
    ax.set_title(f"{', '.join(report['cells'])}: {goal.kind}", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, half:])
    others = [i for i in range(pred_clip.shape[1]) if i not in idx]
    if others:
        ax.plot(pred_clip[:, others], color="0.5", lw=0.6)
    ax.plot(target, color="C3", lw=1.5)
    ax.set_xlabel("frame")
    ax.set_title("every cell on the clip (target in red)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return buf.getvalue()
