"""`vist-rt mei` end to end on a tiny checkpoint and a tiny simulated retina; `vist-rt simulate --respond`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import randomize
from tests.runtime.helpers import RUN_CFG, free_port, offline_rates, read_video
from vist_rt.cli import main
from vist_rt.data.simulate import known_retina, respond, write_simulation
from vist_rt.errors import VistError
from vist_rt.features import PatchesExtractor
from vist_rt.model import ViST, save_checkpoint
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.pipeline import Runtime
from vist_rt.runtime.record import read_recording


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "retina.h5"
    write_simulation(path, n_cells=5, n_movies=2, n_frames=60, n_trials=2, seed=3, size=(70, 90))
    return path


@pytest.fixture(scope="module")
def sim_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run model, its cells named as the simulation's (sim000..sim004)."""
    path = tmp_path_factory.mktemp("ckpt") / "sim.safetensors"
    torch.manual_seed(0)
    model = randomize(ViST(RUN_CFG), seed=1)
    rf = torch.rand(RUN_CFG.cells, RUN_CFG.grid, RUN_CFG.grid, generator=torch.Generator().manual_seed(2))
    save_checkpoint(path, model, rf=rf, fps=30.0, extractor=PatchesExtractor(140, "grey").spec,
                    cell_ids=[f"sim{i:03d}" for i in range(5)], units="spikes/s",
                    provenance={"simulation": {"seed": 3, "cells": 5, "size": [70, 90], "fps": 30.0}})  # fmt: skip
    return path


