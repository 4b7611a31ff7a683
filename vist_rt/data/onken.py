"""Convert the published salamander data (Onken et al. 2017, Dryad doi 10.5061/dryad.4ch10) to the dataset format.

Assumed layout (the Dryad archive is not reachable here; docs/data.md lists every assumption)::

    DRYAD_DIR/Stimuli/<frame files>       one raw uint8 file per frame, frame_shape bytes, column-major
                                          (MATLAB order), taken in natural sort order of their names
    DRYAD_DIR/NeuralData/<movie>*.mat     `Spikes`: cell array (neurons x trials) of spike times in ms
                                          after stimulus onset; optionally `ReceptiveFields` too
    DRYAD_DIR/NeuralData/*.mat or DRYAD_DIR/*.mat
                                          otherwise: the first file (movie-named first) holding
                                          `ReceptiveFields`: cell array of 2xK contours, row 0 = x (column),
                                          row 1 = y (row), 1-based MATLAB pixel coordinates of the
                                          displayed (transposed) frame

Output: frames `[T,H,W]`; counts in bins [k/fps, (k+1)/fps) s as uint16 `[R,T,C]`; rates = trial mean * fps
(spikes/s); contours filled with `cv2.fillPoly` into float32 `[C,H,W]` masks.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vist_rt.data.dataset import write_dataset
from vist_rt.errors import VistError, first_line
from vist_rt.files import check_output_file


def _natural_key(path: Path) -> list[Any]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a train/dev extra
        raise VistError("reading .mat files needs scipy: pip install 'vist-rt[train]'") from None
    try:
        return loadmat(str(path), squeeze_me=False)
    except Exception as exc:  # scipy raises MatReadError, ValueError, TypeError, ... on a damaged or foreign file
        msg = first_line(exc) or type(exc).__name__
        raise VistError(f"{path}: cannot read as a MATLAB (v5) .mat file ({msg})") from None


def read_frames(stimuli_dir: Path, frame_shape: tuple[int, int], n_frames: int | None = None) -> np.ndarray:
    """Raw column-major uint8 frame files -> uint8 `[T,H,W]` (row-major)."""
    if not stimuli_dir.is_dir():
        raise VistError(f"no Stimuli folder: {stimuli_dir}")
    files = sorted((p for p in stimuli_dir.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise VistError(f"{stimuli_dir}: holds no frame files")
    if n_frames is not None:
        if n_frames < 1:
            raise VistError(f"frames must be >= 1, got {n_frames}")
        if n_frames > len(files):
            raise VistError(f"{stimuli_dir}: {n_frames} frames asked for but it holds {len(files)}")
        files = files[:n_frames]
    h, w = frame_shape
    out = np.empty((len(files), h, w), np.uint8)
    for i, p in enumerate(files):  # one read per frame file
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size != h * w:
            raise VistError(f"{p}: {raw.size} bytes, expected {h * w} for a {h}x{w} uint8 frame")
        out[i] = raw.reshape(w, h).T  # MATLAB writes column by column
    return out


def _find_spike_file(neural_dir: Path, movie: str) -> Path:
    if not neural_dir.is_dir():
        raise VistError(f"no NeuralData folder: {neural_dir}")
    exact = neural_dir / f"{movie}.mat"
    if exact.is_file():
        return exact
    found = sorted(p for p in neural_dir.glob(f"{glob.escape(movie)}*.mat") if "receptive" not in p.name.lower())
    if not found:
        names = ", ".join(sorted(p.stem for p in neural_dir.glob("*.mat"))) or "none"
        raise VistError(f"{neural_dir}: no {movie}*.mat; .mat files: {names}")
    if len(found) > 1:
        raise VistError(f"{neural_dir}: several files match {movie!r} ({', '.join(p.name for p in found)}): be exact")
    return found[0]


def bin_spikes(spikes: Any, n_frames: int, fps: float, source: str = "Spikes") -> np.ndarray:
    """Cell array (neurons x trials) of spike times in ms -> uint16 counts `[R,T,C]`, bin k = [k/fps, (k+1)/fps) s."""
    cells = np.asarray(spikes, dtype=object)
    if cells.ndim != 2 or 0 in cells.shape:
        raise VistError(f"{source}: must be a neurons x trials cell array, got shape {list(cells.shape)}")
    n_cells, n_trials = cells.shape
    flat: list[np.ndarray] = []
    for c in range(n_cells):  # setup loop over neurons x trials (~1000 entries)
        for r in range(n_trials):
            try:
                t_ms = np.asarray(cells[c, r], dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise VistError(f"{source}: spike times of neuron {c + 1}, trial {r + 1} are not numbers") from None
            k = np.floor(t_ms * fps / 1000.0)
            k = k[(k >= 0) & (k < n_frames)].astype(np.int64)
            flat.append((r * n_frames + k) * n_cells + c)
    idx = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    counts = np.bincount(idx, minlength=n_trials * n_frames * n_cells).reshape(n_trials, n_frames, n_cells)
    if counts.max(initial=0) > np.iinfo(np.uint16).max:
        raise VistError(f"{source}: more than 65535 spikes in one bin")
    return counts.astype(np.uint16)


def _find_rf(spike_mat: dict[str, Any], spike_file: Path, dryad_dir: Path, movie: str) -> tuple[Any, Path]:
    if "ReceptiveFields" in spike_mat:
        return spike_mat["ReceptiveFields"], spike_file
    candidates = sorted(
        (p for d in (spike_file.parent, dryad_dir) for p in d.glob("*.mat") if p != spike_file),
        key=lambda p: (
            not p.name.startswith(movie),
            "receptive" not in p.name.lower() and "rf" not in p.name.lower(),
            p.name,
        ),
    )
    for p in candidates:
        mat = _loadmat(p)
        if "ReceptiveFields" in mat:
            return mat["ReceptiveFields"], p
    raise VistError(
        f"no ReceptiveFields in {spike_file.name} nor in any other .mat of {spike_file.parent} or {dryad_dir}"
    )


def rasterize_contours(
    contours: Any, frame_shape: tuple[int, int], one_based: bool = True, source: str = ""
) -> np.ndarray:
    """Cell array of 2xK contours (row 0 = x, row 1 = y) -> float32 `[C,H,W]` filled masks."""
    items = np.asarray(contours, dtype=object).ravel()
    h, w = frame_shape
    masks = np.zeros((len(items), h, w), np.uint8)
    for i, item in enumerate(items):  # setup loop over cells
        try:
            pts = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise VistError(f"{source}: RF contour {i} is not numbers") from None
        if pts.ndim != 2 or 2 not in pts.shape:
            raise VistError(f"{source}: RF contour {i} must be 2xK points, got shape {list(pts.shape)}")
        if not np.isfinite(pts).all() or np.abs(pts).max(initial=0) > 1e6:
            raise VistError(f"{source}: RF contour {i} holds NaN, inf or absurd coordinates")
        xy = pts.T if pts.shape[0] == 2 else pts  # -> [K, 2] (x, y)
        if one_based:
            xy = xy - 1.0
        cv2.fillPoly(masks[i], [np.round(xy).astype(np.int32).reshape(-1, 1, 2)], 1)
    return masks.astype(np.float32)


def convert_onken(
    dryad_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    movie: str,
    fps: float,
    frame_shape: tuple[int, int] = (360, 360),
    n_frames: int | None = None,
    rf_one_based: bool = True,
    cell_prefix: str = "",
    overwrite: bool = False,
) -> Path:
    """Convert one recording/movie of the Onken et al. data to a dataset file; returns its path.

    Cell ids are `<cell_prefix>n001`, ... in the file's neuron order (the same neurons in two movies of one
    recording get the same ids). `out_path` is checked first: an existing file is replaced only with `overwrite`.
    """
    root = Path(dryad_dir)
    if not root.is_dir():
        raise VistError(f"not a folder: {root}")
    if not (np.isfinite(fps) and fps > 0):
        raise VistError(f"fps must be > 0, got {fps!r}")
    if not movie or "/" in movie:
        raise VistError(f"movie name must be non-empty without '/', got {movie!r}")
    check_output_file(out_path, overwrite=overwrite)
    spike_file = _find_spike_file(root / "NeuralData", movie)
    mat = _loadmat(spike_file)
    if "Spikes" not in mat:
        keys = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise VistError(f"{spike_file}: no variable 'Spikes' (variables: {keys})")
    stimulus = read_frames(root / "Stimuli", frame_shape, n_frames)
    t = stimulus.shape[0]
    spikes = bin_spikes(mat["Spikes"], t, fps, source=str(spike_file))
    n_cells = spikes.shape[2]
    contours, rf_file = _find_rf(mat, spike_file, root, movie)
    rf = rasterize_contours(contours, frame_shape, rf_one_based, source=str(rf_file))
    if rf.shape[0] != n_cells:
        raise VistError(f"{rf_file}: {rf.shape[0]} RF contours but {spike_file.name} has {n_cells} neurons")
    rates = (spikes.mean(axis=0) * fps).astype(np.float32)
    ids = [f"{cell_prefix}n{c + 1:03d}" for c in range(n_cells)]
    return write_dataset(
        out_path,
        {movie: (stimulus, rates, spikes)},
        rf,
        ids,
        fps,
        "spikes/s",
        f"Onken et al. 2017 (doi 10.5061/dryad.4ch10): {spike_file.name}, RFs from {rf_file.name}",
        attrs={"trials": int(spikes.shape[0])},
        overwrite=overwrite,
    )
