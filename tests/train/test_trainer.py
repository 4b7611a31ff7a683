"""Training on the simulated retina: the loss falls, held-out CC is tracked, checkpoints load and stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vist_rt.cli import main
from vist_rt.data.simulate import write_simulation
from vist_rt.model import StreamingViST, load_checkpoint
from vist_rt.train import schedule


@pytest.mark.slow
def test_train_on_the_simulator_writes_usable_checkpoints(tmp_path: Path, monkeypatch) -> None:
    write_simulation(tmp_path / "sim.h5", n_cells=6, n_movies=2, n_frames=160, n_trials=4, seed=1, size=(60, 80))
    tiny = schedule.Recipe(window=32, batch=4, batches_per_epoch=6, epochs=4, warmup_epochs=1, swa_start=3,
                           swa_anneal_epochs=1)  # fmt: skip
    monkeypatch.setitem(schedule.PRESETS, "cpu-small", tiny)
    out = tmp_path / "m.safetensors"
    args = ["train", str(tmp_path / "sim.h5"), "--train-movie", "movie1", "--test-movie", "movie2",
            "--out", str(out), "--seed", "3", "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert main(args) == 0
    last = load_checkpoint(out.with_name("m.last.safetensors"))
    history = last.meta["history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0]  # it learns
    best = load_checkpoint(out)
    assert best.meta["test_movie"] == "movie2" and best.meta["seed"] == 3 and best.cell_ids == last.cell_ids
    assert best.extractor["kind"] == "patches" and best.fps == 30.0
    assert any((tmp_path / "cache").glob("features-movie1-*.npy"))  # features cached for the next run
    # the trained model streams exactly like its offline forward
    feats = torch.randn(1, 200, best.config.tokens, best.config.feature_dim)
    with torch.no_grad():
        offline = best.model(feats, best.rf[None])[0]
    stream = StreamingViST.from_model(best.model, best.rf)
    online = torch.stack([stream.step(feats[:, t]) for t in range(200)], dim=-1)[0]
    np.testing.assert_allclose(online.numpy(), offline.numpy(), rtol=0, atol=1e-4)
    json.dumps(best.meta)


def test_bad_inputs(tmp_path: Path, capsys) -> None:
    write_simulation(tmp_path / "s.h5", n_cells=3, n_movies=1, n_frames=40, n_trials=2, seed=0, size=(30, 40))
    assert main(["train", str(tmp_path / "s.h5"), "--train-movie", "nope", "--out", str(tmp_path / "m")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "s.h5"), "--train-movie", "movie1", "--out", str(tmp_path / "m")]) == 2
    assert "fewer than one 64-frame window" in capsys.readouterr().err