def test_respond_equals_the_simulators_own_rates(sim: Path, tmp_path: Path, capsys) -> None:
    from vist_rt.data.dataset import open_dataset

    with open_dataset(sim) as ds:
        movies = {name: (ds.movie(name).stimulus[()], ds.movie(name).extra("truth")) for name in ds.movies}
    for stimulus, truth in movies.values():
        np.testing.assert_array_equal(respond(sim, stimulus), truth)
    stimulus, truth = movies["movie2"]
    np.save(tmp_path / "s.npy", stimulus)
    assert main(["simulate", "--respond", str(sim), str(tmp_path / "s.npy"), str(tmp_path / "r.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), truth)
    assert "5 simulated cells x 60 frames" in capsys.readouterr().out


def test_respond_bad_input_is_one_line(sim: Path, run_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from vist_rt.data.dataset import write_dataset

    other = tmp_path / "recorded.h5"
    rng = np.random.default_rng(0)
    movie = (rng.integers(0, 255, (10, 20, 20), dtype=np.uint8), rng.random((10, 2), np.float32), None)
    write_dataset(other, {"m": movie}, np.ones((2, 20, 20), np.float32), ["a", "b"], 30.0, "spikes/s", "test")
    np.save(tmp_path / "s.npy", np.zeros((4, 70, 90), np.uint8))
    np.save(tmp_path / "f.npy", np.zeros((4, 70, 90), np.float32))
    np.save(tmp_path / "small.npy", np.zeros((4, 30, 30), np.uint8))
    cases = [
        (["--respond", str(other), str(tmp_path / "s.npy")], "was not made by `vist-rt simulate`"),
        (["--respond", str(sim), str(tmp_path / "f.npy")], "must be uint8 frames"),
        (["--respond", str(sim), str(tmp_path / "small.npy")], "stimulus must be [T,70,90]"),
        (["--respond", str(sim), str(tmp_path / "none.npy")], "cannot read stimulus"),
    ]
    for argv, message in cases:
        assert main(["simulate", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
    with pytest.raises(VistError, match="not made by"):
        known_retina(other)


def test_mei_end_to_end_with_the_known_retina(sim: Path, sim_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mei"
    argv = ["mei", str(sim_checkpoint), "--cell", "sim002", "--out", str(out), "--data", str(sim), "--movie", "movie2",
            "--frames", "6", "--window", "3", "--steps", "4", "--lr", "0.2"]  # fmt: skip
    assert main(argv) == 0
    assert "sim002 (mei, 4 steps" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    stimulus = np.load(out / "stimulus.npy")
    assert stimulus.dtype == np.uint8 and stimulus.shape == (6, 70, 90) and report["size"] == [70, 90]
    # the figures say what they claim: the offline model (a run's path) and the known retina on this very clip
    pred = offline_rates(sim_checkpoint, stimulus)
    assert report["pred_stimulus"] == pytest.approx(float(pred[-3:, 2].mean()), rel=1e-5)
    assert report["true_stimulus"] == pytest.approx(float(respond(sim, stimulus)[-3:, 2].mean()), rel=1e-6)
    assert report["retina_is_the_checkpoints"] is True  # its provenance names this simulation
    # the bars, by brute force over every 3-frame window of movie2
    from vist_rt.data.dataset import open_dataset

    with open_dataset(sim) as ds:
        movie = ds.movie("movie2").stimulus[()]
    pred_nat, true_nat = offline_rates(sim_checkpoint, movie)[:, 2], respond(sim, movie)[:, 2]
    best = [max(float(x[i : i + 3].mean()) for i in range(len(x) - 2)) for x in (pred_nat, true_nat)]
    assert report["pred_natural_max"] == pytest.approx(best[0], rel=1e-5)
    assert report["true_natural_max"] == pytest.approx(best[1], rel=1e-5)
    assert (stimulus[:, :, :10] == 128).all() and (stimulus[:, :, 80:] == 128).all()  # outside the crop: grey
    assert main(argv) == 2  # the outputs are there: refused without --force
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert (out / "figure.png").stat().st_size > 10_000
    video = read_video(out / "stimulus.avi")  # lossless: the clip's pixels exactly (grey in all three channels)
    np.testing.assert_array_equal(video, np.repeat(stimulus[..., None], 3, axis=-1))


def test_the_clip_replayed_to_the_emulator_streams_the_offline_rates(
    sim_checkpoint: Path, sim: Path, tmp_path: Path
) -> None:
    """Closed loop on the wire: the video played as a source (replay), rates as the offline model's."""
    out = tmp_path / "mei"
    assert main(["mei", str(sim_checkpoint), "--cell", "sim001", "--out", str(out), "--data", str(sim),
                 "--frames", "190", "--steps", "1"]) == 0  # fmt: skip  # more than the 183-frame receptive field
    stimulus = np.load(out / "stimulus.npy")
    cfg = RunConfig(source=f"video:{out / 'stimulus.avi'}", replay=True, checkpoint=str(sim_checkpoint),
                    dashboard=False, pub=f"tcp://127.0.0.1:{free_port()}", control=f"tcp://127.0.0.1:{free_port()}",
                    record=str(tmp_path / "r.h5"), status_every_s=100.0)  # fmt: skip
    Runtime.from_config(cfg, log=lambda _: None).run()
    rec = read_recording(tmp_path / "r.h5")
    assert len(rec["rates"]) == 190
    np.testing.assert_allclose(rec["rates"], offline_rates(sim_checkpoint, stimulus), rtol=0, atol=1e-4)


def test_mei_bad_input_is_one_line(sim: Path, sim_checkpoint: Path, run_checkpoint: Path, tmp_path: Path,
                                   capsys) -> None:  # fmt: skip
    base = ["mei", str(sim_checkpoint), "--out", str(tmp_path / "o"), "--steps", "1", "--frames", "2", "--window", "1"]
    cases = [
        (["--cell", "nope"], "no cell 'nope' in this checkpoint (5 cells: sim000"),
        (["--cell", "sim000", "--movie", "movie1"], "--movie needs --data"),
        (["--cell", "sim000", "--data", str(sim), "--movie", "x"], "no movie 'x'"),
        (["--cell", "sim000", "--frames", "100000000"], "use fewer --frames"),
        (["--cell", "sim000", "--objective", "target"], "needs --target TRACE.npy"),
        (["--cell", "sim000", "--objective", "target", "--target", str(tmp_path / "t3.npy")], "must be 2 numbers"),
        (["--cell", "sim000", "--target", str(tmp_path / "t2.npy")], "--target is for --objective target"),
        (["--cell", "sim000", "--window", "5"], "--window 5 is longer than the clip's 2 frames"),
    ]
    np.save(tmp_path / "t3.npy", np.ones(3))
    np.save(tmp_path / "t2.npy", np.ones(2))
    for extra, message in cases:
        assert main([*base, *extra]) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)
        assert not (tmp_path / "o").exists()  # refused: nothing written
    with pytest.raises(SystemExit):
        main([*base, "--cell", "sim000", "--frames", "0"])  # argparse: at least 1 frame
    assert "expected an integer >= 1" in capsys.readouterr().err


def test_a_target_time_course_from_the_command_line(sim: Path, sim_checkpoint: Path, tmp_path: Path) -> None:
    trace = np.linspace(0.0, 3.0, 12)
    np.save(tmp_path / "trace.npy", trace)
    out = tmp_path / "t"
    argv = ["mei", str(sim_checkpoint), "--cell", "sim004", "--out", str(out), "--objective", "target", "--target",
            str(tmp_path / "trace.npy"), "--frames", "12", "--steps", "3", "--data", str(sim)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    pred = offline_rates(sim_checkpoint, np.load(out / "stimulus.npy"))
    assert report["objective"] == "target" and report["objective_frames"] == 12
    assert report["objective_value"] == pytest.approx(-float(((pred[:, 4] - trace) ** 2).mean()), rel=1e-4)


def test_without_data_the_bar_is_the_synthetic_movie_at_the_models_resolution(
    run_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "syn"
    assert main(["mei", str(run_checkpoint), "--cell", "c1", "--out", str(out), "--frames", "3", "--steps", "2",
                 "--window", "2"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["size"] == [140, 140] and report["natural"].startswith("synthetic movie seed 0")
    assert "true_stimulus" not in report and report["pred_natural_max"] > 0


def test_one_frame_and_a_cell_the_retina_does_not_have(run_checkpoint: Path, sim: Path, tmp_path: Path,
                                                       capsys) -> None:  # fmt: skip
    out = tmp_path / "one"
    assert main(["mei", str(run_checkpoint), "--cell", "c0", "--out", str(out), "--data", str(sim), "--frames", "1",
                 "--window", "1", "--steps", "1"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert np.load(out / "stimulus.npy").shape == (1, 70, 90) and (out / "figure.png").exists()
    assert "true_stimulus" not in report and "c0: not a cell of the simulated retina" in report["true_missing"]
    assert "no known-retina figures" in capsys.readouterr().out


def test_colour_clips_reach_the_video_in_the_right_channel_order(tmp_path: Path) -> None:
    from vist_rt.insilico.experiment import write_video

    rgb = np.zeros((3, 32, 48, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[:, :, :10, 2] = 90  # some blue
    write_video(tmp_path / "c.avi", rgb, 30.0)
    np.testing.assert_array_equal(read_video(tmp_path / "c.avi"), rgb[..., ::-1])  # OpenCV decodes to BGR
