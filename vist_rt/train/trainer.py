"""Training Vi-ST on a dataset file: features per movie, the published recipe (AdamW, warm-up + cosine,
SWA, the Vi-ST loss with soft-DTW), held-out CC per epoch, best and last checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vist_rt.data.dataset import open_dataset
from vist_rt.data.paths import check_output_dir
from vist_rt.data.rf import rf_to_grid
from vist_rt.errors import VistError, first_line
from vist_rt.features import Extractor, PatchesExtractor
from vist_rt.files import atomic_path, check_output_file
from vist_rt.model import ViST, ViSTConfig, save_checkpoint
from vist_rt.tomlfile import read_toml
from vist_rt.train.loss import loss_function
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


def read_cache_entry(path: Path, n_frames: int, extractor: Extractor) -> tuple[np.ndarray | None, str]:
    """(features, "") for a readable entry of the expected float32 `[T, N, D]` shape; (None, why) otherwise
    (why = "" when there is no entry at all). A damaged or wrong-shaped entry is a miss, not an error."""
    if not path.exists():
        return None, ""
    want = (int(n_frames), int(extractor.tokens), int(extractor.dim))
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)  # the header first: no huge read of a bad file
        if not isinstance(mm, np.ndarray):
            return None, f"cache entry {path} is not a single array"
        if mm.dtype != np.float32 or tuple(mm.shape) != want:
            return None, f"cache entry {path} is {mm.dtype} {list(mm.shape)}, expected float32 {list(want)}"
        feats = np.array(mm)
        del mm
    except (OSError, ValueError, EOFError, TypeError) as exc:
        msg = first_line(exc) or type(exc).__name__
        return None, f"cache entry {path} is unreadable ({msg})"
    return feats, ""


def store_cache_entry(path: Path, feats: np.ndarray) -> None:
    """Write one cache entry atomically (a temporary file, then a rename: ranks of a DDP run may race)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
    except OSError as exc:
        raise VistError(f"cannot write the feature cache entry {path}: {exc.strerror or exc}") from None


