"""The Onken et al. converter, on a small replica of the published layout written by the test."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from vist_rt.cli import data as data_cli
from vist_rt.data.dataset import open_dataset
from vist_rt.data.onken import bin_spikes, convert_onken
from vist_rt.errors import VistError

H, W, T, FPS = 6, 8, 12, 10.0  # bins of 100 ms


def _frame(k: int) -> np.ndarray:
    """uint8 [H,W] with a distinct value per pixel and frame."""
    return ((np.arange(H)[:, None] * 10 + np.arange(W)[None, :] + 3 * k) % 256).astype(np.uint8)


def _cells(rows: list[list[list[float]]]) -> np.ndarray:
    out = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, row in enumerate(rows):
        for j, times in enumerate(row):
            out[i, j] = np.asarray(times, np.float64)
    return out


SPIKES = [  # 2 neurons x 3 trials, ms after onset
    [[0.0, 99.9, 100.0, 250.0, 1199.9, 1200.0, -5.0], [150.0, 151.0], []],
    [[1100.0], [0.5, 0.6, 0.7], [300.0, 1000.0]],
]
CONTOURS = [[[2, 5, 5, 2], [1, 1, 3, 3]], [[7, 8, 8, 7], [5, 5, 6, 6]]]  # 2xK, row 0 = x, row 1 = y, 1-based


def _rf_cells() -> np.ndarray:
    out = np.empty((2, 1), dtype=object)
    for i, c in enumerate(CONTOURS):
        out[i, 0] = np.asarray(c, np.float64)
    return out


def _replica(root: Path, rf_separate: bool = False, n_files: int = T) -> Path:
    (root / "Stimuli").mkdir(parents=True)
    (root / "NeuralData").mkdir()
    for k in range(n_files):  # names that sort wrongly as text (f10 < f2): natural order is required
        (root / "Stimuli" / f"f{k + 1}.raw").write_bytes(_frame(k).tobytes(order="F"))  # MATLAB: column-major
    mat = {"Spikes": _cells(SPIKES)}
    if rf_separate:
        savemat(root / "NeuralData" / "ReceptiveFields.mat", {"ReceptiveFields": _rf_cells()})
    else:
        mat["ReceptiveFields"] = _rf_cells()
    savemat(root / "NeuralData" / "Movie1Exp1.mat", mat)
    return root


def _expected_counts() -> np.ndarray:
    counts = np.zeros((3, T, 2), np.uint16)
    for c, row in enumerate(SPIKES):
        for r, times in enumerate(row):
            for t in times:
                k = int(np.floor(t / 100.0))
                if 0 <= k < T:
                    counts[r, k, c] += 1
    return counts


@pytest.mark.parametrize("rf_separate", [False, True])
def test_convert(tmp_path: Path, rf_separate: bool) -> None:
    root = _replica(tmp_path / "dryad", rf_separate)
    out = convert_onken(root, tmp_path / "o.h5", movie="Movie1Exp1", fps=FPS, frame_shape=(H, W))
    with open_dataset(out) as ds:
        assert ds.movies == ["Movie1Exp1"] and ds.fps == FPS and ds.units == "spikes/s"
        assert ds.cell_ids == ["n001", "n002"]
        m = ds.movie("Movie1Exp1")
        assert m.T == T
        for k in (0, 1, 9, 11):  # column-major transpose and natural frame order
            np.testing.assert_array_equal(m.stimulus[k], _frame(k))
        spikes = m.spikes
        assert spikes.dtype == np.uint16 and spikes.shape == (3, T, 2)
        # crafted times: 0 and 99.9 ms -> bin 0; 100 -> bin 1 (left-closed); 1199.9 -> bin 11; 1200 and -5 dropped
        assert spikes[0, :, 0].tolist() == [2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        np.testing.assert_array_equal(spikes, _expected_counts())
        np.testing.assert_allclose(m.rates, spikes.mean(0) * FPS, rtol=1e-6)
        rf = ds.rf
        assert rf.shape == (2, H, W)
        mask0 = np.zeros((H, W), np.float32)
        mask0[0:3, 1:5] = 1.0  # x 2..5, y 1..3 (1-based) -> cols 1..4, rows 0..2
        np.testing.assert_array_equal(rf[0], mask0)
        mask1 = np.zeros((H, W), np.float32)
        mask1[4:6, 6:8] = 1.0
        np.testing.assert_array_equal(rf[1], mask1)


def test_frame_limit_and_binning_helper(tmp_path: Path) -> None:
    root = _replica(tmp_path / "dryad")
    out = convert_onken(root, tmp_path / "o.h5", movie="Movie1", fps=FPS, frame_shape=(H, W), n_frames=5)
    with open_dataset(out) as ds:
        assert ds.movie("Movie1").T == 5
        assert ds.movie("Movie1").spikes.sum() == _expected_counts()[:, :5].sum()
    # 30 Hz: 33.3 ms -> bin 0, 33.34 -> bin 1, exact edge 100 ms -> bin 3
    got = bin_spikes(_cells([[[33.3, 33.34, 100.0]]]), 4, 30.0)
    assert got[0, :, 0].tolist() == [1, 1, 0, 1]


def test_errors(tmp_path: Path) -> None:
    root = _replica(tmp_path / "dryad")
    kw = {"movie": "Movie1Exp1", "fps": FPS, "frame_shape": (H, W)}
    with pytest.raises(VistError, match=r"48 bytes, expected 54 for a 6x9 uint8 frame"):
        convert_onken(root, tmp_path / "o.h5", **{**kw, "frame_shape": (H, W + 1)})
    with pytest.raises(VistError, match=r"no Movie2\*\.mat; \.mat files: Movie1Exp1"):
        convert_onken(root, tmp_path / "o.h5", **{**kw, "movie": "Movie2"})
    (root / "Stimuli" / "f3.raw").write_bytes(b"\x00" * 7)
    with pytest.raises(VistError, match=r"f3\.raw: 7 bytes, expected 48"):
        convert_onken(root, tmp_path / "o.h5", **kw)
    savemat(root / "NeuralData" / "Movie1Exp1.mat", {"Other": np.zeros(3)})
    with pytest.raises(VistError, match=r"no variable 'Spikes' \(variables: Other\)"):
        convert_onken(root, tmp_path / "o.h5", **kw)
    for p in (root / "Stimuli").iterdir():
        p.unlink()
    (root / "Stimuli").rmdir()
    savemat(root / "NeuralData" / "Movie1Exp1.mat", {"Spikes": _cells(SPIKES)})
    with pytest.raises(VistError, match="no Stimuli folder"):
        convert_onken(root, tmp_path / "o.h5", **kw)
    assert not (tmp_path / "o.h5").exists()


def test_missing_receptive_fields(tmp_path: Path) -> None:
    root = _replica(tmp_path / "dryad")
    savemat(root / "NeuralData" / "Movie1Exp1.mat", {"Spikes": _cells(SPIKES)})
    with pytest.raises(VistError, match=r"no ReceptiveFields in Movie1Exp1\.mat"):
        convert_onken(root, tmp_path / "o.h5", movie="Movie1Exp1", fps=FPS, frame_shape=(H, W))


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _replica(tmp_path / "dryad")
    parser = argparse.ArgumentParser(prog="vist-rt")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "o.h5"
    args = parser.parse_args(
        ["convert", "onken", str(root), str(out), "--movie", "Movie1Exp1", "--fps", "10", "--frames", "4",
         "--frame-size", "6x8", "--cell-prefix", "exp1_"]
    )  # fmt: skip
    assert args.func is data_cli.run_convert
    assert data_cli.run_convert(args) == 0
    assert "4 frames at 10 Hz, 2 cells, 3 trials" in capsys.readouterr().out
    with open_dataset(out) as ds:
        assert ds.cell_ids == ["exp1_n001", "exp1_n002"]
