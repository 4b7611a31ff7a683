"""Lossless HDF5 recording of a vist-rt stream (`Recorder`), its reader (`read_recording`) and the recovery of a
recording whose process was killed (`recover_recording`, from the recording's journal)."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from vist_rt.errors import VistError, error_line, first_line
from vist_rt.files import atomic_path, check_output_file
from vist_rt.runtime.wire import Message, SeqTracker, check_meta_header, check_rates_header, dumps

FORMAT = "vist-rt/recording"
FORMAT_VERSION = 1
HEADER_COLUMNS = ("seq", "tick", "frame", "t_frame_ns", "t_pub_ns")  # rates header fields kept as columns
INT_COLUMNS = (*HEADER_COLUMNS, "t_recv_ns")  # t_recv_ns: Message.t_recv_ns (absent in files before 2026-11-27)
NOT_RECEIVED = -1  # t_recv_ns of a message recorded by the publishing run itself (never on a socket)
STR = h5py.string_dtype("utf-8")
JOURNAL_SUFFIX = ".journal"  # OUT.h5.journal: every message as it is added, until OUT.h5 is closed cleanly
_JOURNAL_MAGIC = b"vist-rt/journal 1\n"
_RECORD = struct.Struct("<cIIq")  # kind (R rates, M meta, G gap), header bytes, payload bytes, t_recv_ns
_CRC = struct.Struct("<I")


class RecordingError(VistError):
    """Writing to the recording failed (disk full, I/O error); the file holds every row up to the last flush."""


class CellCountError(VistError):
    """A rates message with another cell count than the recording's (the publisher restarted with another model)."""


_INT64 = np.iinfo(np.int64)


def journal_path(path: str | os.PathLike[str]) -> Path:
    """Where the journal of the recording at `path` lives: next to it, `OUT.h5.journal`."""
    p = Path(path)
    return p.with_name(p.name + JOURNAL_SUFFIX)


