"""The dataset file (HDF5): stimulus movies, trial-averaged rates, optional per-trial counts, RF masks.

Layout (see docs/data.md)::

    /movies/<name>/stimulus   uint8   [T, H, W] or [T, H, W, 3]
    /movies/<name>/rates      float32 [T, C]      trial-averaged response per frame bin
    /movies/<name>/spikes     uint16  [R, T, C]   optional per-trial counts
    /cells/rf                 float32 [C, H, W]   RF masks in stimulus pixels
    /cells/ids                string  [C]
    file attrs: fps (Hz), units, source

`write_dataset` writes atomically (a temporary file in the same folder, then `os.replace`) and replaces an
existing file only when asked (`overwrite=True`).
`open_dataset` checks every shape, dtype and attribute before anything is read, and raises one
one-line `VistError` for the first problem it finds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vist_rt.errors import VistError
from vist_rt.files import atomic_path, check_output_file


def _check_movie_arrays(name: str, stimulus: Any, rates: Any, spikes: Any, shape_hw: tuple[int, int] | None) -> None:
    """Shape/dtype rules shared by the writer and the reader (arrays or h5py datasets)."""
    where = f"movie {name!r}"
    if stimulus.dtype != np.uint8:
        raise VistError(f"{where}: stimulus must be uint8, got {stimulus.dtype}")
    if stimulus.ndim not in (3, 4) or (stimulus.ndim == 4 and stimulus.shape[-1] != 3):
        raise VistError(f"{where}: stimulus must be [T,H,W] or [T,H,W,3], got shape {list(stimulus.shape)}")
    t = stimulus.shape[0]
    if t == 0:
        raise VistError(f"{where}: stimulus has no frames (T = 0)")
    if rates.dtype != np.float32:
        raise VistError(f"{where}: rates must be float32, got {rates.dtype}")
    if rates.ndim != 2:
        raise VistError(f"{where}: rates must be [T,C], got shape {list(rates.shape)}")
    if rates.shape[0] != t:
        raise VistError(f"{where}: stimulus has {t} frames but rates has {rates.shape[0]}")
    if spikes is not None:
        if spikes.dtype != np.uint16:
            raise VistError(f"{where}: spikes must be uint16, got {spikes.dtype}")
        if spikes.ndim != 3 or spikes.shape[1:] != rates.shape or spikes.shape[0] < 1:
            raise VistError(
                f"{where}: spikes must be [R,T,C] = [R,{t},{rates.shape[1]}], got shape {list(spikes.shape)}"
            )
    if shape_hw is not None and tuple(stimulus.shape[1:3]) != shape_hw:
        raise VistError(
            f"{where}: stimulus frames are {stimulus.shape[1]}x{stimulus.shape[2]} but /cells/rf masks are "
            f"{shape_hw[0]}x{shape_hw[1]}"
        )


def _check_fps(fps: Any) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise VistError(f"fps must be a number > 0, got {fps!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise VistError(f"fps must be a finite number > 0, got {fps!r}")
    return value


def _unpack(name: str, arrays: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(stimulus, rates) or (stimulus, rates, spikes|None) -> arrays."""
    if len(arrays) not in (2, 3):
        raise VistError(f"movie {name!r}: expected (stimulus, rates[, spikes]), got {len(arrays)} items")
    spikes = arrays[2] if len(arrays) == 3 else None
    return np.asarray(arrays[0]), np.asarray(arrays[1]), None if spikes is None else np.asarray(spikes)


