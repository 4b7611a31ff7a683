"""Error types raised for a user's mistake (the CLI prints them as one line)."""

from __future__ import annotations


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