class Recorder:
    """Append `Message`s to an HDF5 file; rows are buffered and written every `flush_every` messages, at least
    every `flush_interval_s` seconds while messages arrive (and on `flush_due`), and on close.

    Every message is also appended to a journal next to the file (`OUT.h5.journal`, one write per message,
    before it is buffered), which a clean close deletes. If the process is killed (SIGKILL, out of memory, a
    crash), the journal holds every message added before that, and `recover_recording` rebuilds the file
    from it, even if the kill came in the middle of an HDF5 write. `journal=False` writes none. `gaps=False`:
    the messages are one stream's of a several-stream run, whose publisher-wide seq jumps over the other streams'
    messages: no jump is a loss.

    Datasets: rates [N, C] float32; seq, tick, frame, t_frame_ns, t_pub_ns [N] int64 (header fields);
    t_recv_ns [N] int64 (when a subscriber took the message off the socket, NOT_RECEIVED when the run recorded
    what it sent); stale [N] bool;
    headers [N] (each rates header as JSON); meta [M] (each meta header as JSON); gaps [K, 2] int64
    (after_seq, missing). After a crash the file holds everything up to the last flush.
    A flush is all or nothing: if a write fails (or is interrupted) every dataset is cut back to the last
    complete flush, so the columns always have the same length. A flush is refused (RecordingError) when
    fewer than `min_free_bytes` would be left on the disk, before HDF5 can fail half-way.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cells: int | None = None,
        flush_every: int = 100,
        flush_interval_s: float = 1.0,
        min_free_bytes: int = 64 << 20,
        source: str | None = None,
        overwrite: bool = False,
        journal: bool = True,
        gaps: bool = True,
    ) -> None:
        if flush_every < 1:
            raise VistError(f"flush_every must be >= 1, got {flush_every}")
        if not flush_interval_s > 0:
            raise VistError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        if cells is not None and cells < 1:
            raise VistError(f"cells must be >= 1, got {cells}")
        self.path = Path(path)
        self.flush_every = flush_every
        self.flush_interval_s = float(flush_interval_s)
        self.min_free_bytes = int(min_free_bytes)
        self.cells = cells
        self.tracker = SeqTracker()
        self.track_gaps = gaps  # False: the messages are one stream's of several (seq jumps over the others')
        self.rates_count = 0
        self.meta_count = 0
        self.failed: str | None = None  # why writing stopped, once it has
        # one tuple per rates message (rates, int columns, stale, header JSON): one append per message,
        # so an interrupted add never leaves the columns misaligned
        self._rows: list[tuple[np.ndarray, tuple[int, ...], bool, str]] = []
        self._meta: list[str] = []
        self._gaps: list[tuple[int, int]] = []
        self._last_flush = time.monotonic()
        check_writable(self.path, overwrite=overwrite)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self._journal: int | None = None
        if journal:
            attrs = {"cells": cells, "source": source or "", "created": created, "gaps": gaps}
            self._journal = _open_journal(self.path, attrs)
        try:
            self._file = h5py.File(self.path, "w")
        except OSError as exc:
            self._drop_journal()
            raise VistError(f"cannot write {self.path}: {first_line(exc)}") from None
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["created"] = created
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

    @property
    def pending(self) -> int:
        """Messages and gaps buffered, not yet on disk."""
        return len(self._rows) + len(self._meta) + len(self._gaps)

    def add(self, message: Message) -> None:
        """Append one message as received or as sent (the header with its seq: `Publisher.last_rates_header`).

        VistError (and nothing buffered) for a header that lacks wire fields or holds integers beyond int64;
        CellCountError for a rates message of another n; RecordingError once writing has failed.
        """
        if self.closed:
            raise VistError(f"recording {self.path} is closed")
        if self.failed is not None:
            raise RecordingError(self.failed)
        if message.topic == "rates":
            rates = message.rates
            if rates is None or rates.ndim != 1:
                raise VistError("a rates message without a 1-D rates array")
            header = message.header
            check_rates_header(header)  # a header as sent (with seq, t_pub_ns, ...), else WireError
            if self.cells is not None and rates.shape[0] != self.cells:
                raise CellCountError(
                    f"message seq {message.seq} has {rates.shape[0]} cells, the recording has {self.cells}"
                )
            ints = tuple(int(header[key]) for key in HEADER_COLUMNS)
            for key, value in zip(HEADER_COLUMNS, ints):
                if not _INT64.min <= value <= _INT64.max:
                    raise VistError(f"message seq {message.seq}: {key} {value} does not fit a 64-bit integer")
            ints += (NOT_RECEIVED if message.t_recv_ns is None else int(message.t_recv_ns),)
            values = np.array(rates, dtype=np.float32)
            text = dumps(header)
            row = (values, ints, bool(header["stale"]), text.decode("utf-8"))
            if self.cells is None:
                self._write(lambda: self._create_rates(int(rates.shape[0])))
            self._journal_write(b"R", text, values.tobytes(), ints[-1])
            self._rows.append(row)
            self.rates_count += 1
        elif message.topic == "meta":
            check_meta_header(message.header)
            text = dumps(message.header)
            self._journal_write(b"M", text, b"", NOT_RECEIVED)
            self._meta.append(text.decode("utf-8"))
            self.meta_count += 1
        else:
            raise VistError(f"cannot record topic {message.topic!r}")
        gap = self.tracker.update(message.seq) if self.track_gaps else None
        if gap is not None:
            self._gaps.append(gap)
        if len(self._rows) + len(self._meta) >= self.flush_every:
            self.flush()
        else:
            self.flush_due()

    def add_gap(self, after_seq: int, missing: int) -> None:
        """Record a loss detected elsewhere (e.g. by a Subscriber on one topic)."""
        gap = (int(after_seq), int(missing))
        self._journal_write(b"G", b"", struct.pack("<qq", *gap), NOT_RECEIVED)
        self._gaps.append(gap)

    def _journal_write(self, kind: bytes, header: bytes, payload: bytes, t_recv_ns: int) -> None:
        """Append one message to the journal: one write, so a killed process leaves whole records (and a torn
        last one at worst, which its checksum tells). An OSError marks the recording failed."""
        if self._journal is None:
            return
        record = _RECORD.pack(kind, len(header), len(payload), t_recv_ns) + header + payload
        self._write(lambda: os.write(self._journal, record + _CRC.pack(zlib.crc32(record))))

    def _drop_journal(self) -> None:
        """Close and delete the journal (the HDF5 file holds everything it held)."""
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
            journal_path(self.path).unlink(missing_ok=True)

    def flush_due(self) -> None:
        """Flush if something has waited `flush_interval_s` or longer (call it while idle, too)."""
        if self.pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def _write(self, action: Any) -> None:
        """Run a file operation; an OSError marks the recording failed (RecordingError, one line)."""
        try:
            action()
        except OSError as exc:
            self._fail(f"writing {self.path} failed: {first_line(exc)}")

    def _fail(self, why: str) -> None:
        """Stop recording for good (RecordingError), saying what the journal still holds."""
        if self._journal is not None:
            why += f"; its journal keeps every row: `vist-rt recover {self.path}` once the disk has room"
        self.failed = why
        raise RecordingError(why)

    def _columns(self) -> dict[str, np.ndarray]:
        """The buffered rows as one array per dataset (no file access)."""
        cols: dict[str, np.ndarray] = {}
        if self._rows:
            cols["rates"] = np.stack([r[0] for r in self._rows])
            ints = np.array([r[1] for r in self._rows], dtype=np.int64)
            for j, key in enumerate(INT_COLUMNS):
                cols[key] = ints[:, j]
            cols["stale"] = np.array([r[2] for r in self._rows], dtype=bool)
            cols["headers"] = np.array([r[3] for r in self._rows], dtype=object)
        if self._meta:
            cols["meta"] = np.array(self._meta, dtype=object)
        if self._gaps:
            cols["gaps"] = np.array(self._gaps, dtype=np.int64).reshape(-1, 2)
        return cols

    def flush(self) -> None:
        """Write the buffered rows and flush the file to disk: all of them, or none (see the class doc)."""
        if self.closed or self.failed is not None:
            return
        cols = self._columns()
        need = sum(a.nbytes if a.dtype != object else sum(len(s) + 16 for s in a) for a in cols.values())
        free = shutil.disk_usage(self.path.parent).free if cols else 0
        if cols and free - need < self.min_free_bytes:
            self._fail(
                f"the disk holding {self.path} is almost full ({free / 2**20:.0f} MiB free, "
                f"{self.min_free_bytes / 2**20:.0f} MiB kept free): recording stopped; "
                f"the file holds the {self._file['seq'].shape[0]} rates rows written before"
            )
        f = self._file
        before = {name: f[name].shape[0] for name in cols}
        try:
            for name, values in cols.items():
                ds = f[name]
                n = before[name]
                ds.resize(n + len(values), axis=0)
                ds[n:] = values
            f.attrs["lost"] = self.tracker.lost
            f.flush()
        except BaseException as exc:  # interrupted or failed half-way: back to the last complete flush
            for name, n in before.items():
                with contextlib.suppress(Exception):
                    f[name].resize(n, axis=0)
            if isinstance(exc, OSError):
                self._fail(f"writing {self.path} failed: {first_line(exc)}")
            raise
        self._rows.clear()
        self._meta.clear()
        self._gaps.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close (a recording without any rates gets an empty rates [0, 0]). Idempotent.

        After a failed write nothing more is written; the file is closed as it was at the last flush.
        """
        if self.closed:
            return
        try:
            self.flush()
            if "rates" not in self._file and self.failed is None:
                self._write(lambda: self._file.create_dataset("rates", (0, 0), dtype=np.float32))
        finally:
            with contextlib.suppress(OSError) if self.failed is not None else contextlib.nullcontext():
                self._file.close()
        if self.failed is None:
            self._drop_journal()  # closed cleanly: the file holds every message (after a failure, the journal stays)
        elif self._journal is not None:
            os.close(self._journal)
            self._journal = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_writable(path: Path, *, overwrite: bool = False) -> None:
    """VistError (one line) unless a recording can be created at `path` (its folder must exist, no journal of
    a killed recording may be there unless `overwrite`); creates nothing."""
    if not path.is_dir() and not path.parent.is_dir():
        raise VistError(f"cannot write {path}: no directory {path.parent}")
    check_output_file(path, overwrite=overwrite, hint="--force, or overwrite=True, replaces it")
    journal = journal_path(path)
    if journal.exists() and not overwrite:
        raise VistError(
            f"{journal} exists: the journal of a recording whose process was killed; "
            f"`vist-rt recover {path}` rebuilds the recording from it (or remove it)"
        )


