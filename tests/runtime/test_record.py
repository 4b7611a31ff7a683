"""Recorder: lossless round trip, gaps and meta, flushing, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.runtime.test_wire import make_header
from vist_rt.errors import VistError
from vist_rt.runtime.record import INT_COLUMNS, NOT_RECEIVED, Recorder, read_recording, recover_recording
from vist_rt.runtime.wire import Message, decode, encode_meta, encode_rates


def rates_msg(seq: int, rates: np.ndarray, **extra: object) -> Message:
    return decode([bytes(p) for p in encode_rates(make_header(seq=seq, tick=seq, **extra), rates)])


def test_receive_times_are_kept_and_the_runs_own_rows_say_none(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    with Recorder(path) as rec:
        received = rates_msg(1, np.ones(2, np.float32))
        rec.add(Message("rates", received.header, received.rates, t_recv_ns=received.header["t_pub_ns"] + 250_000))
        rec.add(rates_msg(2, np.ones(2, np.float32)))  # not from a socket (as `run --record` adds them)
    data = read_recording(path)
    assert data["t_recv_ns"].dtype == np.int64
    assert data["t_recv_ns"].tolist() == [data["t_pub_ns"][0] + 250_000, NOT_RECEIVED]


def meta_msg(seq: int, **fields: object) -> Message:
    return decode(encode_meta({"seq": seq, **fields}))


def test_round_trip_with_gaps_and_meta(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sent = {s: rng.standard_normal(6).astype(np.float32) for s in (1, 2, 3, 6, 7, 9)}
    sent[2][0] = np.nan
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=4, source="tcp://127.0.0.1:5556") as rec:
        rec.add(meta_msg(0, model="m", cell_ids=list("abcdef"), units="Hz", fps=30.0, rf_centres=None))
        for s, r in sent.items():
            rec.add(rates_msg(s, r, stale=s == 7, mode="live"))
        rec.add(meta_msg(10, model="m"))
        assert rec.cells == 6 and rec.gaps == [(3, 2), (7, 1)]
    data = read_recording(path)
    assert data["rates"].dtype == np.float32 and data["rates"].shape == (6, 6)
    assert data["rates"].tobytes() == np.stack(list(sent.values())).tobytes()  # bit-exact, NaN included
    assert data["seq"].tolist() == list(sent) and data["seq"].dtype == np.int64
    assert data["tick"].tolist() == list(sent) and data["frame"].tolist() == list(sent)
    assert data["t_frame_ns"][0] == make_header(tick=1)["t_frame_ns"] and data["t_pub_ns"].dtype == np.int64
    assert data["stale"].tolist() == [s == 7 for s in sent]
    assert data["gaps"].tolist() == [[3, 2], [7, 1]] and data["gaps"].dtype == np.int64
    assert [h["seq"] for h in data["headers"]] == list(sent) and data["headers"][0]["mode"] == "live"
    assert data["headers"][0]["lat_ms"] == make_header()["lat_ms"]
    assert [m["seq"] for m in data["meta"]] == [0, 10] and data["meta"][0]["cell_ids"] == list("abcdef")
    attrs = data["attrs"]
    assert attrs["format"] == "vist-rt/recording" and attrs["version"] == 1 and attrs["cells"] == 6
    assert attrs["source"] == "tcp://127.0.0.1:5556" and attrs["created"][:2] == "20" and attrs["lost"] == 3


def test_flush_every_writes_to_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    rec = Recorder(path, flush_every=3)
    try:
        for s in range(7):
            rec.add(rates_msg(s, np.full(2, s, np.float32)))
        with h5py.File(path, "r") as f:  # another reader sees the flushed rows only
            assert f["rates"].shape == (6, 2) and f["seq"][()].tolist() == list(range(6))
    finally:
        rec.close()
    assert read_recording(path)["seq"].tolist() == list(range(7))
    rec.close()  # idempotent


def test_cells_mismatch_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=1) as rec:
        rec.add(rates_msg(0, np.ones(3, np.float32)))
        with pytest.raises(VistError, match="seq 1 has 4 cells, the recording has 3"):
            rec.add(rates_msg(1, np.ones(4, np.float32)))
        rec.add(rates_msg(2, np.ones(3, np.float32)))
    data = read_recording(path)
    assert data["seq"].tolist() == [0, 2] and data["gaps"].tolist() == [[0, 1]]


def test_cells_fixed_up_front(tmp_path: Path) -> None:
    with Recorder(tmp_path / "a.h5", cells=2) as rec, pytest.raises(VistError, match="has 2"):
        rec.add(rates_msg(0, np.ones(3, np.float32)))


def test_headers_without_wire_fields_are_refused(tmp_path: Path) -> None:
    header = make_header()
    del header["seq"], header["t_pub_ns"]
    with Recorder(tmp_path / "r.h5") as rec:
        with pytest.raises(VistError, match="lacks v, seq, n, t_pub_ns"):
            rec.add(Message("rates", header, np.ones(2, np.float32)))
        with pytest.raises(VistError, match="meta header lacks seq"):
            rec.add(Message("meta", {"model": "m"}, None))
        assert rec.rates_count == rec.meta_count == 0 and rec.cells is None


def test_meta_only_recording(tmp_path: Path) -> None:
    with Recorder(tmp_path / "m.h5") as rec:
        rec.add(meta_msg(0, model="m"))
    data = read_recording(tmp_path / "m.h5")
    assert data["rates"].shape == (0, 0) and data["seq"].shape == (0,) and len(data["meta"]) == 1


def test_add_after_close_and_gap_from_elsewhere(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "g.h5")
    rec.add_gap(10, 3)
    rec.close()
    assert read_recording(tmp_path / "g.h5")["gaps"].tolist() == [[10, 3]]
    with pytest.raises(VistError, match="closed"):
        rec.add(meta_msg(0))


def test_path_errors(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="no directory"):
        Recorder(tmp_path / "missing" / "x.h5")
    with pytest.raises(VistError, match="is a folder"):
        Recorder(tmp_path)
    (tmp_path / "old.h5").write_bytes(b"precious")
    with pytest.raises(VistError, match="exists"):
        Recorder(tmp_path / "old.h5")
    assert (tmp_path / "old.h5").read_bytes() == b"precious"
    Recorder(tmp_path / "old.h5", overwrite=True).close()
    if os.name == "posix" and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(VistError, match="cannot write") as info:
                Recorder(ro / "x.h5")
            assert "\n" not in str(info.value)
        finally:
            ro.chmod(0o700)
    with pytest.raises(VistError, match="flush_every"):
        Recorder(tmp_path / "y.h5", flush_every=0)


def test_read_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(VistError, match="cannot read"):
        read_recording(tmp_path / "none.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(VistError, match="not a vist-rt recording"):
        read_recording(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(VistError, match="cannot read"):
        read_recording(tmp_path / "text.h5")


def test_headers_are_json(tmp_path: Path) -> None:
    with Recorder(tmp_path / "h.h5") as rec:
        rec.add(rates_msg(0, np.ones(1, np.float32)))
    with h5py.File(tmp_path / "h.h5", "r") as f:
        assert json.loads(f["headers"].asstr()[0])["n"] == 1


def _columns_equal(path: Path) -> list[int]:
    """Every per-message dataset's length (read straight from the file): they must all be equal."""
    with h5py.File(path, "r") as f:
        return [f[k].shape[0] for k in ("rates", *INT_COLUMNS, "stale", "headers")]