def write_dataset(
    path: str | os.PathLike[str],
    movies: Mapping[str, Sequence[Any]],
    rf: np.ndarray,
    cell_ids: Sequence[str],
    fps: float,
    units: str = "spikes/s",
    source: str = "",
    *,
    extras: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset file atomically; returns its path. An existing file is replaced only with `overwrite`.

    movies: name -> (stimulus uint8 `[T,H,W]`|`[T,H,W,3]`, rates float32 `[T,C]`, spikes uint16 `[R,T,C]` or None).
    rf: float32 `[C,H,W]`; cell_ids: C strings. extras: name -> {dataset: array} stored next to a movie's
    arrays (e.g. the simulator's `truth`); attrs: more file attributes (non-str values stored as JSON).
    """
    path = Path(path)
    rf = np.asarray(rf)
    if rf.dtype != np.float32 or rf.ndim != 3:
        raise VistError(f"rf must be float32 [C,H,W], got {rf.dtype} {list(rf.shape)}")
    ids = [str(c) for c in cell_ids]
    if len(ids) != rf.shape[0]:
        raise VistError(f"{len(ids)} cell ids but rf has {rf.shape[0]} masks")
    if len(set(ids)) != len(ids):
        raise VistError("cell ids must be unique")
    if not movies:
        raise VistError("a dataset needs at least one movie")
    fps = _check_fps(fps)
    for name, arrays in movies.items():
        if not name or "/" in name:
            raise VistError(f"movie name must be non-empty without '/', got {name!r}")
        stimulus, rates, spikes = _unpack(name, arrays)
        _check_movie_arrays(name, stimulus, rates, spikes, tuple(rf.shape[1:]))
        if rates.shape[1] != rf.shape[0]:
            raise VistError(f"movie {name!r}: rates have {rates.shape[1]} cells but rf has {rf.shape[0]}")
        if not np.isfinite(rates).all():
            raise VistError(f"movie {name!r}: rates contain NaN or inf")
    check_output_file(path, overwrite=overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["fps"] = fps
            f.attrs["units"] = str(units)
            f.attrs["source"] = str(source)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
            cells = f.create_group("cells")
            cells.create_dataset("rf", data=rf, compression="gzip", compression_opts=4)
            cells.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
            group = f.create_group("movies")
            for name, arrays in movies.items():
                stimulus, rates, spikes = _unpack(name, arrays)
                g = group.create_group(name)
                chunks = (1, *stimulus.shape[1:])  # frame-wise access
                g.create_dataset("stimulus", data=stimulus, chunks=chunks, compression="gzip", compression_opts=1)
                g.create_dataset("rates", data=rates)
                if spikes is not None:
                    g.create_dataset("spikes", data=spikes, compression="gzip", compression_opts=4)
                for key, value in (extras or {}).get(name, {}).items():
                    g.create_dataset(key, data=np.asarray(value))
    except OSError as exc:
        raise VistError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


@dataclasses.dataclass
class Movie:
    """One movie of a dataset: `stimulus` is lazy (an h5py dataset), `rates`/`spikes` are loaded on access."""

    name: str
    stimulus: Any  # h5py.Dataset uint8 [T,H,W] or [T,H,W,3]
    _group: Any = dataclasses.field(repr=False)

    @property
    def T(self) -> int:  # noqa: N802 - the format's name for the frame count
        """Number of frames (= rate bins)."""
        return int(self.stimulus.shape[0])

    @property
    def rates(self) -> np.ndarray:
        """float32 `[T,C]` trial-averaged rates."""
        return self._group["rates"][()]

    @property
    def spikes(self) -> np.ndarray | None:
        """uint16 `[R,T,C]` per-trial counts, or None when the file has none."""
        return self._group["spikes"][()] if "spikes" in self._group else None

    def extra(self, key: str) -> np.ndarray | None:
        """Another dataset stored with this movie (e.g. the simulator's `truth`), or None."""
        return self._group[key][()] if key in self._group else None


class Dataset:
    """A validated, open dataset file; use as a context manager (closes the HDF5 file)."""

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = path
        self._file = file
        self.fps: float = _check_fps(file.attrs["fps"])
        self.units: str = _attr_str(file.attrs.get("units", ""))
        self.source: str = _attr_str(file.attrs.get("source", ""))
        self.cell_ids: list[str] = [str(s) for s in file["cells/ids"].asstr()[()]]
        self.rf: np.ndarray = file["cells/rf"][()]
        self.movies: list[str] = list(file["movies"].keys())

    @property
    def attrs(self) -> dict[str, Any]:
        """All file attributes."""
        return {k: _attr_str(v) if isinstance(v, bytes) else v for k, v in self._file.attrs.items()}

    @property
    def n_cells(self) -> int:
        """C."""
        return len(self.cell_ids)

    def movie(self, name: str) -> Movie:
        """The movie called `name`; an unknown name is a VistError listing the names."""
        if name not in self.movies:
            raise VistError(f"{self.path}: no movie {name!r}; movies: {', '.join(self.movies)}")
        g = self._file["movies"][name]
        return Movie(name=name, stimulus=g["stimulus"], _group=g)

    def close(self) -> None:
        """Close the HDF5 file."""
        self._file.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _validate(path: Path, f: h5py.File) -> None:
    """Every rule of the format; one VistError (prefixed by the path) for the first broken one."""

    def need(key: str, kind: type) -> Any:
        if key not in f or not isinstance(f[key], kind):
            what = "group" if kind is h5py.Group else "dataset"
            raise VistError(f"{path}: missing {what} /{key}")
        return f[key]

    if "fps" not in f.attrs:
        raise VistError(f"{path}: missing file attribute 'fps'")
    try:
        _check_fps(f.attrs["fps"])
    except VistError as exc:
        raise VistError(f"{path}: {exc}") from None
    movies = need("movies", h5py.Group)
    rf = need("cells/rf", h5py.Dataset)
    ids = need("cells/ids", h5py.Dataset)
    if rf.dtype != np.float32 or rf.ndim != 3:
        raise VistError(f"{path}: /cells/rf must be float32 [C,H,W], got {rf.dtype} {list(rf.shape)}")
    if ids.ndim != 1 or ids.dtype.kind not in ("O", "S", "U"):
        raise VistError(f"{path}: /cells/ids must be a 1-D string array, got {ids.dtype} {list(ids.shape)}")
    if ids.shape[0] != rf.shape[0]:
        raise VistError(f"{path}: /cells/ids has {ids.shape[0]} ids but /cells/rf has {rf.shape[0]} masks")
    if len(movies) == 0:
        raise VistError(f"{path}: /movies holds no movies")
    n_cells = rf.shape[0]
    for name, g in movies.items():
        if not isinstance(g, h5py.Group):
            raise VistError(f"{path}: /movies/{name} must be a group")
        for key in ("stimulus", "rates"):
            if key not in g:
                raise VistError(f"{path}: missing dataset /movies/{name}/{key}")
        spikes = g.get("spikes")
        try:
            _check_movie_arrays(name, g["stimulus"], g["rates"], spikes, tuple(rf.shape[1:]))
        except VistError as exc:
            raise VistError(f"{path}: {exc}") from None
        if g["rates"].shape[1] != n_cells:
            raise VistError(f"{path}: movie {name!r}: rates have {g['rates'].shape[1]} cells but /cells has {n_cells}")
        if not np.isfinite(g["rates"][()]).all():
            raise VistError(f"{path}: movie {name!r}: rates contain NaN or inf")


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Open and validate a dataset file -> `Dataset` (close it, or use `with`)."""
    path = Path(path)
    if not path.is_file():
        raise VistError(f"dataset file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise VistError(f"{path}: not a readable HDF5 file ({exc})") from None
    try:
        _validate(path, f)
        return Dataset(path, f)
    except BaseException:
        f.close()
        raise