def _open_journal(path: Path, attrs: dict[str, Any]) -> int:
    """Create `path`'s journal (a stale one is replaced: check_writable allowed it) with its first line and attrs."""
    journal = journal_path(path)
    journal.unlink(missing_ok=True)
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, _JOURNAL_MAGIC + dumps(attrs) + b"\n")
    except OSError as exc:
        raise VistError(f"cannot write {journal}: {first_line(exc)}") from None
    return fd


def read_journal(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Message], list[tuple[int, int]], int]:
    """The journal of the recording at `path`: (attrs, messages in order, gaps added, bytes of a torn or
    damaged end that were left out). VistError (one line) when there is no journal or it is not one."""
    journal = journal_path(path)
    try:
        data = journal.read_bytes()
    except OSError as exc:
        raise VistError(f"cannot read {journal}: {first_line(exc)}") from None
    if not data.startswith(_JOURNAL_MAGIC) or b"\n" not in data[len(_JOURNAL_MAGIC) :]:
        raise VistError(f"{journal} is not a vist-rt journal")
    end = data.index(b"\n", len(_JOURNAL_MAGIC))
    try:
        attrs = json.loads(data[len(_JOURNAL_MAGIC) : end])
    except ValueError:
        raise VistError(f"{journal}: its first line is not JSON") from None
    messages: list[Message] = []
    gaps: list[tuple[int, int]] = []
    pos = end + 1
    while pos + _RECORD.size <= len(data):
        kind, head_len, payload_len, t_recv = _RECORD.unpack_from(data, pos)
        stop = pos + _RECORD.size + head_len + payload_len
        if stop + _CRC.size > len(data) or _CRC.unpack_from(data, stop)[0] != zlib.crc32(data[pos:stop]):
            break  # torn or damaged: nothing after it can be trusted
        head = data[pos + _RECORD.size : pos + _RECORD.size + head_len]
        payload = data[pos + _RECORD.size + head_len : stop]
        if kind == b"G":
            after, missing = struct.unpack("<qq", payload)
            gaps.append((after, missing))
        else:
            header = json.loads(head)
            rates = np.frombuffer(payload, np.float32) if kind == b"R" else None
            recv = None if t_recv == NOT_RECEIVED else t_recv
            messages.append(Message("rates" if kind == b"R" else "meta", header, rates, recv))
        pos = stop + _CRC.size
    return attrs, messages, gaps, len(data) - pos


