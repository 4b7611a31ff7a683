"""The dataset file: round trip, atomic write, one clear error per broken rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from vist_rt.data.dataset import open_dataset, write_dataset
from vist_rt.errors import VistError

T, H, W, C, R = 6, 8, 10, 3, 4


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stim = rng.integers(0, 256, (T, H, W), dtype=np.uint8)
    spikes = rng.poisson(1.0, (R, T, C)).astype(np.uint16)
    rates = (spikes.mean(0) * 30).astype(np.float32)
    rf = (rng.random((C, H, W)) > 0.5).astype(np.float32)
    return stim, rates, spikes, rf


def _write(path: Path) -> Path:
    stim, rates, spikes, rf = _arrays()
    color = np.repeat(stim[..., None], 3, axis=-1)
    return write_dataset(
        path, {"a": (stim, rates, spikes), "b": (color, rates, None)}, rf, ["c0", "c1", "c2"], 30.0, "spikes/s", "test"
    )


def test_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.h5")
    stim, rates, spikes, rf = _arrays()
    with open_dataset(path) as ds:
        assert ds.movies == ["a", "b"]
        assert ds.fps == 30.0 and ds.units == "spikes/s" and ds.source == "test"
        assert ds.cell_ids == ["c0", "c1", "c2"]
        np.testing.assert_array_equal(ds.rf, rf)
        a = ds.movie("a")
        assert a.T == T
        np.testing.assert_array_equal(a.stimulus[2], stim[2])  # lazy, indexable
        np.testing.assert_array_equal(a.rates, rates)
        np.testing.assert_array_equal(a.spikes, spikes)
        b = ds.movie("b")
        assert b.spikes is None and b.stimulus.shape == (T, H, W, 3)
        with pytest.raises(VistError, match=r"no movie 'zz'; movies: a, b"):
            ds.movie("zz")
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file is gone


def test_write_is_atomic_on_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.h5")
    before = path.read_bytes()
    stim, rates, spikes, rf = _arrays()
    with pytest.raises(VistError, match="NaN"):
        bad = rates.copy()
        bad[0, 0] = np.nan
        write_dataset(path, {"a": (stim, bad, spikes)}, rf, ["c0", "c1", "c2"], 30.0)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def _break(fn: Callable[[h5py.File], None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        _write(path)
        with h5py.File(path, "r+") as f:
            fn(f)
        return path

    return make


def _replace(key: str, data: np.ndarray) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[key]
        f[key] = data

    return fn


def _del(key: str) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        del f[key]

    return fn


def _empty_movies(f: h5py.File) -> None:
    for name in list(f["movies"]):
        del f["movies"][name]


def _bad_fps(value: object) -> Callable[[h5py.File], None]:
    def fn(f: h5py.File) -> None:
        f.attrs["fps"] = value

    return fn


def _no_fps(f: h5py.File) -> None:
    del f.attrs["fps"]


BROKEN = {
    "no movies group": (_del("movies"), r"missing group /movies"),
    "no rf": (_del("cells/rf"), r"missing dataset /cells/rf"),
    "no ids": (_del("cells/ids"), r"missing dataset /cells/ids"),
    "no movies": (_empty_movies, r"holds no movies"),
    "empty movie": (
        lambda f: (
            _replace("movies/a/stimulus", np.zeros((0, H, W), np.uint8))(f),
            _replace("movies/a/rates", np.zeros((0, C), np.float32))(f),
            _del("movies/a/spikes")(f),
        ),
        r"no frames \(T = 0\)",
    ),
    "T mismatch": (_replace("movies/a/rates", np.zeros((T - 1, C), np.float32)), r"has 6 frames but rates has 5"),
    "spikes shape": (_replace("movies/a/spikes", np.zeros((R, T, C + 1), np.uint16)), r"spikes must be \[R,T,C\]"),
    "cell count": (
        lambda f: (_replace("movies/a/rates", np.zeros((T, C + 1), np.float32))(f), _del("movies/a/spikes")(f)),
        r"rates have 4 cells but /cells has 3",
    ),
    "ids vs rf": (_replace("cells/ids", np.array([b"x", b"y"])), r"has 2 ids but /cells/rf has 3"),
    "rf size": (
        _replace("cells/rf", np.zeros((C, H + 1, W), np.float32)),
        r"frames are 8x10 but /cells/rf masks are 9x10",
    ),
    "stimulus dtype": (_replace("movies/a/stimulus", np.zeros((T, H, W), np.float32)), r"stimulus must be uint8"),
    "rates dtype": (_replace("movies/a/rates", np.zeros((T, C), np.float64)), r"rates must be float32"),
    "spikes dtype": (_replace("movies/a/spikes", np.zeros((R, T, C), np.int32)), r"spikes must be uint16"),
    "rf dtype": (_replace("cells/rf", np.zeros((C, H, W), np.float64)), r"/cells/rf must be float32"),
    "nan rates": (_replace("movies/a/rates", np.full((T, C), np.nan, np.float32)), r"rates contain NaN or inf"),
    "no fps": (_no_fps, r"missing file attribute 'fps'"),
    "zero fps": (_bad_fps(0.0), r"fps must be a finite number > 0"),
    "text fps": (_bad_fps("fast"), r"fps must be a number > 0"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_validation_errors(tmp_path: Path, case: str) -> None:
    fn, pattern = BROKEN[case]
    path = _break(fn)(tmp_path / "d.h5")
    with pytest.raises(VistError, match=pattern) as info:
        open_dataset(path)
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="dataset file not found"):
        open_dataset(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(VistError, match="not a readable HDF5 file"):
        open_dataset(tmp_path / "junk.h5")


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    stim, rates, _spikes, rf = _arrays()
    ids = ["c0", "c1", "c2"]
    with pytest.raises(VistError, match="at least one movie"):
        write_dataset(tmp_path / "x.h5", {}, rf, ids, 30.0)
    with pytest.raises(VistError, match="2 cell ids but rf has 3"):
        write_dataset(tmp_path / "x.h5", {"a": (stim, rates)}, rf, ids[:2], 30.0)
    with pytest.raises(VistError, match="stimulus has 6 frames but rates has 5"):
        write_dataset(tmp_path / "x.h5", {"a": (stim, rates[:5])}, rf, ids, 30.0)
    with pytest.raises(VistError, match="fps must be"):
        write_dataset(tmp_path / "x.h5", {"a": (stim, rates)}, rf, ids, -1.0)
    assert not list(tmp_path.iterdir())
