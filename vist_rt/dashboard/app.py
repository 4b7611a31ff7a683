"""The live dashboard around a running `Runtime`: its own refresh thread and key reader, never the tick thread.

with Dashboard(runtime) as dash:   # takes the terminal (alternate screen, keys without Enter)
    runtime.run()                  # blocks; q / Ctrl-C / SIGTERM end it
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from vist_rt.dashboard.view import Snapshot, render

REFRESH_HZ = 4.0
PICKS = 4  # cells with a sparkline


class Dashboard:
    """Draws `runtime` at `refresh_hz` and turns keys into requests: q quits, r resets, p pauses/resumes.

    `clock` (monotonic seconds) is injectable for tests; `keys=False` reads no keys (no TTY on stdin).
    """

    def __init__(
        self,
        runtime: Any,
        *,
        console: Console | None = None,
        refresh_hz: float = REFRESH_HZ,
        clock: Callable[[], float] = time.monotonic,
        keys: bool = True,
        stdin: Any = None,
    ) -> None:
        self.runtime = runtime
        self.console = console or Console()
        self.refresh_s = 1.0 / refresh_hz
        self.clock = clock
        self.stdin = stdin if stdin is not None else sys.stdin
        self.keys = keys and _is_tty(self.stdin)
        self.lines: collections.deque[str] = collections.deque(maxlen=6)
        self.started = clock()
        self._last_missed = 0
        self._last_stale = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._live: Live | None = None
        self._terminal = contextlib.ExitStack()
        self.picks = self._pick_cells()

    def _pick_cells(self) -> tuple[int, ...]:
        """The first PICKS cells spread over the population (the same ones for the whole run)."""
        n = int(self.runtime.meta.get("n", 0))
        if n <= PICKS:
            return tuple(range(n))
        return tuple(int(i) for i in range(0, n, max(1, n // PICKS)))[:PICKS]

    # ---- what is drawn ------------------------------------------------------------------------------------------

    def log(self, line: str) -> None:
        """A log line shown under the panels (the runtime's log while the dashboard owns the screen)."""
        self.lines.append(line)

    def snapshot(self) -> Snapshot:
        """The run as it is now."""
        status = self.runtime.status()
        missed, stale = int(status["missed"]), int(status["stale"])
        recent, self._last_missed = missed - self._last_missed, missed
        stale_recent, self._last_stale = stale - self._last_stale, stale
        stream_history = tuple(s.history.recent() for s in self.runtime.streams)
        return Snapshot(
            status=status,
            meta=self.runtime.meta,
            history=stream_history[0],
            stream_history=stream_history,
            picks=self.picks,
            missed_recent=max(0, recent),
            stale_recent=max(0, stale_recent),
            uptime_s=self.clock() - self.started,
            log=tuple(self.lines),
            keys=self.keys,
        )

    def frame(self) -> RenderableType:
        """One screen for the console's current size."""
        size = self.console.size
        return render(self.snapshot(), size.width, size.height)

    # ---- keys ---------------------------------------------------------------------------------------------------

    def on_key(self, key: str) -> None:
        """q quits, r resets the model state, p pauses or resumes; other keys are ignored."""
        key = key.lower()
        if key == "q":
            self.log("q: stopping")
            self.runtime.stop()
        elif key == "r":
            self.runtime.request("reset")
        elif key == "p":
            self.runtime.request("toggle-pause")  # decided on the tick thread: two quick presses cancel out

    def _read_keys(self) -> None:
        fd = self.stdin.fileno()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
                data = os.read(fd, 32).decode(errors="ignore") if ready else " "
            except (OSError, ValueError):
                self.log("keys: the terminal's input went away; keys are off (Ctrl-C still stops)")
                return
            if not data:
                return
            for key in data:
                self.on_key(key)

    # ---- the loop -----------------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        assert self._live is not None
        failed = ""
        while not self._stop.wait(self.refresh_s):
            try:
                self._live.update(self.frame(), refresh=True)
            except Exception as exc:  # a drawing bug must not freeze the screen silently nor touch the run
                line = f"dashboard: cannot draw ({type(exc).__name__}: {exc})"
                if line != failed:
                    failed = line
                    self.log(line)

    def __enter__(self) -> Dashboard:
        self._log, self._status_lines = self.runtime.log, self.runtime.status_lines
        try:
            if self.keys:
                self._terminal.enter_context(_cbreak(self.stdin))
            self.runtime.log = self.log
            self.runtime.status_lines = False
            self._live = Live(self.frame(), console=self.console, auto_refresh=False, screen=True, transient=True)
            self._terminal.enter_context(self._live)
            self._threads = [threading.Thread(target=self._refresh, name="vist-dashboard", daemon=True)]
            if self.keys:
                self._threads.append(threading.Thread(target=self._read_keys, name="vist-keys", daemon=True))
            for t in self._threads:
                t.start()
        except BaseException:  # Ctrl-C or a failure while starting: the terminal is given back as it was
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()
        for line in self.lines:
            self.console.print(line, style="dim")

    def _close(self) -> None:
        """Stop the threads, leave the alternate screen, restore the terminal mode and the runtime's log."""
        self._stop.set()
        try:
            for t in self._threads:
                t.join(timeout=2.0)
        finally:
            self._terminal.close()
            self.runtime.log, self.runtime.status_lines = self._log, self._status_lines


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _cbreak(stream: Any) -> Iterator[None]:
    """Keys arrive one at a time without Enter and are not echoed; keys typed before this are discarded."""
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        termios.tcflush(fd, termios.TCIFLUSH)  # keys pressed during start-up do not act later
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
