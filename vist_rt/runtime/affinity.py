"""`--tick-cpu` / `--io-cpu`: pin the tick thread and ZeroMQ's I/O thread to CPUs (Linux).

The tick thread waits for the model clock, steps the temporal model and publishes. Pinned, it has
one CPU to itself: every other thread of the process is moved off that CPU for the run (and put back
after), and the threads the run starts are born elsewhere. ZeroMQ's I/O thread, which puts each
message on the wire, can be given a CPU too. Other processes are not moved: on a machine kept for
experiments, pair this with the kernel's `isolcpus=`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import zmq

from vist_rt.errors import VistError

log = logging.getLogger(__name__)


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


def thread_ids() -> list[int]:
    """The native ids of this process's threads (Linux)."""
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _started(tid: int) -> int | None:
    """When thread `tid` started (clock ticks since boot; tells a reused id from the thread that had it)."""
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name (field 2) may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def zmq_io_threads(cpu: int | None = None) -> frozenset[int]:
    """This process's ZeroMQ I/O threads; with `cpu`, only those that run on it alone (an `io_context(cpu)`'s)."""
    found = set()
    for tid in thread_ids():
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            if name.startswith("ZMQbg/IO") and (cpu is None or os.sched_getaffinity(tid) == {cpu}):
                found.add(tid)
        except OSError:  # ended meanwhile
            continue
    return frozenset(found)


class PinnedThread:
    """While entered, the calling thread runs on `cpu` only and the process's other threads keep off it.

    Every other thread runs where it could before, minus `cpu` (on the tick thread's other CPUs if that
    leaves none, e.g. a pool worker pinned there), except the threads in `stay` (pinned there on purpose,
    e.g. ZeroMQ's I/O thread with the same --io-cpu). Threads the pinned thread starts meanwhile must be
    started inside `away()`, so that they are born off `cpu`. On exit every moved thread is put back, and
    threads born off `cpu` during the run get the CPUs the process had."""

    def __init__(self, cpu: int, *, stay: frozenset[int] = frozenset()) -> None:
        self.cpu = cpu
        self.stay = stay
        self.others: frozenset[int] = frozenset()  # where the other threads run (cpu itself on a 1-CPU machine)
        self._before: frozenset[int] | None = None
        self._moved: dict[int, tuple[frozenset[int], int | None]] = {}  # tid -> (its CPUs, when it started)
        self._seen: set[int] = set()

    def __enter__(self) -> PinnedThread:
        check_cpus(tick_cpu=self.cpu)
        before = frozenset(os.sched_getaffinity(0))
        try:
            os.sched_setaffinity(0, {self.cpu})
        except OSError as exc:
            raise VistError(f"--tick-cpu {self.cpu}: cannot pin the tick thread: {exc.strerror}") from None
        self._before, self.others = before, (before - {self.cpu}) or frozenset({self.cpu})
        try:
            self._move_others()
        except BaseException:  # interrupted half-way: nothing may stay pinned or moved
            self.__exit__(None, None, None)
            raise
        return self

    def _move_others(self) -> None:
        """Move every thread but this one (and `stay`) off `cpu`; again until a pass finds no new thread (a
        thread started meanwhile by one not yet moved inherits `cpu`)."""
        self._seen = {threading.get_native_id(), *self.stay}
        for _ in range(5):
            new = [tid for tid in thread_ids() if tid not in self._seen]
            if not new:
                return
            for tid in new:
                self._seen.add(tid)
                try:
                    cpus = frozenset(os.sched_getaffinity(tid))
                    if self.cpu in cpus:
                        os.sched_setaffinity(tid, (cpus - {self.cpu}) or self.others)
                        self._moved[tid] = (cpus, _started(tid))
                except OSError:  # it ended meanwhile (ESRCH), or may not be moved: left as it is
                    continue

    @contextlib.contextmanager
    def away(self) -> Iterator[None]:
        """Meanwhile the pinned thread runs on the other CPUs: threads it starts (a source's, a library's) are
        born there."""
        if self._before is None:
            yield
            return
        os.sched_setaffinity(0, self.others)
        try:
            yield
        finally:
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._before is None:
            return
        before, self._before = self._before, None
        moved, self._moved = self._moved, {}
        try:  # the tick thread first, then the threads moved, then those born during the run
            os.sched_setaffinity(0, before)
        except OSError as exc:  # the CPUs allowed changed during the run (a cpuset): keep what is allowed now
            log.warning("could not give the tick thread its CPUs %s back: %s", format_cpus(before), exc.strerror)
        for tid, (cpus, started) in moved.items():
            if _started(tid) == started:  # the same thread (not a new one that got its id)
                with contextlib.suppress(OSError):  # ended just now: nothing to put back
                    os.sched_setaffinity(tid, cpus)
        for tid in thread_ids():  # born during the run, off the tick's CPU: the CPUs the process had
            if tid not in self._seen and tid not in moved:
                with contextlib.suppress(OSError):
                    if os.sched_getaffinity(tid) == self.others:
                        os.sched_setaffinity(tid, before)


def pin_tick(cpu: int, io_cpu: int | None = None) -> PinnedThread:
    """The tick thread's pinning for --tick-cpu `cpu`; with --io-cpu on the same CPU, ZeroMQ's I/O thread
    pinned there stays."""
    return PinnedThread(cpu, stay=zmq_io_threads(cpu) if io_cpu == cpu else frozenset())


@contextlib.contextmanager
def io_context(cpu: int) -> Iterator[zmq.Context]:
    """A ZeroMQ context whose I/O thread runs on `cpu` only; destroyed (sockets closed, LINGER 0) on exit."""
    check_cpus(io_cpu=cpu)
    ctx = zmq.Context()
    try:
        try:
            ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, cpu)  # before the first socket, which starts the I/O thread
        except zmq.ZMQError as exc:
            raise VistError(f"--io-cpu: this libzmq cannot pin its I/O thread ({exc.strerror})") from None
        yield ctx
    finally:
        ctx.destroy(linger=0)