def recover_recording(path: str | os.PathLike[str]) -> dict[str, int]:
    """Rebuild the recording at `path` from its journal (every message its process added before it was killed),
    replacing whatever the file holds (it may be cut short, or damaged by a kill in the middle of a write); the
    journal is deleted once the new file is complete. Returns the counts: rates, meta, gaps, torn_bytes."""
    p = Path(path)
    attrs, messages, gaps, torn = read_journal(p)
    try:
        with atomic_path(p) as temp:
            rec = Recorder(temp, cells=attrs.get("cells"), source=attrs.get("source") or None, overwrite=True,
                           journal=False, flush_every=1 << 30, gaps=bool(attrs.get("gaps", True)))  # fmt: skip
            try:
                for message in messages:
                    rec.add(message)
                for gap in gaps:
                    rec.add_gap(*gap)
                rec.close()
                with h5py.File(temp, "a") as f:
                    f.attrs["created"] = attrs.get("created", "")
                    f.attrs["recovered"] = (
                        f"from {journal_path(p).name}: {len(messages)} messages, {torn} torn bytes dropped"
                    )
            except BaseException:
                rec.close()
                raise
    except OSError as exc:
        raise VistError(f"cannot write {p}: {first_line(exc)}") from None
    journal_path(p).unlink()
    return {"rates": rec.rates_count, "meta": rec.meta_count, "gaps": len(rec.tracker.gaps), "torn_bytes": torn}


def read_recording(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a recording: numpy arrays (rates, seq, tick, frame, t_frame_ns, t_pub_ns, t_recv_ns (in
    files since 2026-11-27), stale, gaps),
    `headers` and `meta` as lists of dicts, `attrs` as a dict.

    Per-message columns of unequal length (a file written by another tool, or damaged) are cut to the
    shortest, and `cut_rows` says how many rows the longest lost; VistError (one line) for an unreadable file.
    """
    p = Path(path)
    if journal_path(p).exists():
        raise VistError(
            f"{p} has a journal ({journal_path(p).name}): it is still being recorded, or its process was killed; "
            f"once it is not running, `vist-rt recover {p}` completes it"
        )
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise VistError(f"cannot read {p}: {first_line(exc)}") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise VistError(f"{p} is not a vist-rt recording")
        if int(f.attrs.get("version", -1)) != FORMAT_VERSION:
            raise VistError(f"{p}: recording version {f.attrs.get('version')} is not supported")
        try:
            out: dict[str, Any] = {k: f[k][()] for k in ("rates", *INT_COLUMNS, "stale", "gaps") if k in f}
            headers = list(f["headers"].asstr()[()])
            out["headers"] = headers
            out["meta"] = [json.loads(s) for s in f["meta"].asstr()[()]]
            out["attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        except (OSError, KeyError, ValueError) as exc:
            raise VistError(f"cannot read {p}: {error_line(exc)}") from None
    per_row = [k for k in ("rates", *INT_COLUMNS, "stale") if k in out]
    lengths = [len(out[k]) for k in per_row] + [len(headers)]
    rows = min(lengths)
    out["cut_rows"] = max(lengths) - rows
    for k in per_row:
        out[k] = out[k][:rows]
    try:
        out["headers"] = [json.loads(s) for s in headers[:rows]]
    except ValueError as exc:
        raise VistError(f"cannot read {p}: a header is not JSON ({first_line(exc)})") from None
    return out
