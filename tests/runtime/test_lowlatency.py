"""`--low-latency`: a PM QoS request held for exactly the run's lifetime; clear errors where it cannot be made.
The heap frozen for every run."""

from __future__ import annotations

import gc
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import free_port
from vist_rt.cli import main
from vist_rt.errors import VistError
from vist_rt.runtime import lowlatency
from vist_rt.runtime.config import RunConfig
from vist_rt.runtime.lowlatency import (
    NO_REQUEST_US,
    PM_QOS_DEVICE,
    ClockPriority,
    CpuLatencyRequest,
    current_limit_us,
    frozen_heap,
)
from vist_rt.runtime.pipeline import Runtime


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_request_is_written_and_held_until_closed(tmp_path: Path) -> None:
    dev = tmp_path / "cpu_dma_latency"
    dev.write_bytes(b"")
    with CpuLatencyRequest(0, path=str(dev)) as req:
        assert req.active and dev.read_bytes() == struct.pack("=i", 0)
        fd = req._fd
        assert fd is not None and _is_open(fd)  # the kernel keeps the request while the file is open
    assert not req.active and not _is_open(fd)
    req.close()  # idempotent
    with CpuLatencyRequest(50, path=str(dev)):
        assert struct.unpack("=i", dev.read_bytes()[:4]) == (50,)


def test_where_it_cannot_be_made_the_error_is_one_line(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(VistError, match=r"does not exist \(a Linux PM QoS device\)"):
        CpuLatencyRequest(path=str(tmp_path / "absent")).__enter__()

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lowlatency.os, "open", refuse)
    with pytest.raises(VistError, match=r"needs write access to .*run as root.*udev rule") as exc:
        CpuLatencyRequest().__enter__()
    assert "\n" not in str(exc.value)
    with pytest.raises(VistError, match=r"must be 0\.\.1999999999 us"):
        CpuLatencyRequest(-1)


@pytest.mark.skipif(not os.access(PM_QOS_DEVICE, os.W_OK), reason=f"no write access to {PM_QOS_DEVICE}")
def test_on_this_machine_the_kernel_enforces_it() -> None:
    before = current_limit_us()  # NO_REQUEST_US unless another program holds a request too
    assert before is not None and 0 <= before <= NO_REQUEST_US
    with CpuLatencyRequest(0):
        assert current_limit_us() == 0  # every CPU now idles by polling
    assert current_limit_us() == before  # nothing left changed


def lockstep_status(
    checkpoint: Path, on_tick_thread: Callable[[], object] = lambda: None, **settings: Any
) -> tuple[Runtime, dict[str, Any], list[str]]:
    """A lock-step run with `settings`, asked for its status once, then stopped: (runtime, status, log lines).
    `on_tick_thread` is called in the run's thread as the status is made."""
    from vist_rt.client import LockstepClient

    ports = {"pub": f"tcp://127.0.0.1:{free_port()}", "control": f"tcp://127.0.0.1:{free_port()}"}
    cfg = RunConfig(checkpoint=str(checkpoint), source=None, lockstep=True, dashboard=False, **ports, **settings)
    logs: list[str] = []
    rt = Runtime.from_config(cfg, log=logs.append)
    status = rt.status
    rt.status = lambda: (on_tick_thread(), status())[1]  # type: ignore[method-assign]
    worker = threading.Thread(target=rt.run)
    worker.start()
    try:
        with LockstepClient(cfg.control, timeout_ms=30_000) as client:
            got = client.request("status")
    finally:
        rt.stop()
        worker.join(timeout=30)
    return rt, got, logs


def test_a_run_holds_it_while_running_and_releases_it(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    dev = tmp_path / "cpu_dma_latency"
    dev.write_bytes(b"")
    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(dev))
    rt, status, logs = lockstep_status(run_checkpoint, low_latency=True)
    assert status["low_latency"] is True and dev.read_bytes() == struct.pack("=i", 0)
    assert any("low latency" in line for line in logs)
    assert rt.low_latency is not None and not rt.low_latency.active  # released with the sockets


def test_the_request_is_tried_before_the_model_loads(tmp_path: Path, run_checkpoint: Path, monkeypatch) -> None:
    from vist_rt.runtime import engine

    loaded: list[str] = []
    monkeypatch.setattr(engine.Engine, "from_files", classmethod(lambda cls, *a, **k: loaded.append("model")))
    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(tmp_path / "absent"))
    cfg = RunConfig(checkpoint=str(run_checkpoint), low_latency=True, dashboard=False)
    with pytest.raises(VistError, match=r"--low-latency: .* does not exist"):
        Runtime.from_config(cfg, log=lambda _: None)
    assert loaded == []