def _warn(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def cached_features(
    dataset_path: Path,
    movie: str,
    stimulus: Any,
    extractor: Extractor,
    cache_dir: Path | None,
    *,
    computed: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = _warn,
) -> np.ndarray:
    """Features of one movie, reused from `cache_dir` when current (else computed, or `computed`, and stored).

    An unreadable or wrong-shaped entry is said in one line (`log`) and recomputed."""
    if cache_dir is None:
        return computed if computed is not None else movie_features(stimulus, extractor, progress=progress)
    path = feature_cache_path(dataset_path, movie, extractor, cache_dir)
    feats, why = read_cache_entry(path, int(stimulus.shape[0]), extractor)
    if feats is not None:
        return feats
    if why:
        log(f"{movie}: {why}: recomputing it")
    feats = computed if computed is not None else movie_features(stimulus, extractor, progress=progress)
    store_cache_entry(path, feats)
    return feats


@dataclasses.dataclass
class TrainResult:
    """What a run produced: checkpoints and the per-epoch history."""

    best: Path
    last: Path
    history: list[dict[str, float]]
    best_cc: float


def evaluate(model: ViST, movies: _Movies, rf: torch.Tensor) -> np.ndarray:
    """Per-cell CC `[C]` of the model's prediction over whole movies (offline forward, eval mode, on rf's
    device; each movie predicted from its own start, the predictions joined before the CC)."""
    model.eval()
    with torch.no_grad():
        pred = [model(torch.from_numpy(f).to(rf.device)[None], rf[None])[0].T.float().cpu().numpy()
                for f, _ in movies.movies()]  # fmt: skip
    return cc_per_cell(np.concatenate(pred), movies.rates)


def _refresh_batchnorm(
    model: ViST, movies: _Movies, rf: torch.Tensor, recipe: Recipe, rng: np.random.Generator
) -> None:
    """Recompute BatchNorm statistics of averaged (SWA) weights over training windows."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(8):
            starts = window_starts(movies.lengths, recipe, rng)
            x = torch.from_numpy(np.stack([movies.feats[s : s + recipe.window] for s in starts])).to(rf.device)
            model(x, rf.expand(len(starts), -1, -1, -1))
    model.eval()


def recipe_from_toml(path: str | Path, base: Recipe | None = None) -> Recipe:
    """`base` (default: the published Recipe) with the fields a TOML file sets (top level or `[recipe]`);
    unknown keys and wrong types are errors."""
    data = read_toml(path, "recipe")
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise VistError(f"recipe {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    base = base or Recipe()
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(base, key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(default, int) and not isinstance(value, int))
        ):
            raise VistError(f"recipe {path}: {key} must be {type(default).__name__}, got {value!r}")
        values[key] = type(default)(value)
    return dataclasses.replace(base, **values)


def state_path(out: str | Path) -> Path:
    """Where a run's resumable state is written after every epoch: `<out stem>.state.pt`."""
    out = Path(out)
    return out.with_name(out.stem + ".state.pt")


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The torch seed of one epoch on one rank (dropout), independent of how the run was split into sessions."""
    return int(np.random.SeedSequence([seed, rank, epoch, 1]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class _Dist:
    """Where this process sits in a torchrun/DDP run (world 1 = a plain run)."""

    world: int = 1
    rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: evaluates and writes."""
        return self.rank == 0


def start_distributed(device: torch.device) -> tuple[_Dist, torch.device, bool]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.
    Returns (where this process sits, its device, whether this call created the group: its caller then
    destroys it); a group that already exists (a study's, over many runs) is reused."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device, False
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(world=dist.get_world_size(), rank=dist.get_rank()), device, created


def train(
    dataset_path: str | Path,
    train_movie: str | Sequence[str],
    out: str | Path,
    *,
    test_movie: str | None = None,
    preset: str = "cpu-small",
    recipe: Recipe | None = None,
    model_config: ViSTConfig | None = None,
    ablations: tuple[str, ...] = (),
    cells: Sequence[str] | None = None,
    extractor: Extractor | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    resume: bool = False,
    force: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on `train_movie`, track held-out CC on `test_movie` (else on the training movie), write checkpoints
    `<out>` (best held-out CC) and `<out stem>.last.safetensors`, and the resumable state after every epoch.

    `train_movie`: one movie, or several (a list): windows are drawn from all of them, none crosses from one into
    the next, and without `test_movie` the tracked CC is over all of them (each movie predicted on its own).

    `ablations`: the model without these modules (`ViSTConfig.ablate`; saved in the checkpoint's config).
    `cells`: model only these cells (ids of the dataset, in this order; default all), e.g. for the population study.
    `recipe` overrides the preset's. `on_step(step, total_steps, loss)` after every optimiser step,
    `on_epoch(entry)` after every epoch (rank 0). Existing outputs of an earlier run (`<out>`, the last
    checkpoint, the state) are refused up front unless `resume` (which continues from them) or `force`. Under
    torchrun (WORLD_SIZE > 1) it is DistributedDataParallel: the recipe's batch is split over the ranks and
    rank 0 evaluates and writes. Every epoch's windows and dropout come from (seed, rank, epoch), so a resumed
    run equals an uninterrupted one.
    """
    if preset not in PRESETS:
        raise VistError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    recipe = recipe or PRESETS[preset]
    if device not in ("cpu", "cuda"):
        raise VistError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VistError("--device cuda: no CUDA device is available to torch here")
    extractor = extractor or PatchesExtractor(224, channels="grey")
    out = Path(out)
    last_path = out.with_name(out.stem + ".last.safetensors")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):  # before any work, not after the first epoch
        raise VistError(f"cannot write {out}: folder {folder} does not exist or is not writable")
    spath = state_path(out)
    for p in (out, last_path, spath):
        if p.is_dir():
            raise VistError(f"--out {out}: {p} is a folder; give a checkpoint file such as model.safetensors")
    check_output_file(out, overwrite=True, flag="--out")  # the folder can really be written
    if not resume and not force:
        earlier = [str(p) for p in (out, last_path, spath) if p.exists()]
        if earlier:
            raise VistError(
                f"{', '.join(earlier)} already exist{'s' if len(earlier) == 1 else ''} (an earlier run): "
                "give --resume to continue it, --force to replace it, or another --out"
            )
    if cache_dir is not None:
        check_output_dir(cache_dir, flag="--cache")
    names = [train_movie] if isinstance(train_movie, str) else list(train_movie)
    if not names or len(set(names)) != len(names):
        raise VistError(f"the training movies must be a non-empty list without repeats, got {names}")
    with open_dataset(dataset_path) as ds:
        train_ms = [ds.movie(name) for name in names]
        test_m = ds.movie(test_movie) if test_movie else None
        for name, frames in zip(names, (mov.T for mov in train_ms)):
            if frames < recipe.window:  # before any work
                raise VistError(f"{name} has {frames} frames, fewer than one {recipe.window}-frame window")
        pick = cell_columns(list(ds.cell_ids), cells)
        r_trains = [np.asarray(mov.rates)[:, pick] for mov in train_ms]
        n_cells = r_trains[0].shape[1]
        cfg = (model_config or ViSTConfig(feature_dim=extractor.dim, video_dim=32, cells=n_cells,
                                          grid=int(extractor.spec["grid"]))).ablate(*ablations)  # fmt: skip
        if cfg.cells != n_cells or cfg.feature_dim != extractor.dim or cfg.grid != int(extractor.spec["grid"]):
            raise VistError(
                f"model config (cells {cfg.cells}, feature_dim {cfg.feature_dim}, grid {cfg.grid}) does not match "
                f"the data (cells {n_cells}) and features (dim {extractor.dim}, grid {extractor.spec['grid']})"
            )
        grid = cfg.grid
        crop = extractor.spec["preprocess"]["crop"]
        size = int(extractor.spec["image_size"])
        rf_cpu = torch.from_numpy(rf_to_grid(ds.rf[pick], grid=grid, crop=crop, image_size=size))
        cell_ids, fps, units = [str(ds.cell_ids[i]) for i in pick], float(ds.fps), ds.units
        sim = ds.attrs.get("simulation")
        provenance = {
            "dataset_sha256": _dataset_digest(Path(dataset_path)),
            "dataset_source": ds.source,
            "simulation": json.loads(sim) if isinstance(sim, str) else sim,
            "extractor": extractor.describe(),
            "command": command,
            "torch": torch.__version__,
        }
        dist_info, dev, created = start_distributed(torch.device(device))
        try:
            if recipe.batch % dist_info.world:
                raise VistError(f"batch {recipe.batch} does not split over {dist_info.world} processes")
            log(f"features: {extractor.describe()}")
            f_trains = [cached_features(Path(dataset_path), name, mov.stimulus, extractor, cache_dir, log=log)
                        for name, mov in zip(names, train_ms)]  # fmt: skip
            joined = _Movies.join(f_trains, r_trains)
            held_out = joined  # without a test movie: the training movies (one copy)
            if test_m is not None:
                f_test = cached_features(Path(dataset_path), test_movie, test_m.stimulus, extractor, cache_dir, log=log)
                held_out = _Movies.join([f_test], [np.asarray(test_m.rates)[:, pick]])
            meta = {"preset": preset, "recipe": dataclasses.asdict(recipe), "dataset": str(dataset_path),
                    "train_movie": names[0] if len(names) == 1 else names, "test_movie": test_movie, "seed": seed,
                    "world_size": dist_info.world, "provenance": provenance}  # fmt: skip
            if cells is not None:
                meta["cells"] = cell_ids  # a subset (the checkpoint's cell_ids say which)
            return _fit(
                _Run(joined, held_out, rf_cpu.to(dev), cfg, recipe,
                     seed, dist_info, out, last_path, meta,
                     dict(rf=rf_cpu, fps=fps, extractor=extractor.spec, cell_ids=cell_ids, units=units)),
                resume=resume, log=log, on_step=on_step, on_epoch=on_epoch,
            )  # fmt: skip
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()


def cell_columns(dataset_ids: Sequence[str], wanted: Sequence[str] | None) -> np.ndarray:
    """Column indices `[n]` of the cells `wanted` (ids, in that order) among a dataset's; all when None."""
    if wanted is None:
        return np.arange(len(dataset_ids))
    index = {str(c): i for i, c in enumerate(dataset_ids)}
    missing = [str(c) for c in wanted if str(c) not in index]
    if missing:
        raise VistError(f"cell(s) {', '.join(missing[:5])} are not in the dataset (it has {len(dataset_ids)} cells)")
    if not wanted or len(set(map(str, wanted))) != len(wanted):
        raise VistError("the cells to model must be a non-empty list without repeats")
    return np.array([index[str(c)] for c in wanted], dtype=np.int64)


def _dataset_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(path.resolve(), st.st_size, st.st_mtime_ns)


@dataclasses.dataclass(frozen=True)
class _Movies:
    """One or more movies joined end to end: features `[T, N, D]`, rates `[T, C]`, and each movie's length."""

    feats: np.ndarray
    rates: np.ndarray
    lengths: tuple[int, ...]

    @classmethod
    def join(cls, feats: Sequence[np.ndarray], rates: Sequence[np.ndarray]) -> _Movies:
        """The movies' arrays joined (no copy for one movie)."""
        one = len(feats) == 1
        return cls(feats[0] if one else np.concatenate(feats), rates[0] if one else np.concatenate(rates),
                   tuple(len(f) for f in feats))  # fmt: skip

    def movies(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(features, rates) of each movie (views)."""
        edges = np.cumsum((0, *self.lengths))
        return [(self.feats[a:b], self.rates[a:b]) for a, b in itertools.pairwise(edges)]


@dataclasses.dataclass
class _Run:
    """Everything one training run reads (arrays on the host, rf on the training device)."""

    train: _Movies
    test: _Movies
    rf: torch.Tensor
    cfg: ViSTConfig
    recipe: Recipe
    seed: int
    dist: _Dist
    out: Path
    last: Path
    meta: dict[str, Any]
    ckpt: dict[str, Any]  # save_checkpoint's keywords (rf on the CPU, fps, extractor, cell ids, units)

    def identity(self) -> str:
        """What a resumed run must share with the one that wrote the state (JSON)."""
        keep = {k: v for k, v in self.meta.items() if k not in ("provenance",)}
        return json.dumps({**keep, "config": self.cfg.to_dict(), "extractor": self.ckpt["extractor"],
                           "dataset_sha256": self.meta["provenance"]["dataset_sha256"]}, sort_keys=True)  # fmt: skip

    def save(self, path: Path, model: ViST, **extra: Any) -> None:
        save_checkpoint(path, model, **self.ckpt, **self.meta, **extra)


def _fit(
    run: _Run,
    *,
    resume: bool,
    log: Callable[[str], None],
    on_step: Callable[[int, int, float], None] | None,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> TrainResult:
    recipe, dev = run.recipe, run.rf.device
    local = dataclasses.replace(recipe, batch=recipe.batch // run.dist.world)  # windows per process and step
    torch.manual_seed(run.seed)
    model = ViST(run.cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr_start, weight_decay=recipe.weight_decay)
    swa: ViST | None = None
    swa_n, first_epoch, best_cc = 0, 0, -np.inf
    history: list[dict[str, float]] = []
    spath = state_path(run.out)
    if resume:
        if not spath.is_file():
            raise VistError(f"--resume: no saved state {spath} (a run writes it after every epoch)")
        try:
            state = torch.load(spath, map_location=dev, weights_only=True)
        except Exception as exc:  # torch.load raises many kinds on a truncated or foreign file: one message
            msg = first_line(exc) or type(exc).__name__
            raise VistError(f"--resume: cannot read {spath}: {msg}") from None
        if not isinstance(state, dict):
            raise VistError(f"--resume: {spath} holds a {type(state).__name__}, not a saved training state")
        if state.get("identity") != run.identity():
            raise VistError(f"--resume: {spath} was written by a different run (data, movies, recipe, seed or model)")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            if state["swa"] is not None:
                swa = copy.deepcopy(model)
                swa.load_state_dict(state["swa"])
            swa_n, first_epoch, best_cc = int(state["swa_n"]), int(state["epoch"]), float(state["best_cc"])
            history = list(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            msg = first_line(exc)[:160]
            raise VistError(f"--resume: {spath} is damaged ({type(exc).__name__}: {msg})") from None
        if not 0 <= first_epoch <= recipe.epochs:
            raise VistError(f"--resume: {spath} says {first_epoch} epochs are done, of {recipe.epochs}")
        log(f"resumed from {spath}: {first_epoch} of {recipe.epochs} epochs done")
    net: torch.nn.Module = model
    if run.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    total = recipe.steps
    step = first_epoch * recipe.batches_per_epoch
    objective = loss_function(recipe.loss)
    for epoch in range(first_epoch, recipe.epochs):
        rng = np.random.default_rng([run.seed, run.dist.rank, epoch])
        torch.manual_seed(_epoch_seed(run.seed, run.dist.rank, epoch))
        net.train()
        losses = []
        for _ in range(recipe.batches_per_epoch):
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, recipe)
            starts = window_starts(run.train.lengths, local, rng)
            x = torch.from_numpy(np.stack([run.train.feats[s : s + recipe.window] for s in starts])).to(dev)
            y = torch.from_numpy(np.stack([run.train.rates[s : s + recipe.window] for s in starts])).to(dev)
            y_hat = net(x, run.rf.expand(len(starts), -1, -1, -1)).transpose(1, 2)  # [B, T, C]
            loss, _parts = objective(y_hat, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            if on_step:
                on_step(step, total, losses[-1])
        if epoch >= recipe.swa_start:  # average the weights at the end of each SWA epoch
            if swa is None:
                swa = copy.deepcopy(model)
            else:
                with torch.no_grad():
                    for a, p in zip(swa.parameters(), model.parameters()):
                        a.mul_(swa_n / (swa_n + 1)).add_(p, alpha=1 / (swa_n + 1))
            swa_n += 1
        if not run.dist.main:
            continue
        cc = evaluate(model, run.test, run.rf)
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "cc": float(np.mean(cc))}
        history.append(entry)
        if on_epoch:
            on_epoch(entry)
        log(f"epoch {epoch + 1}/{recipe.epochs}: loss {entry['loss']:.4f}, held-out CC {entry['cc']:.3f}")
        if entry["cc"] > best_cc:
            best_cc = entry["cc"]
            run.save(run.out, model, epoch=epoch, held_out_cc=entry["cc"])
        state = {"identity": run.identity(), "model": model.state_dict(), "opt": opt.state_dict(),
                 "swa": None if swa is None else swa.state_dict(), "swa_n": swa_n, "epoch": epoch + 1,
                 "best_cc": float(best_cc), "history": history}  # fmt: skip
        with atomic_path(spath) as tmp:
            torch.save(state, tmp)
    final = model
    if swa is not None and run.dist.main:
        torch.manual_seed(_epoch_seed(run.seed, run.dist.rank, recipe.epochs))  # dropout during the refresh
        _refresh_batchnorm(swa, run.train, run.rf, recipe, np.random.default_rng([run.seed, 99]))
        cc = float(np.mean(evaluate(swa, run.test, run.rf)))
        log(f"SWA over {swa_n} epochs: held-out CC {cc:.3f}")
        history.append({"epoch": recipe.epochs, "cc": cc, "swa": 1.0})
        final = swa
        if cc > best_cc:
            best_cc = cc
            run.save(run.out, swa, epoch=recipe.epochs, held_out_cc=cc, swa=True)
    if run.dist.main:
        run.save(run.last, final, epoch=recipe.epochs, history=history)
    return TrainResult(run.out, run.last, history, float(best_cc))
