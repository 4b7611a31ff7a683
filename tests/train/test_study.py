"""`vist-rt study`: each study end to end at a tiny size; its arms differ in what they should; resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vist_rt.cli import main
from vist_rt.cli.study import STUDY_NAMES
from vist_rt.data.simulate import write_simulation
from vist_rt.errors import VistError
from vist_rt.features import DINOv2Extractor, PatchesExtractor
from vist_rt.model import load_checkpoint
from vist_rt.model.config import ABLATIONS
from vist_rt.train import study as study_mod
from vist_rt.train.durations import analyse_durations, window_after
from vist_rt.train.evaluate import evaluate_checkpoint
from vist_rt.train.loss import LOSSES, loss_function
from vist_rt.train.schedule import Recipe
from vist_rt.train.study import Movies, default_movies, plan_study
from vist_rt.train.trainer import feature_cache_path, read_cache_entry, train

TINY = "[recipe]\nwindow = 16\nbatch = 2\nbatches_per_epoch = 2\nepochs = 2\nwarmup_epochs = 1\nswa_start = 1\n"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    write_simulation(folder / "sim.h5", n_cells=6, n_movies=3, n_frames=48, n_trials=3, seed=4, size=(40, 48))
    (folder / "tiny.toml").write_text(TINY)
    return folder / "sim.h5"


def _study(sim: Path, name: str, out: Path, *extra: str) -> dict:
    args = ["study", name, str(sim), "--out", str(out), "--recipe", str(sim.with_name("tiny.toml")),
            "--image-size", "126", *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "study.json").read_text())


def test_the_cli_knows_every_study() -> None:
    assert STUDY_NAMES == study_mod.STUDIES


def test_default_movies() -> None:
    assert default_movies(["a", "b", "c"], None, None, None) == Movies("a", "b", "c")
    assert default_movies(["a", "b"], None, None, None) == Movies("a", "b", "b")  # optimistic, and said so
    assert default_movies(["a", "b", "c"], "c", None, None) == Movies("c", "a", "b")
    assert default_movies(["a"], None, None, None) == Movies("a", "a", "a")
    with pytest.raises(VistError, match="movie 'z' is not in the dataset"):
        default_movies(["a", "b"], None, None, "z")


def test_plans() -> None:
    ids = [f"c{i}" for i in range(10)]
    kw = dict(cell_ids=ids, movies=Movies("a", "b", "c"), extractor=PatchesExtractor(126, "grey"),
              recipe=Recipe(), preset="cpu-small")  # fmt: skip
    abl = plan_study("ablation", seeds=2, **kw)
    assert [a.group for a in abl.arms[:4]] == ["full", *ABLATIONS] and len(abl.arms) == 8
    assert {a.seed for a in abl.arms} == {0, 1} and len({a.key for a in abl.arms}) == 8
    loss = plan_study("loss", seeds=1, **kw)
    assert {a.loss for a in loss.arms} == set(LOSSES) and len(loss.arms) == 2 * len(LOSSES)
    assert {(a.train_movie, a.eval_movie) for a in loss.arms} == {("a", "c"), ("c", "a")}
    pop = plan_study("population", seeds=2, sizes=[2, 5, 10], **kw)
    scored = pop.arms[0].scored_cells
    assert len(scored) == 2 and all(a.scored_cells == scored for a in pop.arms)
    for a in pop.arms:  # the scored cells are in every subset, with n - 2 others
        assert a.cells is not None and len(a.cells) == a.n_cells and set(scored) <= set(a.cells)
        assert len(set(a.cells)) == len(a.cells)
    assert {a.cells for a in pop.arms if a.n_cells == 5 and a.seed == 0} != {
        a.cells for a in pop.arms if a.n_cells == 5 and a.seed == 1
    }
    assert plan_study("population", seeds=1, **kw).settings["sizes"] == [2, 4, 8, 10]
    with pytest.raises(VistError, match="--sizes: the dataset has 10 cells"):
        plan_study("population", seeds=1, sizes=[4, 11], **kw)
    with pytest.raises(VistError, match="--scored-cells"):
        plan_study("population", seeds=1, sizes=[3, 6], scored=4, **kw)
    with pytest.raises(VistError, match="compares DINOv2 blocks"):
        plan_study("blocks", seeds=1, **kw)
    with pytest.raises(VistError, match="--seeds"):
        plan_study("loss", seeds=0, **kw)
    vit = DINOv2Extractor("vits14", None, block=-1, image_size=126, seed=0)
    with_vit = plan_study("ablation", seeds=1, **{**kw, "extractor": vit})
    assert with_vit.arms[-1].group == study_mod.NO_PRIOR and with_vit.arms[-1].prior == "patches"
    assert plan_study("blocks", seeds=1, **{**kw, "extractor": vit}).settings["blocks"] == [0, 5, 11]


@pytest.mark.slow
def test_ablation_study_arms_lack_their_module_and_resume(sim: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "abl"
    s = _study(sim, "ablation", out)
    groups = [g["group"] for g in s["groups"]]
    assert groups == ["full", *ABLATIONS]
    full = load_checkpoint(out / "arms" / "full.seed0" / "model.safetensors")
    assert full.config.ablations == ()
    for name in ABLATIONS:  # an ablated model really lacks the module: its config says so, its weights lack it
        ck = load_checkpoint(out / "arms" / f"{name}.seed0" / "model.safetensors")
        assert ck.config.ablations == (name,)
        assert set(ck.model.state_dict()) < set(full.model.state_dict())
    for row in s["results"]:
        assert np.isfinite(row["cc"]) and row["cells_scored"] == 6 and row["eval_movie"] == "movie3"
        assert row["sdkl_capped"] <= 6 and row["cc_norm"] is not None
    assert (out / "study.png").stat().st_size > 1000 and s["optimistic"] is False
    # resumable: a rerun trains nothing; an arm without its eval is evaluated again, one without files retrained
    calls: list[str] = []
    real_train = study_mod.train
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: calls.append(str(a[2])) or real_train(*a, **k))
    _study(sim, "ablation", out)
    assert calls == []
    (out / "arms" / "no-rf.seed0" / "eval.json").unlink()
    for f in (out / "arms" / "no-c3tcn.seed0").iterdir():
        f.unlink()
    again = _study(sim, "ablation", out)
    assert [Path(c).parent.name for c in calls] == ["no-c3tcn.seed0"]
    before = {r["key"]: r["cc"] for r in s["results"]}
    after = {r["key"]: r["cc"] for r in again["results"]}
    assert after == pytest.approx(before, abs=1e-6)  # seeded: the retrained arm is the same model
    # other settings in the same folder are refused, with nothing run
    args = ["study", "ablation", str(sim), "--out", str(out), "--seeds", "2", "--image-size", "126",
            "--recipe", str(sim.with_name("tiny.toml"))]  # fmt: skip
    calls.clear()
    assert main(args) == 2 and calls == []
    assert "holds a study with other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_interrupted_study_redoes_only_unfinished_arms(sim: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "loss"
    real_train = study_mod.train
    calls: list[str] = []

    def stop_in_the_third(*a: object, **k: object) -> object:
        calls.append(Path(str(a[2])).parent.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(study_mod, "train", stop_in_the_third)
    args = ["study", "loss", str(sim), "--out", str(out), "--recipe", str(sim.with_name("tiny.toml")),
            "--image-size", "126"]  # fmt: skip
    assert main(args) == 130 and not (out / "study.json").exists()
    done = sorted(p.parent.name for p in (out / "arms").glob("*/eval.json"))
    assert done == sorted(calls[:2])
    calls.clear()
    monkeypatch.setattr(study_mod, "train", lambda *a, **k: calls.append(Path(str(a[2])).parent.name)
                        or real_train(*a, **k))  # fmt: skip
    s = _study(sim, "loss", out)
    assert len(calls) == 2 * len(LOSSES) - 2 and not set(calls) & set(done)
    losses = {r["key"]: load_checkpoint(out / "arms" / r["key"] / "model.safetensors").meta["recipe"]["loss"]
              for r in s["results"]}  # fmt: skip
    assert {r["key"]: r["loss"] for r in s["results"]} == losses
    back = [r for r in s["results"] if r["train_movie"] == "movie3"]
    assert len(back) == len(LOSSES) and all(r["eval_movie"] == "movie1" for r in back)
    # the losses really differ: same seed, data and direction, other weights
    w = {r["loss"]: load_checkpoint(out / "arms" / r["key"] / "model.last.safetensors").model.state_dict()
         for r in s["results"] if r["train_movie"] == "movie1"}  # fmt: skip
    for a, b in (("vist", "rmse"), ("vist", "poisson"), ("rmse", "poisson")):
        assert any(not torch.equal(w[a][k], w[b][k]) for k in w[a])


def test_the_losses_give_other_gradients(make_model, tiny) -> None:
    model = make_model(tiny)
    x = torch.randn(2, 24, tiny.tokens, tiny.feature_dim)
    rf = torch.rand(2, tiny.cells, tiny.grid, tiny.grid)
    y = torch.rand(2, 24, tiny.cells) * 5
    grads = {}
    for name in LOSSES:
        model.zero_grad()
        loss, _ = loss_function(name)(model(x, rf).transpose(1, 2), y)
        loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for a, b in (("vist", "rmse"), ("vist", "poisson"), ("rmse", "poisson")):
        cos = torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0)
        assert cos < 0.999, (a, b, float(cos))


@pytest.mark.slow
def test_population_study_scores_the_same_cells(sim: Path, tmp_path: Path) -> None:
    out = tmp_path / "pop"
    s = _study(sim, "population", out, "--sizes", "2,4,6", "--seeds", "2")
    scored = s["settings"]["scored_cells"]
    assert len(scored) == 2 and [g["group"] for g in s["groups"]] == ["n=2", "n=4", "n=6"]
    assert all(g["seeds"] == 2 and g["cells_scored"] == 2 for g in s["groups"])
    for row in s["results"]:
        ck = load_checkpoint(out / "arms" / row["key"] / "model.safetensors")
        assert ck.config.cells == row["n_cells"] == row["cells_modelled"] and set(scored) <= set(ck.cell_ids)
        ev = json.loads((out / "arms" / row["key"] / "eval.json").read_text())
        cc = dict(zip(ev["cell_ids"], ev["vist"]["cc"]))
        assert row["cc"] == pytest.approx(np.mean([cc[c] for c in scored]))
    assert (out / "study.png").exists()


@pytest.mark.slow
def test_blocks_study_computes_every_block_in_one_pass(sim: Path, tmp_path: Path, monkeypatch) -> None:
    passes: list[list[int]] = []
    real = DINOv2Extractor.tokens_of_blocks

    def counted(self: DINOv2Extractor, frames: np.ndarray, blocks: list[int]) -> np.ndarray:
        passes.append(list(blocks))
        return real(self, frames, blocks)

    monkeypatch.setattr(DINOv2Extractor, "tokens_of_blocks", counted)
    out = tmp_path / "blk"
    vit = ["--extractor", "dinov2", "--backbone", "vits14", "--random-vit", "2"]
    s = _study(sim, "blocks", out, "--blocks", "1,3", *vit)
    assert [g["group"] for g in s["groups"]] == ["block 1", "block 3"]
    assert passes and all(p == [1, 3] for p in passes)  # one ViT pass serves both blocks
    frames = np.zeros((2, 40, 48), np.uint8)
    frames[1] = 200
    for b in (1, 3):
        ck = load_checkpoint(out / "arms" / f"block_{b}.seed0" / "model.safetensors")
        assert ck.extractor["block"] == b
        single = DINOv2Extractor("vits14", None, block=b, image_size=126, seed=2)
        entry, why = read_cache_entry(feature_cache_path(sim, "movie1", single, out / "features"), 48, single)
        assert entry is not None, why
        with h5py.File(sim) as f:
            first = f["movies/movie1/stimulus"][:4]
        np.testing.assert_allclose(entry[:4], single(first), rtol=0, atol=1e-5)  # what that block's extractor gives


def test_durations_find_the_planted_peaks() -> None:
    rng = np.random.default_rng(0)
    traces = []
    for _ in range(6):
        x = np.zeros(3000)
        t = 0
        while t < 2950:  # triangles 6 or 14 frames wide at the base, apart
            w = 6 if rng.random() < 0.5 else 14
            x[t : t + w + 1] = 0.8 * (1 - np.abs(np.linspace(-1, 1, w + 1)))
            t += w + int(rng.integers(3, 9))
        traces.append(x)
    report = analyse_durations({"m": np.stack(traces, 1)}, fps=30.0, scale=1.0)
    assert sorted(report.peaks) == pytest.approx([6.5, 14.5], abs=1.0)
    assert report.windows == (window_after(max(report.peaks)), window_after(min(report.peaks)))
    assert all(w % 2 == 1 and w > p for w, p in zip(report.windows, sorted(report.peaks, reverse=True)))
    assert report.blocks == ((1, report.windows[0]), (1, report.windows[1]))
    assert window_after(12.5) == 13 and window_after(13.0) == 15 and window_after(2.5) == 3
    with pytest.raises(VistError, match="needs at least 10"):
        analyse_durations({"m": np.zeros((50, 2))}, fps=30.0, scale=1.0)


def test_durations_study_cli(sim: Path, tmp_path: Path, capsys) -> None:
    assert main(["study", "durations", str(sim), "--out", str(tmp_path / "d")]) == 0
    s = json.loads((tmp_path / "d" / "study.json").read_text())
    assert s["n_durations"] == sum(s["per_movie"].values()) == sum(s["histogram_counts"]) > 10
    assert s["windows"] and (tmp_path / "d" / "durations.png").stat().st_size > 1000
    assert "suggested CMST windows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["ablation", "--sizes", "2,4"], "--sizes applies to the population study"),
        (["ablation", "--blocks", "1"], "--blocks applies to the blocks study"),
        (["blocks"], "compares DINOv2 blocks"),
        (
            ["blocks", "--extractor", "dinov2", "--backbone", "vits14", "--random-vit", "0", "--blocks", "3,12"],
            "block 12 is out of range",
        ),
        (["population", "--sizes", "2,99"], "the dataset has 6 cells"),
        (["loss", "--train-movie", "nope"], "movie 'nope' is not in the dataset"),
        pytest.param(
            ["ablation", "--device", "cuda"],
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA"),
        ),
    ],
)
def test_bad_study_requests_are_one_line(sim: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    name, *flags = extra
    assert main(["study", name, str(sim), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_checkpoint_of_some_cells_is_evaluated_on_those(sim: Path, tmp_path: Path) -> None:
    ext = PatchesExtractor(126, "grey")
    recipe = Recipe(window=16, batch=2, batches_per_epoch=1, epochs=1, warmup_epochs=0, swa_start=1)
    res = train(sim, "movie1", tmp_path / "m.safetensors", recipe=recipe, cells=["sim005", "sim001"], extractor=ext,
                log=lambda _l: None)  # fmt: skip
    ck = load_checkpoint(res.best)
    assert ck.cell_ids == ["sim005", "sim001"] and ck.config.cells == 2 and ck.meta["cells"] == ["sim005", "sim001"]
    result, arrays = evaluate_checkpoint(res.best, sim, "movie2")
    with h5py.File(sim) as f:
        rates = f["movies/movie2/rates"][()]
    np.testing.assert_array_equal(arrays["target"], rates[:, [5, 1]])
    assert result["cell_ids"] == ["sim005", "sim001"] and len(result["vist"]["cc"]) == 2
    with pytest.raises(VistError, match="not in the dataset"):
        train(sim, "movie1", tmp_path / "x.safetensors", recipe=recipe, cells=["sim999"], extractor=ext)


@pytest.mark.slow
def test_a_study_under_torchrun(sim: Path, tmp_path: Path) -> None:
    """Two gloo processes: every arm is a DDP run, rank 0 alone evaluates and writes the study."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vist_rt",
           "study", "population", str(sim), "--out", str(out), "--sizes", "2,4", "--image-size", "126",
           "--recipe", str(sim.with_name("tiny.toml"))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("study.json") == 1  # rank 0 only
    s = json.loads((out / "study.json").read_text())
    assert [g["group"] for g in s["groups"]] == ["n=2", "n=4"]
    for row in s["results"]:
        assert load_checkpoint(out / "arms" / row["key"] / "model.last.safetensors").meta["world_size"] == 2
