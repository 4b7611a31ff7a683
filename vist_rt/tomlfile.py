"""Reading TOML settings files with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vist_rt.errors import VistError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: str | Path, table: str | None = None) -> dict[str, Any]:
    """The file's `[table]` when it has one (else its top level); VistError for an unreadable or invalid file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise VistError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise VistError(f"config {path} is not valid TOML: {exc}") from None
    if table is not None and table in data:
        if not isinstance(data[table], dict):
            raise VistError(f"config {path}: [{table}] must be a table")
        return data[table]
    return data
