"""Checks on output paths, made before any expensive work: a folder where a file is expected, a file that
would be replaced silently, a place that cannot be written. Each problem is one one-line `VistError`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vist_rt.errors import VistError


def _label(flag: str) -> str:
    return f"{flag} " if flag else ""


def _probe(folder: Path, target: Path, flag: str) -> None:
    """The nearest existing folder at or above `folder` must be a folder we can create files in (tried, then
    removed: permission bits say little for root or on /proc)."""
    probe = folder if str(folder) else Path(".")
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise VistError(f"cannot write {_label(flag)}{target}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vist-rt-probe.", dir=probe)
    except OSError as exc:
        raise VistError(f"cannot write {_label(flag)}{target}: {exc.strerror or exc}") from None
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def check_output_file(
    path: str | os.PathLike[str], *, overwrite: bool, flag: str = "", hint: str = "give --force to replace it"
) -> Path:
    """`path` can be written as a file: not a folder, writable, and (unless `overwrite`) not already there."""
    p = Path(path)
    if p.is_dir():
        raise VistError(f"{_label(flag)}{p} is a folder; give a file path")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise VistError(f"{_label(flag)}{p} already exists: not replaced ({hint})")
    _probe(p.parent, p, flag)
    return p


def check_output_dir(path: str | os.PathLike[str], *, flag: str = "") -> Path:
    """`path` is a folder we can write into, or one that can be created (nothing is created here)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VistError(f"{_label(flag)}{p} is not a folder")
    _probe(p, p, flag)
    return p
