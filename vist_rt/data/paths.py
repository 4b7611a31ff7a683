"""Checks on output folders, made before any expensive work: a file where a folder is expected, a place
that cannot be written. Each problem is one one-line `VistError` (output files: `vist_rt.files`)."""

from __future__ import annotations

import os
from pathlib import Path

from vist_rt.errors import VistError
from vist_rt.files import check_writable, flag_prefix


def check_output_dir(path: str | os.PathLike[str], *, flag: str = "") -> Path:
    """`path` is a folder we can write into, or one that can be created (nothing is created here)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VistError(f"{flag_prefix(flag)}{p} is not a folder")
    check_writable(p, p, flag)
    return p
