"""Output paths and bad input of `vist-rt simulate` / `vist-rt convert onken`: checked before the work, one line each,
nothing replaced without --force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from tests.data.test_onken import FPS, SPIKES, H, W, _cells, _replica
from vist_rt.cli import main
from vist_rt.data import simulate as sim_module
from vist_rt.data.dataset import open_dataset, write_dataset
from vist_rt.data.onken import convert_onken
from vist_rt.data.simulate import simulate, write_simulation
from vist_rt.errors import VistError

TINY = ["--cells", "3", "--movies", "1", "--frames", "12", "--trials", "2", "--size", "20x24"]


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("vist-rt") and "error" in err and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_simulate_refuses_an_existing_dataset_unless_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.h5"
    assert main(["simulate", str(out), *TINY, "--seed", "1"]) == 0
    before = out.read_bytes()
    assert main(["simulate", str(out), *TINY, "--seed", "2"]) == 2
    _one_line_error(capsys, "already exists", "--force")
    assert out.read_bytes() == before  # untouched
    assert main(["simulate", str(out), *TINY, "--seed", "2", "--force"]) == 0
    assert out.read_bytes() != before
    with open_dataset(out) as ds:
        assert "seed=2" in ds.source
    with pytest.raises(VistError, match="already exists"):  # the library refuses too
        write_simulation(out, 3, 1, 12, 2, 0, (20, 24))


def test_convert_refuses_an_existing_dataset_unless_force(tmp_path: Path, capsys) -> None:
    root = _replica(tmp_path / "dryad")
    out = tmp_path / "o.h5"
    out.write_bytes(b"an earlier file")
    args = ["convert", "onken", str(root), str(out), "--movie", "Movie1Exp1", "--fps", "10", "--frame-size", "6x8"]
    assert main(args) == 2
    _one_line_error(capsys, "already exists", "--force")
    assert out.read_bytes() == b"an earlier file"
    assert main([*args, "--force"]) == 0
    with open_dataset(out) as ds:
        assert ds.n_cells == 2


def test_bad_output_paths_are_one_line_before_simulating(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")

    def no_work(*_a: object, **_k: object) -> None:
        raise AssertionError("simulated before checking the output path")

    monkeypatch.setattr(sim_module, "simulate", no_work)
    for out, needle in ((tmp_path / "adir", "is a folder"), (tmp_path / "afile" / "x.h5", "is not a folder"),
                        (Path("/proc/vist-rt-test/x.h5"), "cannot write")):  # fmt: skip
        for force in ([], ["--force"]):
            assert main(["simulate", str(out), *TINY, *force]) == 2
            _one_line_error(capsys, needle)
    monkeypatch.undo()
    # write_dataset itself: a folder or an unwritable place is a VistError, not an OSError
    rf = np.ones((1, 4, 5), np.float32)
    movie = {"a": (np.zeros((2, 4, 5), np.uint8), np.zeros((2, 1), np.float32))}
    for out in (tmp_path / "adir", Path("/proc/x.h5"), tmp_path / "afile" / "x.h5"):
        with pytest.raises(VistError):
            write_dataset(out, movie, rf, ["c"], 30.0, overwrite=True)
    root = _replica(tmp_path / "dryad")
    with pytest.raises(VistError, match="is a folder"):
        convert_onken(root, tmp_path / "adir", movie="Movie1Exp1", fps=FPS, frame_shape=(H, W), overwrite=True)


def test_simulate_seed_and_fps_are_checked(tmp_path: Path, capsys) -> None:
    for flags, needle in ((["--seed", "-1"], "--seed"), (["--fps", "1e-300"], "--fps"), (["--fps", "nan"], "--fps"),
                          (["--fps", "1e9"], "--fps")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            main(["simulate", str(tmp_path / "s.h5"), *TINY, *flags])
        assert stop.value.code == 2
        assert needle in capsys.readouterr().err
    with pytest.raises(VistError, match="seed must be an integer >= 0"):
        simulate(n_cells=2, n_frames=5, n_trials=1, seed=-1, size=(16, 16))
    with pytest.raises(VistError, match="fps must be between"):
        simulate(n_cells=2, n_frames=5, n_trials=1, fps=1e-300, size=(16, 16))
    assert not (tmp_path / "s.h5").exists()


def test_onken_bad_inputs_are_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    root = _replica(tmp_path / "dryad")
    mat = root / "NeuralData" / "Movie1Exp1.mat"
    base = ["convert", "onken", str(root), str(tmp_path / "o.h5"), "--fps", "10", "--frame-size", "6x8"]
    assert main([*base, "--movie", "Movie*"]) == 2  # glob characters are literal
    _one_line_error(capsys, "no Movie*")
    assert main([*base, "--movie", "Movie1Exp[1]"]) == 2
    _one_line_error(capsys, "no Movie1Exp[1]")
    good = mat.read_bytes()
    mat.write_text("garbage")
    assert main([*base, "--movie", "Movie1Exp1"]) == 2
    _one_line_error(capsys, str(mat), "cannot read")
    words = np.empty((2, 3), dtype=object)
    words[:] = "abc"
    savemat(mat, {"Spikes": words})
    assert main([*base, "--movie", "Movie1Exp1"]) == 2
    _one_line_error(capsys, str(mat), "not numbers")
    rf = np.empty((2, 1), dtype=object)
    rf[0, 0], rf[1, 0] = "abc", "def"
    savemat(mat, {"Spikes": _cells(SPIKES), "ReceptiveFields": rf})
    assert main([*base, "--movie", "Movie1Exp1"]) == 2
    _one_line_error(capsys, str(mat), "RF contour 0 is not numbers")
    mat.write_bytes(good)
    assert main([*base, "--movie", "Movie1Exp1"]) == 0