class _FailingWrites:
    """Patch h5py so that the `after`-th dataset write from now on raises `exc` (once)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int, exc: BaseException) -> None:
        self.calls = 0
        real = h5py.Dataset.__setitem__

        def setitem(ds: h5py.Dataset, key: object, value: object) -> None:
            self.calls += 1
            if self.calls == after:
                raise exc
            real(ds, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)


def test_failed_flush_rolls_back_and_keeps_the_file_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rec.h5"
    rec = Recorder(path, flush_every=4)
    for s in range(4):
        rec.add(rates_msg(s, np.full(2, s, np.float32)))  # one complete flush
    _FailingWrites(monkeypatch, after=3, exc=OSError("[Errno 28] No space left on device"))
    for s in range(4, 7):
        rec.add(rates_msg(s, np.full(2, s, np.float32)))
    with pytest.raises(VistError, match="No space left on device") as info:
        rec.add(rates_msg(7, np.full(2, 7, np.float32)))  # the 3rd dataset of this flush fails
    assert "\n" not in str(info.value)
    assert _columns_equal(path) == [4] * 9  # cut back to the last complete flush, no half-written rows
    with pytest.raises(VistError, match="failed"):
        rec.add(rates_msg(8, np.full(2, 8, np.float32)))
    rec.close()  # writes nothing more, does not raise again
    with h5py.File(path) as f:  # the file itself: readable, cut back to its last complete flush
        assert f["seq"][()].tolist() == [0, 1, 2, 3]
    with pytest.raises(VistError, match="has a journal"):
        read_recording(path)  # not silently short: its journal holds rows the file lacks
    monkeypatch.undo()  # the disk has room again
    assert recover_recording(path)["rates"] == 8  # every row added before the failure, the failed flush's too
    data = read_recording(path)
    assert data["seq"].tolist() == list(range(8)) and data["cut_rows"] == 0


def test_interrupted_flush_is_written_once_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=100) as rec:
        for s in range(5):
            rec.add(rates_msg(s, np.full(3, s, np.float32)))
        with monkeypatch.context() as m:
            _FailingWrites(m, after=4, exc=KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                rec.flush()
        assert _columns_equal(path) == [0] * 9 and rec.pending == 5
        rec.add(rates_msg(5, np.full(3, 5, np.float32)))
    data = read_recording(path)
    assert data["seq"].tolist() == list(range(6)) and data["rates"][:, 0].tolist() == list(range(6))


def test_disk_almost_full_stops_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    rec = Recorder(path, flush_every=2, min_free_bytes=1 << 62)
    rec.add(rates_msg(0, np.ones(2, np.float32)))
    with pytest.raises(VistError, match=r"almost full .* holds the 0 rates rows written before"):
        rec.add(rates_msg(1, np.ones(2, np.float32)))
    rec.close()
    with h5py.File(path) as f:
        assert f["seq"][()].tolist() == []
    assert recover_recording(path)["rates"] == 2 and read_recording(path)["seq"].tolist() == [0, 1]
    with Recorder(tmp_path / "empty.h5", min_free_bytes=1 << 62):
        pass  # nothing to write: closing on a full disk is fine


def test_integers_beyond_int64_are_refused_and_nothing_is_buffered(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=1) as rec:
        rec.add(rates_msg(0, np.ones(2, np.float32)))
        with pytest.raises(VistError, match="t_frame_ns 18446744073709551615 does not fit a 64-bit integer"):
            rec.add(rates_msg(1, np.ones(2, np.float32), t_frame_ns=2**64 - 1))
        rec.add(rates_msg(2, np.ones(2, np.float32)))
    assert read_recording(path)["seq"].tolist() == [0, 2]


def test_rows_reach_the_disk_after_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=1000, flush_interval_s=0.05) as rec:
        rec.add(rates_msg(0, np.ones(2, np.float32)))
        rec.flush_due()
        assert _columns_equal(path)[0] == 0  # not yet due
        time.sleep(0.06)
        rec.flush_due()  # e.g. from an idle loop: no message needed
        assert _columns_equal(path)[0] == 1 and rec.pending == 0
        rec.add(rates_msg(1, np.ones(2, np.float32)))
        time.sleep(0.06)
        rec.add(rates_msg(2, np.ones(2, np.float32)))  # an add past the interval flushes too
        assert _columns_equal(path)[0] == 3


def test_read_recording_cuts_unequal_columns_and_refuses_bad_headers(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(path) as rec:
        for s in range(3):
            rec.add(rates_msg(s, np.ones(2, np.float32)))
    with h5py.File(path, "a") as f:  # as another tool might leave it
        f["seq"].resize(4, axis=0)
    data = read_recording(path)
    assert data["cut_rows"] == 1 and data["seq"].tolist() == [0, 1, 2] and len(data["headers"]) == 3
    with h5py.File(path, "a") as f:
        f["headers"][1] = "{broken"
    with pytest.raises(VistError, match="a header is not JSON") as info:
        read_recording(path)
    assert "\n" not in str(info.value)
