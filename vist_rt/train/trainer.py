"""Training Vi-ST on a dataset file: features per movie, the published recipe (AdamW, warm-up + cosine,
SWA, the Vi-ST loss with soft-DTW), held-out CC per epoch, best and last checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.data.dataset import open_dataset
from vist_rt.data.rf import rf_to_grid
from vist_rt.errors import VistError
from vist_rt.features import Extractor, PatchesExtractor
from vist_rt.model import ViST, ViSTConfig, save_checkpoint
from vist_rt.train.loss import vist_loss
from vist_rt.train.metrics import cc_per_cell
from vist_rt.train.schedule import PRESETS, Recipe, learning_rate, window_starts


def movie_features(
    stimulus: Any, extractor: Extractor, *, chunk: int = 64, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """uint8 frames [T,H,W(,3)] (array or h5py dataset) -> float32 tokens [T, N, D], computed in chunks."""
    n = int(stimulus.shape[0])
    out = np.empty((n, extractor.tokens, extractor.dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = extractor(np.asarray(stimulus[start:stop]))
        if progress:
            progress(stop, n)
    return out


@functools.lru_cache(maxsize=8)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes (cached per path, size and modification time: read once per run)."""
    del size, mtime_ns  # part of the cache key only
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def feature_cache_path(dataset_path: Path, movie: str, extractor: Extractor, cache_dir: Path) -> Path:
    """Where one movie's features are cached: keyed by the dataset's bytes, the movie and the extractor spec."""
    st = Path(dataset_path).stat()
    h = hashlib.sha256(_file_digest(Path(dataset_path).resolve(), st.st_size, st.st_mtime_ns).encode())
    h.update(movie.encode())
    h.update(json.dumps(extractor.spec, sort_keys=True).encode())
    return Path(cache_dir) / f"features-{movie}-{h.hexdigest()[:16]}.npy"


def cached_features(
    dataset_path: Path,
    movie: str,
    stimulus: Any,
    extractor: Extractor,
    cache_dir: Path | None,
    *,
    computed: np.ndarray | None = None,
) -> np.ndarray:
    """Features of one movie, reused from `cache_dir` when current (else computed, or `computed`, and stored)."""
    if cache_dir is None:
        return computed if computed is not None else movie_features(stimulus, extractor)
    path = feature_cache_path(dataset_path, movie, extractor, cache_dir)
    if path.is_file():
        return np.load(path)
    feats = computed if computed is not None else movie_features(stimulus, extractor)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(path)
    return feats


@dataclasses.dataclass
class TrainResult:
    """What a run produced: checkpoints and the per-epoch history."""

    best: Path
    last: Path
    history: list[dict[str, float]]
    best_cc: float


def evaluate(model: ViST, feats: np.ndarray, rates: np.ndarray, rf: torch.Tensor) -> np.ndarray:
    """Per-cell CC of the model's prediction over a whole movie (offline forward, eval mode)."""
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(feats)[None], rf[None])[0].T.numpy()
    return cc_per_cell(pred, rates)


