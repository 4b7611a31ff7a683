"""Training on the simulated retina: the loss falls, held-out CC is tracked, checkpoints load and stream."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vist_rt.cli import main
from vist_rt.data.dataset import open_dataset
from vist_rt.data.simulate import write_simulation
from vist_rt.errors import VistError
from vist_rt.features import PatchesExtractor
from vist_rt.model import StreamingViST, load_checkpoint
from vist_rt.train import schedule, trainer
from vist_rt.train.metrics import cc_per_cell
from vist_rt.train.trainer import recipe_from_toml, state_path, train


@pytest.mark.slow
def test_train_on_the_simulator_writes_usable_checkpoints(tmp_path: Path, capsys) -> None:
    write_simulation(tmp_path / "sim.h5", n_cells=6, n_movies=2, n_frames=160, n_trials=4, seed=1, size=(60, 80))
    out = tmp_path / "m.safetensors"
    args = ["train", str(tmp_path / "sim.h5"), "--train-movie", "movie1", "--test-movie", "movie2",
            "--out", str(out), "--seed", "3", "--cache", str(tmp_path / "cache"),
            "--recipe", str(_tiny_recipe(tmp_path, epochs=4))]  # fmt: skip
    assert main(args) == 0
    assert "best held-out CC" in capsys.readouterr().out
    last = load_checkpoint(out.with_name("m.last.safetensors"))
    history = last.meta["history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]  # it learns
    best = load_checkpoint(out)
    assert best.meta["test_movie"] == "movie2" and best.meta["seed"] == 3 and best.cell_ids == last.cell_ids
    assert best.extractor["kind"] == "patches" and best.fps == 30.0 and best.meta["recipe"]["loss"] == "vist"
    assert any((tmp_path / "cache").glob("features-movie1-*.npy"))  # features cached for the next run
    # the trained model streams exactly like its offline forward
    feats = torch.randn(1, 200, best.config.tokens, best.config.feature_dim)
    with torch.no_grad():
        offline = best.model(feats, best.rf[None])[0]
    stream = StreamingViST.from_model(best.model, best.rf)
    online = torch.stack([stream.step(feats[:, t]) for t in range(200)], dim=-1)[0]
    np.testing.assert_allclose(online.numpy(), offline.numpy(), rtol=0, atol=1e-4)
    json.dumps(best.meta)
    prov = best.meta["provenance"]
    assert prov["simulation"]["seed"] == 1 and prov["command"].startswith("vist-rt train ")
    assert len(prov["dataset_sha256"]) == 64 and best.meta["world_size"] == 1


def _tiny_recipe(folder: Path, epochs: int = 3, batch: int = 4) -> Path:
    path = folder / "tiny.toml"
    path.write_text(f"[recipe]\nwindow = 32\nbatch = {batch}\nbatches_per_epoch = 4\nepochs = {epochs}\n"
                    "warmup_epochs = 1\nswa_start = 2\nswa_anneal_epochs = 1\nlr = 2e-3\n")  # fmt: skip
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


class _StopError(Exception):
    pass


@pytest.mark.slow
def _raise_stop(*_args: object) -> None:
    raise _StopError


def test_seeded_reproducible_and_resume_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    write_simulation(tmp_path / "s.h5", n_cells=4, n_movies=2, n_frames=80, n_trials=2, seed=2, size=(40, 48))
    recipe = recipe_from_toml(_tiny_recipe(tmp_path, epochs=4))  # SWA after epochs 3 and 4
    common = dict(test_movie="movie2", recipe=recipe,
                  log=lambda _line: None)  # fmt: skip
    a = train(tmp_path / "s.h5", "movie1", tmp_path / "a.safetensors", seed=5, **common)
    b = train(tmp_path / "s.h5", "movie1", tmp_path / "b.safetensors", seed=5, **common)
    c = train(tmp_path / "s.h5", "movie1", tmp_path / "c.safetensors", seed=6, **common)
    wa, wb, wc = _weights(a.last), _weights(b.last), _weights(c.last)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed: bit-identical
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)  # another seed: another model
    assert a.history == b.history

    for stop_at, done in ((recipe.batches_per_epoch + 2, 1), (3 * recipe.batches_per_epoch + 1, 3)):

        def stop(step: int, _total: int, _loss: float, stop_at: int = stop_at) -> None:
            if step == stop_at:
                raise _StopError

        out = tmp_path / f"r{done}.safetensors"
        with pytest.raises(_StopError):
            train(tmp_path / "s.h5", "movie1", out, seed=5, on_step=stop, **common)
        assert state_path(out).is_file() and not out.with_name(f"r{done}.last.safetensors").exists()
        lines: list[str] = []
        r = train(tmp_path / "s.h5", "movie1", out, seed=5, resume=True, **{**common, "log": lines.append})
        assert any(f"{done} of 4 epochs done" in line for line in lines)
        wr = _weights(r.last)  # the SWA average (epochs 3-4) with refreshed BatchNorm statistics
        assert all(torch.equal(wa[k], wr[k]) for k in wa), done  # resumed = uninterrupted, bit for bit
        assert r.history == a.history and r.best_cc == a.best_cc
    assert a.history[-1].get("swa") == 1.0
    # stopped after the last epoch's state was written, inside the SWA BatchNorm refresh
    out = tmp_path / "rbn.safetensors"
    with monkeypatch.context() as m:
        m.setattr(trainer, "_refresh_batchnorm", _raise_stop)
        with pytest.raises(_StopError):
            train(tmp_path / "s.h5", "movie1", out, seed=5, **common)
    r = train(tmp_path / "s.h5", "movie1", out, seed=5, resume=True, **common)
    wr = _weights(r.last)
    assert all(torch.equal(wa[k], wr[k]) for k in wa) and r.history == a.history
    with pytest.raises(VistError, match="different run"):
        train(tmp_path / "s.h5", "movie1", out, seed=9, resume=True, **common)
    with pytest.raises(VistError, match="does not exist or is not writable"):
        train(tmp_path / "s.h5", "movie1", tmp_path / "nope" / "m.safetensors", seed=5, **common)
    with pytest.raises(VistError, match="no saved state"):
        train(tmp_path / "s.h5", "movie1", tmp_path / "none.safetensors", seed=5, resume=True, **common)
    state_path(out).write_bytes(b"truncated")
    with pytest.raises(VistError, match="cannot read"):
        train(tmp_path / "s.h5", "movie1", out, seed=5, resume=True, **common)


def test_recipe_toml_is_strict(tmp_path: Path) -> None:
    good = tmp_path / "r.toml"
    good.write_text("window = 16\nlr = 1\n")
    r = recipe_from_toml(good)
    assert r.window == 16 and r.lr == 1.0 and isinstance(r.lr, float) and r.batch == schedule.Recipe().batch
    small = schedule.PRESETS["cpu-small"]
    over = recipe_from_toml(good, base=small)  # the preset's fields, with the file's on top
    assert over.window == 16 and over.lr == 1.0 and over.batch == small.batch and over.epochs == small.epochs
    for text, match in (("windw = 3\n", "unknown key"), ("window = 1.5\n", "window must be int"),
                        ("lr = 'x'\n", "lr must be float"), ("epochs = 0\n", ">= 1")):  # fmt: skip
        good.write_text(text)
        with pytest.raises(VistError, match=match):
            recipe_from_toml(good)


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(tmp_path: Path) -> None:
    """Two gloo processes under torchrun: the recipe's batch split over ranks, rank 0 writes."""
    write_simulation(tmp_path / "s.h5", n_cells=4, n_movies=1, n_frames=80, n_trials=2, seed=2, size=(40, 48))
    out = tmp_path / "d.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vist_rt",
           "train", str(tmp_path / "s.h5"), "--train-movie", "movie1", "--out", str(out),
           "--recipe", str(_tiny_recipe(tmp_path, epochs=2))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("best held-out CC") == 1  # rank 0 only
    last = load_checkpoint(out.with_name("d.last.safetensors"))
    assert last.meta["world_size"] == 2 and len(last.meta["history"]) == 2


