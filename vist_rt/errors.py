"""Error types raised for a user's mistake (the CLI prints them as one line)."""

from __future__ import annotations


class VistError(ValueError):
    """A problem with the user's input, files or settings; its message is one line."""


class CheckpointError(VistError):
    """A checkpoint that cannot be read, or does not match what is asked of it."""