def test_run_without_the_device_stops_with_one_line(tmp_path: Path, run_checkpoint: Path, monkeypatch, capsys):
    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(tmp_path / "absent"))
    argv = ["run", "--checkpoint", str(run_checkpoint), "--low-latency", "--no-dashboard", "--max-frames", "2",
            "--pub", f"tcp://127.0.0.1:{free_port()}", "--control", f"tcp://127.0.0.1:{free_port()}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vist-rt: error: --low-latency:") and "does not exist" in err[-1]


# ---- --rt-priority: the tick thread under SCHED_FIFO ----------------------------------------------------------------


def _may_fifo() -> bool:
    try:
        with ClockPriority(1):
            return True
    except VistError:
        return False


needs_fifo = pytest.mark.skipif(not hasattr(os, "SCHED_FIFO") or not _may_fifo(), reason="no SCHED_FIFO here")


def _policy() -> tuple[int, int]:
    """The calling thread's (policy without the reset-on-fork flag, priority)."""
    return os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_getparam(0).sched_priority


@pytest.mark.parametrize("priority", [0, 100, -1])
def test_a_priority_out_of_range_is_one_line(priority: int) -> None:
    with pytest.raises(VistError, match=r"real-time priority must be 1\.\.99"):
        ClockPriority(priority)
    with pytest.raises(VistError, match="rt_priority must be 1 to 99"):
        RunConfig(rt_priority=priority)


@needs_fifo
def test_only_the_calling_thread_runs_real_time_and_only_while_entered() -> None:
    before = _policy()
    born: list[tuple[int, int]] = []
    with ClockPriority(7) as held:
        assert held.active and _policy() == (os.SCHED_FIFO, 7)
        child = threading.Thread(target=lambda: born.append(_policy()))  # started by the real-time thread
        child.start()
        child.join()
    assert born == [before]  # threads it starts are born ordinary
    assert _policy() == before and not held.active


@needs_fifo
def test_a_run_holds_it_on_its_tick_thread(run_checkpoint: Path) -> None:
    seen: list[tuple[int, int]] = []
    rt, got, logs = lockstep_status(run_checkpoint, rt_priority=5, on_tick_thread=lambda: seen.append(_policy()))
    assert got["rt_priority"] == 5 and seen[0] == (os.SCHED_FIFO, 5)
    assert any("real-time priority 5" in line for line in logs)
    assert rt.rt_priority is not None and not rt.rt_priority.active  # given back when the run ends
    assert _policy()[0] != os.SCHED_FIFO


def test_without_permission_it_is_one_line_before_the_model_loads(run_checkpoint: Path, monkeypatch, capsys) -> None:
    from vist_rt.runtime import engine

    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    loaded: list[str] = []
    monkeypatch.setattr(engine.Engine, "from_files", classmethod(lambda cls, *a, **k: loaded.append("model")))
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    before = _policy()
    argv = ["run", "--checkpoint", str(run_checkpoint), "--rt-priority", "10", "--no-dashboard", "--max-frames", "2",
            "--pub", f"tcp://127.0.0.1:{free_port()}", "--control", f"tcp://127.0.0.1:{free_port()}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vist-rt: error: --rt-priority needs CAP_SYS_NICE") and loaded == []
    assert _policy() == before


def test_the_heap_alive_on_entry_is_frozen_until_exit() -> None:
    before = [[]]  # tracked objects alive on entry
    with frozen_heap() as frozen:
        assert frozen > 0 and gc.get_freeze_count() > 0
        made = [[] for _ in range(3)]
        gc.collect()  # a full pass: what was alive on entry is not in its generations, what came since is
        tracked = {id(o) for o in gc.get_objects()}
        assert id(before) not in tracked and id(before[0]) not in tracked and id(made) in tracked
    assert gc.get_freeze_count() == 0 and id(before) in {id(o) for o in gc.get_objects()}


def test_a_run_freezes_the_heap_only_while_it_runs(run_checkpoint: Path) -> None:
    seen: list[int] = []
    rt, _, _ = lockstep_status(run_checkpoint, on_tick_thread=lambda: seen.append(gc.get_freeze_count()))
    assert seen[0] > 1000 and rt.frozen_objects > 1000  # the modules and the model: out of the collector's reach
    assert gc.get_freeze_count() == 0
