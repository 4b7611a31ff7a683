"""The paper's studies as one command each: arms that are ordinary train + eval runs, cached and resumable.

A study's folder holds `plan.json` (the settings and arms; a restart with other settings is refused),
`arms/<arm>/` (the arm's checkpoints, training state and `eval.json`: an arm with its `eval.json` is done,
one with a training state resumes), `study.json` (every arm and seed, mean and s.d. per group) and figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.bench.stats import write_json
from vist_rt.data.dataset import open_dataset
from vist_rt.data.paths import check_output_dir
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, Extractor, PatchesExtractor, from_spec
from vist_rt.model.config import ABLATIONS
from vist_rt.train.durations import analyse_durations, plot_durations
from vist_rt.train.evaluate import evaluate_checkpoint, save_figure
from vist_rt.train.loss import LOSSES
from vist_rt.train.metrics import sdkl_scale
from vist_rt.train.schedule import Recipe
from vist_rt.train.trainer import (
    feature_cache_path,
    read_cache_entry,
    start_distributed,
    state_path,
    store_cache_entry,
    train,
)

STUDIES = ("ablation", "loss", "blocks", "population", "durations")
NO_PRIOR = "no-vit-prior"  # the ablation arm whose features are grey pixel patches instead of the ViT's


@dataclasses.dataclass(frozen=True)
class Arm:
    """One train + eval run of a study."""

    key: str  # folder name under arms/, unique in the study
    group: str  # the bar (or point) it belongs to; seeds of one group are averaged
    seed: int
    train_movie: str
    test_movie: str  # picks the best epoch
    eval_movie: str  # scored
    ablations: tuple[str, ...] = ()
    loss: str | None = None  # None: the recipe's
    block: int | None = None  # DINOv2 block (blocks study); None: the study's extractor
    prior: str = "study"  # "study": the study's extractor; "patches": grey pixel patches (no ViT prior)
    cells: tuple[str, ...] | None = None  # modelled cells (population study); None: all
    scored_cells: tuple[str, ...] | None = None  # CC etc. over these cells only; None: all modelled
    n_cells: int | None = None  # population study: how many cells were modelled together

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """What a study runs: its settings (JSON-ready) and arms."""

    name: str
    settings: dict[str, Any]
    arms: tuple[Arm, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; equal plans give equal dicts."""
        return {"study": self.name, "settings": self.settings, "arms": [a.to_dict() for a in self.arms]}


@dataclasses.dataclass(frozen=True)
class Movies:
    """The movies of a study: train on one, pick the best epoch on another, score on a third (when there is one)."""

    train: str
    test: str
    eval: str


def default_movies(names: Sequence[str], train: str | None, test: str | None, evaluate: str | None) -> Movies:
    """The dataset's movies in order: train on the first, pick on the second, score on the third (or the second:
    then the score is optimistic, and `study.json` says so); given names are checked."""
    names = list(names)
    for given in (train, test, evaluate):
        if given is not None and given not in names:
            raise VistError(f"movie {given!r} is not in the dataset (movies: {', '.join(names)})")
    rest = [n for n in names if n not in (train, test, evaluate)]
    train = train or (rest.pop(0) if rest else None)
    if train is None:
        raise VistError("the dataset has no movie to train on")
    test = test or (rest.pop(0) if rest else train)
    evaluate = evaluate or (rest.pop(0) if rest else test)
    return Movies(train, test, evaluate)


def _int_list(values: Sequence[int] | None, what: str, low: int) -> tuple[int, ...]:
    vals = tuple(int(v) for v in values or ())
    if not vals or len(set(vals)) != len(vals) or min(vals) < low:
        raise VistError(f"{what} must be distinct integers >= {low}, got {list(values or [])}")
    return vals


