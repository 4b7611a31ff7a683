"""`--tick-cpu` / `--io-cpu`: pin the tick thread and ZeroMQ's I/O thread to CPUs (Linux).

The tick thread waits for the model clock, steps the temporal model and publishes. Pinned, it keeps
one core to itself: the threads the run starts (capture, features) are kept off that CPU wherever
another one is available. ZeroMQ's I/O thread, which puts each message on the wire, can be given a
CPU too. On a machine dedicated to experiments, pair this with the kernel's `isolcpus=` so that no
other process is scheduled there either. The threads' previous affinity is restored after the run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import zmq

from vist_rt.errors import VistError


def supported() -> bool:
    """True where threads can be pinned (Linux)."""
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def available_cpus() -> frozenset[int]:
    """The CPUs the calling thread may run on; VistError where pinning is not supported."""
    if not supported():
        raise VistError("pinning threads to CPUs (--tick-cpu, --io-cpu) needs Linux")
    return frozenset(os.sched_getaffinity(0))


def isolated_cpus(path: str = "/sys/devices/system/cpu/isolated") -> frozenset[int]:
    """The CPUs the kernel keeps out of normal scheduling (`isolcpus=`); empty where none or unknown."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return frozenset()
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        try:
            cpus.update(range(int(low), int(high or low) + 1))
        except ValueError:
            return frozenset()
    return frozenset(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> '0-2,5'."""
    ordered = sorted(cpus)
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def check_cpus(**cpus: int | None) -> None:
    """VistError (one line) unless each CPU given (flag name -> CPU number or None) is one this process may use."""
    given = {name: cpu for name, cpu in cpus.items() if cpu is not None}
    if not given:
        return
    allowed = available_cpus()
    for name, cpu in given.items():
        if cpu not in allowed:
            flag = name.replace("_", "-")
            raise VistError(f"--{flag} {cpu}: this process may run on CPUs {format_cpus(allowed)} only")


class PinnedThread:
    """While entered, the calling thread runs on `cpu` only; its previous CPUs come back on exit.

    `keep_off(thread)` moves a thread started meanwhile (which inherits the pinned affinity) to the other
    CPUs the thread had before (to the same CPU when there is no other)."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.others: frozenset[int] = frozenset()
        self._before: frozenset[int] | None = None

    @property
    def active(self) -> bool:
        return self._before is not None

    def __enter__(self) -> PinnedThread:
        check_cpus(tick_cpu=self.cpu)
        before = frozenset(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {self.cpu})
        self._before = before
        self.others = (before - {self.cpu}) or frozenset({self.cpu})
        return self

    def keep_off(self, thread: threading.Thread) -> None:
        """Let `thread` (started while pinned) run on the other CPUs."""
        if self._before is None or thread.native_id is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it has already ended: nothing left to move
            os.sched_setaffinity(thread.native_id, self.others)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._before is not None:
            before, self._before = self._before, None
            os.sched_setaffinity(0, before)


@contextlib.contextmanager
def io_context(cpu: int) -> Iterator[zmq.Context]:
    """A ZeroMQ context whose I/O thread runs on `cpu` only; destroyed (sockets closed, LINGER 0) on exit."""
    check_cpus(io_cpu=cpu)
    ctx = zmq.Context()
    try:
        ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, cpu)  # before the first socket, which starts the I/O thread
        yield ctx
    finally:
        ctx.destroy(linger=0)
