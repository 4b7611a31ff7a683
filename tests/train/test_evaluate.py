"""`vist-rt eval`: the streaming model on a dataset movie, metrics and the LN baseline in one JSON, plots."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import randomize
from vist_rt.cli import main
from vist_rt.data.simulate import write_simulation
from vist_rt.features import PatchesExtractor
from vist_rt.model import ViST, ViSTConfig, save_checkpoint


def _checkpoint(path: Path, cells: int) -> Path:
    torch.manual_seed(0)
    model = randomize(ViST(ViSTConfig(feature_dim=196, video_dim=8, cells=cells, grid=16)), seed=2)
    rf = torch.rand(cells, 16, 16)
    return save_checkpoint(path, model, rf=rf, fps=30.0, extractor=PatchesExtractor(224, "grey").spec,
                           train_movie="movie1")  # fmt: skip


def test_eval_writes_every_figure_and_plots(tmp_path: Path, capsys) -> None:
    write_simulation(tmp_path / "s.h5", n_cells=6, n_movies=2, n_frames=90, n_trials=4, seed=0, size=(60, 80))
    ckpt = _checkpoint(tmp_path / "m.safetensors", 6)
    out = tmp_path / "e.json"
    args = ["eval", str(ckpt), str(tmp_path / "s.h5"), "--movie", "movie2", "--alpha", "0.5",
            "--json", str(out), "--plots", str(tmp_path / "plots")]  # fmt: skip
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["movie"] == "movie2" and r["frames"] == 90 and r["alpha"] == 0.5
    assert len(r["vist"]["cc"]) == 6 and len(r["vist"]["sdkl"]) == 6 and r["noise_ceiling_mean"] > 0
    assert r["ln"]["train_movie"] == "movie1" and len(r["ln"]["cc"]) == 6  # LN fitted on the checkpoint's movie
    # the simulator's ground truth, scored the same way: the calibration a perfect model would get
    assert r["truth"]["cc_mean"] > r["vist"]["cc_mean"] and 0 < r["truth"]["cc_mean"] <= 1
    assert len(r["truth"]["sdkl"]) == 6 and r["truth"]["sdkl_scale"] == r["vist"]["sdkl_scale"]
    assert all((tmp_path / "plots" / n).stat().st_size > 1000 for n in ("traces.png", "cc_per_cell.png"))
    assert "LN baseline mean CC" in capsys.readouterr().out


def test_eval_refuses_a_checkpoint_for_other_cells(tmp_path: Path, capsys) -> None:
    write_simulation(tmp_path / "s.h5", n_cells=4, n_movies=1, n_frames=40, n_trials=2, seed=0, size=(30, 40))
    ckpt = _checkpoint(tmp_path / "m.safetensors", 6)
    assert main(["eval", str(ckpt), str(tmp_path / "s.h5"), "--movie", "movie1"]) == 2
    assert "predicts 6 cells, the dataset has 4" in capsys.readouterr().err


def test_features_command_caches_every_movie(tmp_path: Path, capsys) -> None:
    import numpy as np

    write_simulation(tmp_path / "s.h5", n_cells=3, n_movies=2, n_frames=20, n_trials=2, seed=0, size=(30, 40))
    args = ["features", str(tmp_path / "s.h5"), "--cache", str(tmp_path / "c"), "--extractor", "patches"]
    assert main(args) == 0
    files = sorted((tmp_path / "c").glob("features-movie*.npy"))
    assert [f.name.split("-")[1] for f in files] == ["movie1", "movie2"]
    assert np.load(files[0]).shape == (20, 256, 196)  # grey patches (the one default of features/train/export)
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(args) == 0  # the second run reuses the cache
    assert [f.stat().st_mtime_ns for f in files] == stamps and "cached" in capsys.readouterr().out
    other = ["features", str(tmp_path / "s.h5"), "--cache", str(tmp_path / "c"), "--extractor", "dinov2",
             "--backbone", "vits14", "--random-vit", "0", "--block", "0", "--image-size", "56",
             "--backend", "torch"]  # fmt: skip
    assert main(other) == 0  # another extractor: other cache entries
    assert len(list((tmp_path / "c").glob("features-movie*.npy"))) == 4
