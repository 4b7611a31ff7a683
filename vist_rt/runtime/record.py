"""Lossless HDF5 recording of a vist-rt stream (`Recorder`) and its reader (`read_recording`)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from vist_rt.errors import VistError
from vist_rt.runtime.wire import Message, SeqTracker, check_meta_header, check_rates_header, dumps

FORMAT = "vist-rt/recording"
FORMAT_VERSION = 1
INT_COLUMNS = ("seq", "tick", "frame", "t_frame_ns", "t_pub_ns")
STR = h5py.string_dtype("utf-8")


class Recorder:
    """Append `Message`s to an HDF5 file; rows are buffered and written every `flush_every` messages and on close.

    Datasets: rates [N, C] float32; seq, tick, frame, t_frame_ns, t_pub_ns [N] int64; stale [N] bool;
    headers [N] (each rates header as JSON); meta [M] (each meta header as JSON); gaps [K, 2] int64
    (after_seq, missing). After a crash the file holds everything up to the last flush.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cells: int | None = None,
        flush_every: int = 100,
        source: str | None = None,
        overwrite: bool = False,
    ) -> None:
        if flush_every < 1:
            raise VistError(f"flush_every must be >= 1, got {flush_every}")
        if cells is not None and cells < 1:
            raise VistError(f"cells must be >= 1, got {cells}")
        self.path = Path(path)
        self.flush_every = flush_every
        self.cells = cells
        self.tracker = SeqTracker()
        self.rates_count = 0
        self.meta_count = 0
        self._pending = 0
        self._rows: list[np.ndarray] = []
        self._cols: dict[str, list[int]] = {k: [] for k in INT_COLUMNS}
        self._stale: list[bool] = []
        self._headers: list[str] = []
        self._meta: list[str] = []
        self._gaps: list[tuple[int, int]] = []
        if self.path.is_dir():
            raise VistError(f"cannot write {self.path}: it is a directory")
        if not self.path.parent.is_dir():
            raise VistError(f"cannot write {self.path}: no directory {self.path.parent}")
        if self.path.exists() and not overwrite:
            raise VistError(f"{self.path} exists; choose another name or allow overwriting")
        try:
            self._file = h5py.File(self.path, "w")
        except OSError as exc:
            raise VistError(f"cannot write {self.path}: {str(exc).splitlines()[0]}") from None
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["source"] = source or ""
        for key in INT_COLUMNS:
            f.create_dataset(key, (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        f.create_dataset("stale", (0,), maxshape=(None,), dtype=bool, chunks=(4096,))
        f.create_dataset("headers", (0,), maxshape=(None,), dtype=STR, chunks=(1024,))
        f.create_dataset("meta", (0,), maxshape=(None,), dtype=STR, chunks=(64,))
        f.create_dataset("gaps", (0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(256, 2))
        if cells is not None:
            self._create_rates(cells)
        f.flush()

    def _create_rates(self, cells: int) -> None:
        rows = max(1, min(4096, (1 << 18) // (4 * cells)))  # chunks of <= 256 KiB
        self._file.create_dataset("rates", (0, cells), maxshape=(None, cells), dtype=np.float32, chunks=(rows, cells))
        self._file.attrs["cells"] = cells
        self.cells = cells

    @property
    def closed(self) -> bool:
        return not bool(self._file)

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return list(self.tracker.gaps)

    def add(self, message: Message) -> None:
        """Append one message as received or as sent (the header with its seq: `Publisher.last_rates_header`).

        VistError (and nothing written) for a header that lacks wire fields or a rates message of another n.
        """
        if self.closed:
            raise VistError(f"recording {self.path} is closed")
        if message.topic == "rates":
            rates = message.rates
            if rates is None or rates.ndim != 1:
                raise VistError("a rates message without a 1-D rates array")
            check_rates_header(message.header)  # a header as sent (with seq, t_pub_ns, ...), else WireError
            if self.cells is not None and rates.shape[0] != self.cells:
                raise VistError(f"message seq {message.seq} has {rates.shape[0]} cells, the recording has {self.cells}")
            if self.cells is None:
                self._create_rates(int(rates.shape[0]))
            header = message.header
            self._rows.append(np.array(rates, dtype=np.float32))
            for key in INT_COLUMNS:
                self._cols[key].append(int(header[key]))
            self._stale.append(bool(header["stale"]))
            self._headers.append(dumps(header).decode("utf-8"))
            self.rates_count += 1
        elif message.topic == "meta":
            check_meta_header(message.header)
            self._meta.append(dumps(message.header).decode("utf-8"))
            self.meta_count += 1
        else:
            raise VistError(f"cannot record topic {message.topic!r}")
        gap = self.tracker.update(message.seq)
        if gap is not None:
            self._gaps.append(gap)
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def add_gap(self, after_seq: int, missing: int) -> None:
        """Record a loss detected elsewhere (e.g. by a Subscriber on one topic)."""
        self._gaps.append((int(after_seq), int(missing)))

    @staticmethod
    def _append(ds: h5py.Dataset, values: Any) -> None:
        if len(values) == 0:
            return
        n = ds.shape[0]
        ds.resize(n + len(values), axis=0)
        ds[n:] = values

    def flush(self) -> None:
        """Write the buffered rows and flush the file to disk."""
        if self.closed:
            return
        f = self._file
        if self._rows:
            self._append(f["rates"], np.stack(self._rows))
            for key in INT_COLUMNS:
                self._append(f[key], np.asarray(self._cols[key], dtype=np.int64))
            self._append(f["stale"], np.asarray(self._stale, dtype=bool))
            self._append(f["headers"], np.asarray(self._headers, dtype=object))
        self._append(f["meta"], np.asarray(self._meta, dtype=object))
        self._append(f["gaps"], np.asarray(self._gaps, dtype=np.int64).reshape(-1, 2))
        self._rows.clear()
        for col in self._cols.values():
            col.clear()
        self._stale.clear()
        self._headers.clear()
        self._meta.clear()
        self._gaps.clear()
        f.attrs["lost"] = self.tracker.lost
        self._pending = 0
        f.flush()

    def close(self) -> None:
        """Flush and close (a recording without any rates gets an empty rates [0, 0]). Idempotent."""
        if self.closed:
            return
        try:
            self.flush()
            if "rates" not in self._file:
                self._file.create_dataset("rates", (0, 0), dtype=np.float32)
        finally:
            self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_recording(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a recording: numpy arrays (rates, seq, tick, frame, t_frame_ns, t_pub_ns, stale, gaps),
    `headers` and `meta` as lists of dicts, `attrs` as a dict."""
    p = Path(path)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise VistError(f"cannot read {p}: {str(exc).splitlines()[0]}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise VistError(f"{p} is not a vist-rt recording")
        if int(f.attrs.get("version", -1)) != FORMAT_VERSION:
            raise VistError(f"{p}: recording version {f.attrs.get('version')} is not supported")
        out: dict[str, Any] = {k: f[k][()] for k in ("rates", *INT_COLUMNS, "stale", "gaps") if k in f}
        out["headers"] = [json.loads(s) for s in f["headers"].asstr()[()]]
        out["meta"] = [json.loads(s) for s in f["meta"].asstr()[()]]
        out["attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return out
