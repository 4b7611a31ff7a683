"""A `vist-rt run` in a thread of the test process, and the sockets a rig would use against it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

from tests.runtime.helpers import free_port, wait_for
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.pipeline import Runtime


def run_config(checkpoint: Path, **kw: Any) -> RunConfig:
    """Headless settings on random loopback ports."""
    base = {"checkpoint": str(checkpoint), "dashboard": False, "pub": f"tcp://127.0.0.1:{free_port()}",
            "control": f"tcp://127.0.0.1:{free_port()}", "status_every_s": 100.0}  # fmt: skip
    return RunConfig(**{**base, **kw})


class RunThread:
    """`Runtime.run()` in a daemon thread; `summary` (or `error`) once it returned."""

    def __init__(self, cfg: RunConfig) -> None:
        self.runtime = Runtime.from_config(cfg, log=lambda _: None)
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.runtime.run()
        except BaseException as exc:
            self.error = exc

    def ticks(self) -> int:
        return self.runtime.stats.ticks

    def join(self, timeout: float = 30.0) -> dict[str, Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


@contextmanager
def running(cfg: RunConfig, *, until_ticks: int = 1) -> Iterator[RunThread]:
    """A run started and, unless lock-step, ticking (`until_ticks` ticks); stopped and joined at the end."""
    run = RunThread(cfg)
    run.thread.start()
    try:
        if not cfg.lockstep:
            assert wait_for(lambda: run.ticks() >= until_ticks or not run.thread.is_alive(), timeout=30.0)
        else:
            assert wait_for(lambda: run.runtime.control is not None, timeout=30.0)
        yield run
    finally:
        run.runtime.stop()
        run.thread.join(30.0)


def request(ctx: zmq.Context, endpoint: str, parts: list[bytes], timeout_ms: int = 5000) -> list[bytes] | None:
    """One REQ exchange on a fresh socket; the reply's parts, or None when none came in time."""
    with ctx.socket(zmq.REQ) as req:
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoint)
        req.send_multipart(parts)
        return req.recv_multipart() if req.poll(timeout_ms) else None


def status(ctx: zmq.Context, endpoint: str) -> dict[str, Any]:
    reply = request(ctx, endpoint, [b'{"cmd": "status"}'])
    assert reply is not None, "no status reply"
    return json.loads(reply[0])
