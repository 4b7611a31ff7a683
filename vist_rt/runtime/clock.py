"""The model clock: ticks at the checkpoint's frame rate on a fixed schedule that never slips.

Tick k is due at `start + k / fps`. A tick served late still happens; ticks whose time has wholly
passed while the loop was busy are skipped and counted as missed, so the schedule stays anchored
to the start time instead of drifting by each delay. Time comes from an injectable clock (tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vist_rt.errors import VistError


class ModelClock:
    """Fixed-rate tick schedule: `wait()` sleeps until the next due tick and returns its index."""

    def __init__(
        self,
        fps: float,
        *,
        now: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not fps > 0:
            raise VistError(f"model frame rate must be > 0, got {fps}")
        self.fps = float(fps)
        self.period = 1.0 / self.fps
        self._now, self._sleep = now, sleep
        self.start: float | None = None
        self.next_tick = 0  # index of the next tick to serve
        self.missed = 0  # ticks skipped because their whole period had passed
        self.late_s = 0.0  # lateness of the last served tick

    def due(self, tick: int) -> float:
        """When tick `tick` is due (clock seconds)."""
        assert self.start is not None
        return self.start + tick * self.period

    def begin(self) -> None:
        """Start the schedule now (tick 0 is due immediately)."""
        self.start = self._now()
        self.next_tick = 0

    def wait(self, poll: Callable[[float], None] | None = None) -> int:
        """Block until the next tick is due and return its index; `poll(seconds)` (e.g. a control socket's
        poll) is called instead of sleeping so the wait stays responsive."""
        if self.start is None:
            self.begin()
        now = self._now()
        tick = self.next_tick
        # ticks whose period is entirely over are missed: serve the current one instead
        current = int((now - self.start) // self.period)  # type: ignore[operator]
        if current > tick:
            self.missed += current - tick
            tick = current
        while (remaining := self.due(tick) - self._now()) > 0:
            (poll or self._sleep)(min(remaining, 0.05))
        self.late_s = self._now() - self.due(tick)
        self.next_tick = tick + 1
        return tick

    def rate(self, ticks_served: int) -> float:
        """Ticks served per second since the start."""
        if self.start is None:
            return 0.0
        elapsed = self._now() - self.start
        return ticks_served / elapsed if elapsed > 0 else 0.0


class PauseAccount:
    """Whether the run is paused, and the time spent paused since `restart()` (the rate and a paced replay's
    schedule are over the time not paused)."""

    def __init__(self, *, paused: bool = False, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self.paused = paused
        self.restart()

    def restart(self) -> None:
        """The time origin: now (paused time is counted from here)."""
        self.origin = self._now()
        self._paused_s, self._since = 0.0, self.origin

    def set(self, paused: bool) -> bool:
        """Pause or resume; True if that changed anything."""
        if paused == self.paused:
            return False
        now = self._now()
        if paused:
            self._since = now
        else:
            self._paused_s += now - self._since
        self.paused = paused
        return True

    def paused_s(self, now: float | None = None) -> float:
        """Seconds spent paused since the origin (the current pause included)."""
        now = self._now() if now is None else now
        return self._paused_s + (now - self._since if self.paused else 0.0)

    def elapsed_s(self, now: float | None = None) -> float:
        """Seconds since the origin."""
        return (self._now() if now is None else now) - self.origin
