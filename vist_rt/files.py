"""Writing files safely: output paths checked before any expensive work, and atomic writes.

`check_output_file` refuses, in one line (`VistError`), a folder where a file is expected, a file that would
be replaced silently, a place that cannot be written. `atomic_write` / `atomic_path` write through a
temporary file in the target's folder (`.{name}.{pid}.{random}.tmp`) renamed over the target with
`os.replace` once complete, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vist_rt.errors import VistError, error_line


def flag_prefix(flag: str) -> str:
    """`flag` and a space for a message ("--out "), or "" when there is no flag."""
    return f"{flag} " if flag else ""


def check_writable(folder: Path, target: Path, flag: str = "") -> None:
    """The nearest existing folder at or above `folder` must be a folder we can create files in (tried, then
    removed: permission bits say little for root or on /proc); one-line VistError naming `target` otherwise."""
    probe = folder if str(folder) else Path(".")
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise VistError(f"cannot write {flag_prefix(flag)}{target}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".vist-rt-probe.", dir=probe)
    except OSError as exc:
        raise VistError(f"cannot write {flag_prefix(flag)}{target}: {exc.strerror or exc}") from None
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)


def check_output_file(
    path: str | os.PathLike[str], *, overwrite: bool, flag: str = "", hint: str = "give --force to replace it"
) -> Path:
    """`path` can be written as a file: not a folder, writable, and (unless `overwrite`) not already there."""
    p = Path(path)
    if p.is_dir():
        raise VistError(f"{flag_prefix(flag)}{p} is a folder; give a file path")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise VistError(f"{flag_prefix(flag)}{p} already exists: not replaced ({hint})")
    check_writable(p.parent, p, flag)
    return p


def temp_path_for(target: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to `target`: `.{name}.{pid}.{random}.tmp` (hidden, unique per process)."""
    t = Path(target)
    return t.with_name(f".{t.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _reserve(target: Path) -> Path:
    """Create an empty temporary file next to `target` (usual permissions: 0o666 less the umask)."""
    for _ in range(16):
        tmp = temp_path_for(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield the path of a new empty temporary file next to `target`, for writers that need a path.

    When the block ends normally the temporary file replaces `target` (`os.replace`; flushed to disk first
    with `fsync`); when it raises (KeyboardInterrupt included), or the rename fails, the temporary file is
    removed and `target` is left as it was. OSError when the folder cannot take a new file."""
    tmp = _reserve(Path(target))
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_write(
    target: str | os.PathLike[str], data: bytes | str, *, fsync: bool = False, encoding: str = "utf-8"
) -> Path:
    """Write `data` (a str as `encoding`) to `target` atomically (see `atomic_path`); returns the target path.
    OSError when it cannot be written, with `target` unchanged."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(target, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(payload)
    return Path(target)


def read_npy(path: str | os.PathLike[str], what: str, form: str = "", where: str = "") -> np.ndarray:
    """One array from a .npy file (never unpickled); one VistError line (prefixed by `where`) naming `what` (and
    its `form`, e.g. "[C, g, g]") where it cannot be read."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        kind = f"a .npy file {form}" if form else "a .npy file"
        raise VistError(f"{where}cannot read {what} {path} ({kind}): {error_line(exc)}") from None
    if not isinstance(data, np.ndarray):
        raise VistError(f"{where}{what} {path} must hold one array {form}".rstrip())
    return data


def write_npy(target: str | os.PathLike[str], array: np.ndarray) -> Path:
    """`array` to the .npy file `target`, atomically (see `atomic_path`)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(target)
