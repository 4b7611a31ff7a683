"""Atomic writes (`atomic_write`, `atomic_path`) and output-file checks of `vist_rt.files`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from vist_rt.errors import VistError
from vist_rt.files import atomic_path, atomic_write, check_output_file, temp_path_for


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_bytes_and_str(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    assert atomic_write(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, "héllo\n")  # replaces; a str is written as UTF-8
    assert target.read_bytes() == "héllo\n".encode()
    assert names(tmp_path) == ["out.bin"]


def test_atomic_write_has_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_atomic_write_fsyncs_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    atomic_write(tmp_path / "a", b"x")
    assert synced == []
    atomic_write(tmp_path / "b", b"x", fsync=True)
    assert len(synced) == 1


def test_temp_name_is_hidden_unique_and_next_to_the_target(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    a, b = temp_path_for(target), temp_path_for(target)
    assert a != b and a.parent == tmp_path
    assert re.fullmatch(rf"\.model\.onnx\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", a.name)


def test_atomic_path_success(tmp_path: Path) -> None:
    target = tmp_path / "data.h5"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_file() and tmp.stat().st_size == 0  # reserved, empty
        assert target.read_bytes() == b"old"  # untouched until the block ends
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert names(tmp_path) == ["data.h5"]


def test_atomic_path_writer_may_recreate_the_file(tmp_path: Path) -> None:
    """A writer that deletes its output and writes a new file (a linker's -o) is fine."""
    target = tmp_path / "lib.so"
    with atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"ELF")
    assert target.read_bytes() == b"ELF" and names(tmp_path) == ["lib.so"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_atomic_path_failure_leaves_target_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "ckpt.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(type(error)), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a fi")
        raise error
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["ckpt.safetensors"]


def test_atomic_path_failure_without_a_target_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.npy") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_atomic_write_interrupted_mid_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "engine"
    target.write_bytes(b"old")

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new engine", fsync=True)
    assert target.read_bytes() == b"old" and names(tmp_path) == ["engine"]


def test_failed_rename_removes_the_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    target.write_text("{}")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "[]")
    assert target.read_text() == "{}" and names(tmp_path) == ["f.json"]


def test_missing_folder_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "f", b"x")
    assert names(tmp_path) == []


def test_check_output_file(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "new.h5", overwrite=False) == tmp_path / "new.h5"
    (tmp_path / "old.h5").write_bytes(b"")
    with pytest.raises(VistError, match=r"^--out .*old\.h5 already exists: not replaced \(give --force"):
        check_output_file(tmp_path / "old.h5", overwrite=False, flag="--out")
    assert check_output_file(tmp_path / "old.h5", overwrite=True) == tmp_path / "old.h5"
    with pytest.raises(VistError, match="is a folder; give a file path"):
        check_output_file(tmp_path, overwrite=True)
    with pytest.raises(VistError, match=r"cannot write .*: .* is not a folder"):
        check_output_file(tmp_path / "old.h5" / "x", overwrite=True)
    assert names(tmp_path) == ["old.h5"]  # the probe leaves nothing behind