def _refresh_batchnorm(model: ViST, feats: np.ndarray, rf: torch.Tensor, recipe: Recipe, rng: np.random.Generator):
    """Recompute BatchNorm statistics of averaged (SWA) weights over training windows."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(8):
            starts = window_starts(len(feats), recipe, rng)
            x = torch.from_numpy(np.stack([feats[s : s + recipe.window] for s in starts]))
            model(x, rf.expand(len(starts), -1, -1, -1))
    model.eval()


def train(
    dataset_path: str | Path,
    train_movie: str,
    out: str | Path,
    *,
    test_movie: str | None = None,
    preset: str = "cpu-small",
    model_config: ViSTConfig | None = None,
    extractor: Extractor | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on `train_movie`, track held-out CC on `test_movie` (else on the training movie), write checkpoints
    `<out>` (best held-out CC) and `<out stem>.last.safetensors`."""
    if preset not in PRESETS:
        raise VistError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    extractor = extractor or PatchesExtractor(224, channels="grey")
    out = Path(out)
    last_path = out.with_name(out.stem + ".last.safetensors")
    with open_dataset(dataset_path) as ds:
        train_m = ds.movie(train_movie)
        test_m = ds.movie(test_movie) if test_movie else train_m
        n_frames = train_m.T
        if n_frames < recipe.window:  # before any work
            raise VistError(f"{train_movie} has {n_frames} frames, fewer than one {recipe.window}-frame window")
        log(f"features: {extractor.describe()}")
        f_train = cached_features(Path(dataset_path), train_movie, train_m.stimulus, extractor, cache_dir)
        f_test = (cached_features(Path(dataset_path), test_movie, test_m.stimulus, extractor, cache_dir)
                  if test_movie else f_train)  # fmt: skip
        r_train, r_test = np.asarray(train_m.rates), np.asarray(test_m.rates)
        grid = int(extractor.spec["grid"])
        crop = extractor.spec["preprocess"]["crop"]
        rf = torch.from_numpy(rf_to_grid(ds.rf, grid=grid, crop=crop, image_size=int(extractor.spec["image_size"])))
        cell_ids, fps, units = list(ds.cell_ids), float(ds.fps), ds.units
    cells = r_train.shape[1]
    cfg = model_config or ViSTConfig(feature_dim=extractor.dim, video_dim=32, cells=cells, grid=grid)
    if cfg.cells != cells or cfg.feature_dim != extractor.dim or cfg.grid != grid:
        raise VistError(
            f"model config (cells {cfg.cells}, feature_dim {cfg.feature_dim}, grid {cfg.grid}) does not match the "
            f"data (cells {cells}) and features (dim {extractor.dim}, grid {grid})"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ViST(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr_start, weight_decay=recipe.weight_decay)
    swa: ViST | None = None
    swa_n = 0
    history: list[dict[str, float]] = []
    best_cc = -np.inf
    meta = {"preset": preset, "recipe": dataclasses.asdict(recipe), "dataset": str(dataset_path),
            "train_movie": train_movie, "test_movie": test_movie, "seed": seed}  # fmt: skip
    step = 0
    for epoch in range(recipe.epochs):
        model.train()
        losses = []
        for _ in range(recipe.batches_per_epoch):
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, recipe)
            starts = window_starts(len(f_train), recipe, rng)
            x = torch.from_numpy(np.stack([f_train[s : s + recipe.window] for s in starts]))
            y = torch.from_numpy(np.stack([r_train[s : s + recipe.window] for s in starts]))
            y_hat = model(x, rf.expand(len(starts), -1, -1, -1)).transpose(1, 2)  # [B, T, C]
            loss, _parts = vist_loss(y_hat, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        if epoch >= recipe.swa_start:  # average the weights at the end of each SWA epoch
            if swa is None:
                swa = copy.deepcopy(model)
            else:
                with torch.no_grad():
                    for a, p in zip(swa.parameters(), model.parameters()):
                        a.mul_(swa_n / (swa_n + 1)).add_(p, alpha=1 / (swa_n + 1))
            swa_n += 1
        cc = evaluate(model, f_test, r_test, rf)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "cc": float(np.mean(cc))}
        history.append(entry)
        log(f"epoch {epoch + 1}/{recipe.epochs}: loss {entry['loss']:.4f}, held-out CC {entry['cc']:.3f}")
        if entry["cc"] > best_cc:
            best_cc = entry["cc"]
            save_checkpoint(out, model, rf=rf, fps=fps, extractor=extractor.spec, cell_ids=cell_ids, units=units,
                            **meta, epoch=epoch, held_out_cc=entry["cc"])  # fmt: skip
    final = model
    if swa is not None:
        _refresh_batchnorm(swa, f_train, rf, recipe, rng)
        cc = float(np.mean(evaluate(swa, f_test, r_test, rf)))
        log(f"SWA over {swa_n} epochs: held-out CC {cc:.3f}")
        history.append({"epoch": recipe.epochs, "cc": cc, "swa": 1.0})
        final = swa
        if cc > best_cc:
            best_cc = cc
            save_checkpoint(out, swa, rf=rf, fps=fps, extractor=extractor.spec, cell_ids=cell_ids, units=units,
                            **meta, epoch=recipe.epochs, held_out_cc=cc, swa=True)  # fmt: skip
    save_checkpoint(last_path, final, rf=rf, fps=fps, extractor=extractor.spec, cell_ids=cell_ids, units=units,
                    **meta, epoch=recipe.epochs, history=history)  # fmt: skip
    return TrainResult(out, last_path, history, float(best_cc))