def test_bad_inputs(tmp_path: Path, capsys) -> None:
    write_simulation(tmp_path / "s.h5", n_cells=3, n_movies=1, n_frames=40, n_trials=2, seed=0, size=(30, 40))
    assert main(["train", str(tmp_path / "s.h5"), "--train-movie", "nope", "--out", str(tmp_path / "m")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "s.h5"), "--train-movie", "movie1", "--out", str(tmp_path / "m")]) == 2
    assert "fewer than one 64-frame window" in capsys.readouterr().err


def test_train_on_several_movies(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "s.h5"
    write_simulation(data, n_cells=4, n_movies=3, n_frames=80, n_trials=4, seed=2, size=(40, 48))
    seen: list[tuple[int, ...]] = []
    real = trainer.window_starts
    monkeypatch.setattr(
        trainer, "window_starts", lambda n, r, rng: (seen.append(tuple(np.atleast_1d(n))), real(n, r, rng))[1]
    )
    recipe = recipe_from_toml(_tiny_recipe(tmp_path, epochs=2))
    res = train(data, ["movie1", "movie2"], tmp_path / "m.safetensors", recipe=recipe, log=lambda _line: None)
    assert set(seen) == {(80, 80)}  # every window drawn from both movies
    last = load_checkpoint(res.last)
    assert last.meta["train_movie"] == ["movie1", "movie2"] and last.meta["test_movie"] is None
    # without a test movie the tracked CC is over both movies, each predicted from its own first frame
    with open_dataset(data) as ds, torch.no_grad():
        ext = PatchesExtractor(224, channels="grey")
        pred, rates = [], []
        for name in ("movie1", "movie2"):
            m = ds.movie(name)
            feats = torch.from_numpy(trainer.movie_features(m.stimulus, ext))
            pred.append(last.model.eval()(feats[None], last.rf[None])[0].T.numpy())
            rates.append(np.asarray(m.rates))
    cc = cc_per_cell(np.concatenate(pred), np.concatenate(rates))
    assert last.meta["history"][-1]["cc"] == pytest.approx(float(np.mean(cc)), abs=1e-5)
    with pytest.raises(VistError, match="without repeats"):
        train(data, ["movie1", "movie1"], tmp_path / "r.safetensors", recipe=recipe, log=lambda _line: None)
    assert not (tmp_path / "r.safetensors").exists()
    # the CLI: --train-movie repeated; eval fits the LN baseline on the same movies
    out = tmp_path / "c.safetensors"
    args = ["train", str(data), "--train-movie", "movie1", "--train-movie", "movie2", "--test-movie", "movie3",
            "--out", str(out), "--recipe", str(_tiny_recipe(tmp_path, epochs=2))]  # fmt: skip
    assert main(args) == 0
    assert load_checkpoint(out).meta["train_movie"] == ["movie1", "movie2"]
    assert main(["eval", str(out), str(data), "--movie", "movie3", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["ln"]["train_movie"] == ["movie1", "movie2"]
    capsys.readouterr()
    assert main([*args[:-2], "--train-movie", "movie4", "--force"]) == 2  # an unknown movie: one line, no traceback
    err = capsys.readouterr().err
    assert "movie4" in err and "Traceback" not in err


def test_every_train_flag_reaches_train(tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}

    def fake_train(data, train_movie, out, **kw):  # type: ignore[no-untyped-def]
        seen.update(data=data, train_movie=train_movie, out=out, **kw)
        return type("R", (), {"best_cc": 0.5, "best": out, "last": out})()

    monkeypatch.setattr("vist_rt.train.trainer.train", fake_train)
    recipe = _tiny_recipe(tmp_path, epochs=7)
    argv = ["train", "d.h5", "--train-movie", "a", "--test-movie", "b", "--out", "o.safetensors", "--preset", "paper",
            "--seed", "4", "--cache", "c", "--recipe", str(recipe), "--device", "cuda", "--resume",
            "--force"]  # fmt: skip
    assert main(argv) == 0
    assert (seen["data"], seen["train_movie"], seen["out"], seen["test_movie"]) == ("d.h5", ["a"], "o.safetensors", "b")
    assert seen["preset"] == "paper" and seen["seed"] == 4 and seen["cache_dir"] == "c"
    assert seen["recipe"].epochs == 7 and seen["device"] == "cuda" and seen["resume"] is True and seen["force"] is True
    assert seen["command"] == "vist-rt " + " ".join(argv)
    partial = tmp_path / "partial.toml"
    partial.write_text("epochs = 25\n")  # over the paper preset: its batch and windows stay
    i = argv.index("--recipe")
    assert main([*argv[:i], "--recipe", str(partial)]) == 0
    assert seen["recipe"] == dataclasses.replace(schedule.PRESETS["paper"], epochs=25)
    assert main([*argv[:i], "--loss", "poisson"]) == 0  # --loss over the preset's recipe (no --recipe)
    assert seen["recipe"] == dataclasses.replace(schedule.PRESETS["paper"], loss="poisson")
    assert main([*argv, "--loss", "rmse"]) == 0  # and over a recipe file's
    assert seen["recipe"].loss == "rmse" and seen["recipe"].epochs == 7
    assert seen["ablations"] == ()
    assert main([*argv, "--ablation", "no-rf", "--ablation", "single-window"]) == 0
    assert seen["ablations"] == ("no-rf", "single-window")
    from vist_rt.cli import build_parser
    from vist_rt.model.config import ABLATIONS

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    assert tuple(next(a.choices for a in train_parser._actions if a.dest == "ablation")) == tuple(ABLATIONS)


@pytest.mark.slow
def test_train_on_vit_features_and_share_the_feature_cache(tmp_path: Path, capsys) -> None:
    """`--extractor dinov2` trains on ViT tokens (here a small random ViT: NOT DINOv2); `vist-rt features` with
    the same extractor flags fills the very cache entries `vist-rt train` reads."""
    write_simulation(tmp_path / "s.h5", n_cells=3, n_movies=2, n_frames=70, n_trials=2, seed=4, size=(40, 48))
    vit = ["--extractor", "dinov2", "--backbone", "vits14", "--random-vit", "0", "--image-size", "126"]
    cache = tmp_path / "cache"
    assert main(["features", str(tmp_path / "s.h5"), "--cache", str(cache), *vit]) == 0
    before = sorted(cache.glob("*.npy"))
    assert len(before) == 2
    out = tmp_path / "v.safetensors"
    argv = ["train", str(tmp_path / "s.h5"), "--train-movie", "movie1", "--test-movie", "movie2", "--out", str(out),
            "--cache", str(cache), "--recipe", str(_tiny_recipe(tmp_path, epochs=2)), *vit]  # fmt: skip
    assert main(argv) == 0
    assert sorted(cache.glob("*.npy")) == before  # reused, not recomputed under another key
    ckpt = load_checkpoint(out)
    assert ckpt.extractor["kind"] == "dinov2" and ckpt.extractor["dinov2"] is False  # random: says so
    assert ckpt.config.feature_dim == 384 and ckpt.config.grid == 9
    assert "NOT DINOv2" in ckpt.meta["provenance"]["extractor"]
    capsys.readouterr()
    assert main([*argv[: -len(vit)], "--patch-channels", "rgb", "--out", str(tmp_path / "p.safetensors")]) == 0
    assert load_checkpoint(tmp_path / "p.safetensors").config.feature_dim == 588  # colour patches
    assert main([*argv, "--patch-channels", "grey"]) == 2
    assert "--patch-channels only applies to --extractor patches" in capsys.readouterr().err