def plan_study(
    name: str,
    *,
    cell_ids: Sequence[str],
    movies: Movies,
    seeds: int,
    extractor: Extractor,
    recipe: Recipe,
    preset: str,
    blocks: Sequence[int] | None = None,
    sizes: Sequence[int] | None = None,
    scored: int | None = None,
) -> StudyPlan:
    """The arms of study `name` (not `durations`, which trains nothing). Each seed runs every group.

    ablation: the full model, each of ABLATIONS, and (DINOv2 features only) the prior swapped for grey patches.
    loss: each of LOSSES, trained on movies.train and scored on movies.eval, and the reverse direction.
    blocks: the DINOv2 `blocks` (0-based, as `--block`). population: `sizes` (numbers of cells modelled together,
    default powers of two up to all); the same `scored` cells (default the smallest size) are in every subset
    and scored; the others are drawn per seed and size.
    """
    if name not in STUDIES or name == "durations":
        raise VistError(f"unknown study {name!r}; one of {', '.join(STUDIES)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise VistError(f"--seeds must be an integer >= 1, got {seeds!r}")
    m = movies
    base = {"train_movie": m.train, "test_movie": m.test, "eval_movie": m.eval}
    groups: list[tuple[str, dict[str, Any]]] = []
    settings: dict[str, Any] = {"preset": preset, "recipe": dataclasses.asdict(recipe), "seeds": seeds,
                                "extractor": extractor.spec, "movies": dataclasses.asdict(m),
                                "cells": len(cell_ids)}  # fmt: skip
    if name == "ablation":
        groups = [("full", {})] + [(a, {"ablations": (a,)}) for a in ABLATIONS]
        if extractor.spec["kind"] == "dinov2":
            groups.append((NO_PRIOR, {"prior": "patches"}))
    elif name == "loss":
        back = {"train_movie": m.eval, "eval_movie": m.train}
        if m.eval == m.train:
            raise VistError("the loss study trains on one movie and scores on another: the dataset needs 2 movies")
        for loss in LOSSES:
            groups.append((f"{loss} {m.train}->{m.eval}", {"loss": loss}))
            groups.append((f"{loss} {m.eval}->{m.train}", {"loss": loss, **back}))
    elif name == "blocks":
        if extractor.spec["kind"] != "dinov2":
            raise VistError("the blocks study compares DINOv2 blocks: give --extractor dinov2 (--vit-weights or "
                            "--random-vit)")  # fmt: skip
        if blocks is None:  # first, middle and the extractor's own block
            last = extractor.spec["block"]
            chosen = tuple(sorted({0, max(0, (last + 1) // 2 - 1), last}))
        else:
            chosen = tuple(sorted(set(_int_list(blocks, "--blocks", 0))))
        settings["blocks"] = list(chosen)
        groups = [(f"block {b}", {"block": b}) for b in chosen]
    elif name == "population":
        n_all = len(cell_ids)
        if sizes is None:
            sizes = [2**k for k in range(1, int(math.log2(n_all)) + 1)] + ([n_all] if n_all & (n_all - 1) else [])
        chosen = tuple(sorted(set(_int_list(sizes, "--sizes", 1))))
        if max(chosen) > n_all:
            raise VistError(f"--sizes: the dataset has {n_all} cells, fewer than {max(chosen)}")
        k = scored if scored is not None else min(chosen)
        if not 1 <= k <= min(chosen):
            raise VistError(f"--scored-cells must be 1 to the smallest size ({min(chosen)}), got {k}")
        rng = np.random.default_rng([20240, n_all, k])  # the scored cells: the same for every seed and size
        scored_ids = tuple(str(cell_ids[i]) for i in sorted(rng.choice(n_all, size=k, replace=False)))
        others = [str(c) for c in cell_ids if str(c) not in scored_ids]
        settings.update(sizes=list(chosen), scored_cells=list(scored_ids))
        arms = []
        for seed in range(seeds):
            for n in chosen:
                pick = np.random.default_rng([seed, n]).choice(len(others), size=n - k, replace=False)
                cells = scored_ids + tuple(others[i] for i in sorted(pick))
                arms.append(Arm(f"n{n}.seed{seed}", f"n={n}", seed, **base, cells=cells,
                                scored_cells=scored_ids, n_cells=n))  # fmt: skip
        return StudyPlan(name, settings, tuple(arms))
    arms = [Arm(f"{g.replace(' ', '_').replace('->', '-to-')}.seed{seed}", g, seed, **{**base, **kw})
            for seed in range(seeds) for g, kw in groups]  # fmt: skip
    return StudyPlan(name, settings, tuple(arms))


def arm_extractor(arm: Arm, extractor: Extractor, vit_weights: str | None) -> Extractor:
    """The features an arm trains on: the study's, another DINOv2 block of it, or grey pixel patches."""
    if arm.prior == "patches":
        pre = extractor.preprocess.spec
        return PatchesExtractor(pre.image_size, channels="grey", crop=pre.crop, color=pre.color)
    if arm.block is None or arm.block == extractor.spec.get("block"):
        return extractor
    spec = {k: v for k, v in extractor.spec.items() if k != "weights_sha256"}  # that of other blocks differs
    return from_spec({**spec, "block": arm.block}, weights=vit_weights)


def fill_block_features(
    data: Path,
    movies: Sequence[str],
    extractors: Sequence[DINOv2Extractor],
    cache: Path,
    *,
    chunk: int = 32,
    log: Callable[[str], None] = print,
) -> None:
    """Cache the features of every block of `extractors` (one DINOv2 model, several blocks) for `movies`, the ViT
    running once per movie up to the deepest block; entries already current are kept."""
    deepest = max(extractors, key=lambda e: e.spec["block"])
    blocks = [e.spec["block"] for e in extractors]
    with open_dataset(data) as ds:
        for name in dict.fromkeys(movies):
            stim = ds.movie(name).stimulus
            paths = [feature_cache_path(data, name, e, cache) for e in extractors]
            if all(read_cache_entry(p, stim.shape[0], e)[0] is not None for p, e in zip(paths, extractors)):
                continue
            log(f"{name}: DINOv2 blocks {', '.join(map(str, blocks))} in one pass")
            n = int(stim.shape[0])
            out = np.empty((len(blocks), n, deepest.tokens, deepest.dim), np.float32)
            for start in range(0, n, chunk):
                out[:, start : start + chunk] = deepest.tokens_of_blocks(np.asarray(stim[start : start + chunk]),
                                                                         blocks)  # fmt: skip
            for i, p in enumerate(paths):
                store_cache_entry(p, out[i])


def _arm_figures(result: dict[str, Any], scored: tuple[str, ...] | None) -> dict[str, Any]:
    """An arm's headline figures from its eval JSON (over `scored` cells when given)."""
    ids = result.get("cell_ids") or []
    v = result["vist"]
    idx = [ids.index(c) for c in scored] if scored else list(range(len(v["cc"])))
    cc = np.asarray(v["cc"], float)[idx]
    sd = np.asarray(v["sdkl"], float)[idx]
    norm = [v["cc_norm"][i] for i in idx] if v.get("cc_norm") else []
    norm_ok = [x for x in norm if x is not None]
    out = {"cc": float(cc.mean()), "cc_norm": float(np.mean(norm_ok)) if norm_ok else None,
           "sdkl": float(sd.mean()), "sdkl_capped": int((sd >= 1000.0).sum()), "cells_scored": len(idx)}  # fmt: skip
    if "ln" in result:
        out["ln_cc"] = float(np.asarray(result["ln"]["cc"], float)[idx].mean())
    return out


def summarise(plan: StudyPlan, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """study.json: every arm's figures, and per group the mean and s.d. over seeds."""
    arms, by_group = [], {}
    for arm in plan.arms:
        res = results[arm.key]
        figs = _arm_figures(res, arm.scored_cells)
        arms.append({**arm.to_dict(), **figs, "cells_modelled": res["cells"], "frames_scored": res["frames"]})
        by_group.setdefault(arm.group, []).append(figs)
    groups = []
    for name, rows in by_group.items():
        g: dict[str, Any] = {"group": name, "seeds": len(rows)}
        for key in ("cc", "cc_norm", "sdkl", "ln_cc"):
            vals = [r[key] for r in rows if r.get(key) is not None]
            g[f"{key}_mean"] = float(np.mean(vals)) if vals else None
            g[f"{key}_sd"] = float(np.std(vals)) if vals else None
        g["sdkl_capped"] = [r["sdkl_capped"] for r in rows]
        g["cells_scored"] = rows[0]["cells_scored"]
        groups.append(g)
    movies = plan.settings["movies"]
    return {**plan.to_dict(), "optimistic": movies["eval"] == movies["test"], "results": arms, "groups": groups}


def plot_study(study: dict[str, Any], path: Path) -> None:
    """Bars of CC (mean, s.d. over seeds) with SD-KL on a second axis; for the population study, CC against n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = study["groups"]
    cc = np.array([g["cc_mean"] for g in groups])
    cc_sd = np.array([g["cc_sd"] for g in groups])
    sd = np.array([g["sdkl_mean"] for g in groups])
    sd_sd = np.array([g["sdkl_sd"] for g in groups])
    if study["study"] == "population":
        n = [int(g["group"].removeprefix("n=")) for g in groups]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.errorbar(n, cc, yerr=cc_sd, marker="o", color="C1", capsize=3, label="Vi-ST CC")
        ln = [g["ln_cc_mean"] for g in groups]
        if all(v is not None for v in ln):
            ax.plot(n, ln, "s--", color="C0", label="LN CC")
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(v) for v in n])
        ax.set_xlabel("cells modelled together (n)")
        ax.set_ylabel(f"mean CC of the same {groups[0]['cells_scored']} cells")
        ax.legend(fontsize=8)
    else:
        x = np.arange(len(groups))
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups)), 3.8))
        ax.bar(x, cc, yerr=cc_sd, color="C1", capsize=3, label="CC")
        ax.set_ylabel("mean CC")
        ax.set_xticks(x, [g["group"] for g in groups], rotation=20, ha="right", fontsize=8)
        ax2 = ax.twinx()
        ax2.errorbar(x, sd, yerr=sd_sd, fmt="o", color="C0", capsize=3, label="SD-KL")
        ax2.set_ylabel("mean SD-KL (lower is better)")
        ax2.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles, ["CC", "SD-KL"], fontsize=8, loc="upper right")
    seeds = groups[0]["seeds"]
    ax.set_title(f"study {study['study']}: {seeds} seed{'s' if seeds > 1 else ''} per group", fontsize=10)
    fig.tight_layout()
    save_figure(plt, fig, path)


def _read_eval(path: Path) -> dict[str, Any] | None:
    """An arm's eval JSON, or None when it is missing or unreadable (then the arm is evaluated again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "vist" in data and "cells" in data else None


def _check_plan(out: Path, plan: StudyPlan) -> None:
    """Write plan.json, or check that the one already there is this plan (a study resumes only itself)."""
    path = out / "plan.json"
    mine = json.loads(json.dumps(plan.to_dict()))
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except (OSError, ValueError):
            theirs = None
        if theirs != mine:
            raise VistError(f"{out} holds a study with other settings ({path}): give another --out, "
                            "or the same settings to resume it")  # fmt: skip
        return
    write_json(path, mine)


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """How the arms run: data, extractor, where, and callbacks for progress."""

    data: Path
    out: Path
    extractor: Extractor
    recipe: Recipe
    preset: str
    vit_weights: str | None = None
    device: str = "cpu"
    cache: Path | None = None  # default: <out>/features
    command: str | None = None
    log: Callable[[str], None] = print
    on_arm: Callable[[int, int, Arm], None] | None = None  # (arms done, arms, the arm starting)
    on_step: Callable[[int, int, float], None] | None = None


def run_study(plan: StudyPlan, run: StudyRun) -> dict[str, Any]:
    """Run every unfinished arm (train, then eval on the arm's movie), then write study.json and study.png.
    Under torchrun every rank trains each arm (DDP, one process group for the whole study) and rank 0 alone
    evaluates and writes."""
    import torch

    if run.device == "cuda" and not torch.cuda.is_available():  # before anything is written
        raise VistError("--device cuda: no CUDA device is available to torch here")
    _where, _device, created = start_distributed(torch.device(run.device))
    try:
        return _run_arms(plan, run)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run_arms(plan: StudyPlan, run: StudyRun) -> dict[str, Any]:
    main = os.environ.get("RANK", "0") == "0"
    out = check_output_dir(run.out, flag="--out")
    cache = run.cache or out / "features"
    check_output_dir(cache, flag="--cache")
    extractors = {a.key: arm_extractor(a, run.extractor, run.vit_weights) for a in plan.arms}  # bad blocks: here
    out.mkdir(parents=True, exist_ok=True)
    if main:
        _check_plan(out, plan)
    blocks = [e for e in {id(e): e for e in extractors.values()}.values() if isinstance(e, DINOv2Extractor)]
    if plan.name == "blocks" and main:
        movies = [m for a in plan.arms for m in (a.train_movie, a.test_movie, a.eval_movie)]
        fill_block_features(run.data, movies, blocks, cache, log=run.log)
    results: dict[str, dict[str, Any]] = {}
    for i, arm in enumerate(plan.arms):
        folder = out / "arms" / arm.key
        done = _read_eval(folder / "eval.json")
        if done is not None:
            results[arm.key] = done
            continue
        if run.on_arm:
            run.on_arm(i, len(plan.arms), arm)
        folder.mkdir(parents=True, exist_ok=True)
        ckpt = folder / "model.safetensors"
        if not (folder / "model.last.safetensors").exists():  # written when training ends
            resume = state_path(ckpt).exists()
            run.log(f"{arm.key}: {'resuming' if resume else 'training'} ({arm.train_movie} -> {arm.eval_movie})")
            recipe = run.recipe if arm.loss is None else dataclasses.replace(run.recipe, loss=arm.loss)
            train(run.data, arm.train_movie, ckpt, test_movie=arm.test_movie, preset=run.preset, recipe=recipe,
                  ablations=arm.ablations, cells=arm.cells, extractor=extractors[arm.key], seed=arm.seed,
                  cache_dir=cache, device=run.device, resume=resume, force=not resume, command=run.command,
                  log=lambda _line: None, on_step=run.on_step)  # fmt: skip
        if not main:
            continue
        weights = run.vit_weights if extractors[arm.key].spec["kind"] == "dinov2" else None
        result, _arrays = evaluate_checkpoint(ckpt, run.data, arm.eval_movie, vit_weights=weights,
                                              cache_dir=cache)  # fmt: skip
        write_json(folder / "eval.json", result)
        results[arm.key] = result
        figs = _arm_figures(result, arm.scored_cells)
        run.log(f"{arm.key}: CC {figs['cc']:.3f}, SD-KL {figs['sdkl']:.2f} on {arm.eval_movie}")
    if not main:
        return {}
    study = summarise(plan, results)
    study["command"] = run.command
    write_json(out / "study.json", study)
    plot_study(study, out / "study.png")
    return study


def run_durations(data: Path, out: Path, *, command: str | None = None) -> dict[str, Any]:
    """The duration study (Fig. 3) on every movie's recorded rates: study.json and durations.png in `out`."""
    out = check_output_dir(out, flag="--out")
    with open_dataset(data) as ds:
        rates = {name: np.asarray(ds.movie(name).rates) for name in ds.movies}
        fps, scale = float(ds.fps), sdkl_scale(ds.units, ds.fps)
        cells = ds.n_cells
    report = analyse_durations(rates, fps=fps, scale=scale)
    out.mkdir(parents=True, exist_ok=True)
    study = {"study": "durations", "dataset": str(data), "cells": cells, "movies": list(rates),
             "command": command, **report.to_dict()}  # fmt: skip
    write_json(out / "study.json", study)
    plot_durations(report, out / "durations.png")
    return study
