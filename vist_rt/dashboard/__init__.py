"""The live terminal dashboard of `vist-rt run`: `Dashboard` (threads, keys, terminal) and `render` (pure)."""

from vist_rt.dashboard.app import Dashboard
from vist_rt.dashboard.view import Snapshot, render

__all__ = ["Dashboard", "Snapshot", "render"]
