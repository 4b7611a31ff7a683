"""`vist-rt run` in a pseudo-terminal (pexpect), its screen read back through a terminal emulator (pyte)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.helpers import free_port

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

COLS, ROWS = 120, 44


class Screen:
    """A pexpect child and the screen it draws."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.eof = False

    def pump(self) -> None:
        try:
            while True:
                data = self.child.read_nonblocking(65536, timeout=0.05)
                self.raw += data
                self.stream.feed(data)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            self.eof = True

    def until_exit(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not self.eof and time.monotonic() < end:
            self.pump()
        assert self.eof, f"still running after {timeout} s"
        self.child.wait()

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, ok: Callable[[str], bool], timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump()
            if ok(self.text()):
                return self.text()
            if not self.child.isalive():
                break
        raise AssertionError(f"screen never matched; last screen:\n{self.text()}\nraw tail: {self.raw[-800:]!r}")


@pytest.mark.slow
def test_dashboard_in_a_terminal_keys_and_clean_exit(run_checkpoint: Path, tmp_path: Path) -> None:
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    args = ["-m", "vist_rt", "run", "--checkpoint", str(run_checkpoint), "--source", "synthetic", "--pub", pub,
            "--control", ctl]  # fmt: skip
    child = pexpect.spawn(sys.executable, args, dimensions=(ROWS, COLS), cwd=str(tmp_path), timeout=60, env=_env())
    child.send("q")  # a key pressed during start-up: discarded, not a quit before the run starts
    screen = Screen(child)
    try:
        text = screen.wait_for(lambda t: ("cells at their RF centres" in t and "tick" not in t) or "ticks 1" in t)
        text = screen.wait_for(lambda t: _ticks(t) >= 15)
        for want in ("timing", "tiny.safetensors: 5 cells at 30 Hz", "NOT DINOv2", pub, ctl, "e2e", "population",
                     "q quit, r reset, p pause/resume"):  # fmt: skip
            assert want in text, want
        child.send("p")
        screen.wait_for(lambda t: "PAUSED" in t)
        paused_at = _ticks(screen.text())
        time.sleep(0.5)
        screen.pump()
        assert _ticks(screen.text()) == paused_at  # no ticks while paused
        child.send("p")
        screen.wait_for(lambda t: "PAUSED" not in t and _ticks(t) > paused_at)
        child.send("r")
        screen.wait_for(lambda t: "reset: done" in t)
        child.send("q")
        screen.until_exit(30)
    finally:
        screen.pump()
        child.close(force=True)
    assert child.exitstatus == 0, screen.raw[-2000:]
    assert b"Traceback" not in screen.raw
    assert screen.raw.rfind(b"\x1b[?1049l") > screen.raw.rfind(b"\x1b[?1049h") >= 0  # left the alternate screen
    plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen.raw)
    assert b"vist-rt run (live)" in plain  # the final summary table, printed after the dashboard closed


def _env() -> dict[str, str]:
    """The environment without COLUMNS/LINES (pytest's own width must not override the terminal's size)."""
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}


def _ticks(text: str) -> int:
    for line in text.splitlines():
        if "clock " in line and "ticks " in line:
            try:
                return int(line.split("ticks ", 1)[1].split()[0])
            except (IndexError, ValueError):
                return -1
    return -1


@pytest.mark.slow
def test_a_tiny_terminal_is_a_message_not_a_traceback(run_checkpoint: Path, tmp_path: Path) -> None:
    args = ["-m", "vist_rt", "run", "--checkpoint", str(run_checkpoint), "--source", "synthetic", "--max-frames",
            "60", "--pub", f"tcp://127.0.0.1:{free_port()}", "--control", f"tcp://127.0.0.1:{free_port()}"]  # fmt: skip
    child = pexpect.spawn(sys.executable, args, dimensions=(8, 40), cwd=str(tmp_path), timeout=60, env=_env())
    screen = Screen(child)
    screen.screen.resize(8, 40)
    try:
        screen.wait_for(lambda t: "terminal too small" in t)
        screen.until_exit(60)
    finally:
        screen.pump()
        child.close(force=True)
    assert child.exitstatus == 0 and b"Traceback" not in screen.raw
