"""Error types raised for a user's mistake (the CLI prints them as one line)."""

from __future__ import annotations

import reprlib


class VistError(ValueError):
    """A problem with the user's input, files or settings; its message is one line."""


class CheckpointError(VistError):
    """A checkpoint that cannot be read, or does not match what is asked of it."""


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message, stripped ('' when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def error_line(exc: BaseException) -> str:
    """`Type: first line of the message`: an unexpected exception, said in one line."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class _Brief(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if x.bit_length() <= 128 else f"<integer of {x.bit_length()} bits>"


_BRIEF = _Brief()
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = 4
_BRIEF.maxlevel = 2
_BRIEF.maxstring = _BRIEF.maxother = 24


def brief(value: object, limit: int = 48) -> str:
    """A short repr of a peer's value for an error message, never much longer than `limit` characters:
    long strings and bytes are cut (their length said), huge integers and deep or long containers summarised."""
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        size = len(value)
        keep = limit if isinstance(value, str) else limit // 4
        head = value[:keep] if isinstance(value, (str, bytes)) else bytes(value[:keep])
        return repr(head) if size <= keep else f"{head!r}... ({size} long)"
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
