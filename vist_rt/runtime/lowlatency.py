"""`--low-latency`: keep the CPUs out of deep idle states for a run (a Linux PM QoS request); `--rt-priority`:
the clock's thread under the real-time scheduler.

An idle CPU in a deep C-state (or a virtual CPU halted by its hypervisor) takes tens to hundreds of
microseconds to wake, and a tick wakes several threads (the tick thread, ZeroMQ's I/O threads, the
subscriber). While a PM QoS request of 0 us is held, idle CPUs poll instead: wake-ups cost
microseconds, and the CPUs draw full power while idle. The request is the kernel's own mechanism
(`tuned`'s latency profiles use the same one); it lasts while the file stays open and ends when it
is closed or the process exits, so nothing is left changed after the run.

On a busy machine (few CPUs; capture, feature and ZeroMQ threads, a subscriber) the scheduler also
takes the CPU from the clock's thread for a time slice (milliseconds) in the middle of a tick, most
often when a send wakes another thread. A thread under SCHED_FIFO is not preempted by ordinary
threads: `ClockPriority` puts the calling thread there while entered (only that thread: threads it
starts meanwhile are born ordinary).

Always, for the run: `frozen_heap()` takes everything alive at the start (modules, torch, the model) out of
the cyclic garbage collector's reach. Otherwise a full collection, which Python starts by itself when
allocations pile up (a burst of control requests does it), walks that whole heap on whichever thread
allocated last, the clock's included: measured ~90 ms with ~210k objects, three 30 Hz ticks.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from vist_rt.errors import VistError

PM_QOS_DEVICE = "/dev/cpu_dma_latency"
NO_REQUEST_US = 2_000_000_000  # what the device reads while nobody holds a request (PM_QOS_DEFAULT_VALUE)


class _Held:
    """A setting held while entered; `close()` gives it back."""

    def close(self) -> None:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class CpuLatencyRequest(_Held):
    """While entered: every CPU keeps its wake-up latency <= `max_us` microseconds (0: idle by polling).

    Raises a one-line VistError on entry where the request cannot be made (not Linux, no permission)."""

    def __init__(self, max_us: int = 0, *, path: str | None = None) -> None:
        if not 0 <= max_us < NO_REQUEST_US:
            raise VistError(f"a CPU wake-up latency request must be 0..{NO_REQUEST_US - 1} us, got {max_us}")
        self.max_us = max_us
        self.path = path or PM_QOS_DEVICE
        self._fd: int | None = None

    @property
    def active(self) -> bool:
        """True while the request is held."""
        return self._fd is not None

    def __enter__(self) -> CpuLatencyRequest:
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except FileNotFoundError:
            raise VistError(
                f"--low-latency: {self.path} does not exist (a Linux PM QoS device); run without --low-latency"
            ) from None
        except PermissionError:
            raise VistError(
                f"--low-latency needs write access to {self.path}: run as root, or let your user open it "
                f'(a udev rule: KERNEL=="cpu_dma_latency", GROUP="<your group>", MODE="0660")'
            ) from None
        except OSError as exc:
            raise VistError(f"--low-latency: cannot open {self.path}: {exc.strerror}") from None
        try:
            os.write(fd, struct.pack("=i", self.max_us))
        except OSError as exc:
            os.close(fd)
            raise VistError(f"--low-latency: {self.path} refused the request: {exc.strerror}") from None
        self._fd = fd
        return self

    def close(self) -> None:
        """End the request (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


RT_PRIORITIES = (1, 99)  # SCHED_FIFO's priority range on Linux


class ClockPriority(_Held):
    """While entered: the calling thread runs under SCHED_FIFO at `priority` (1-99); threads it starts are born
    ordinary (SCHED_RESET_ON_FORK). Its earlier policy is restored on exit.

    Raises a one-line VistError on entry where it cannot be had (not Linux, no permission)."""

    def __init__(self, priority: int) -> None:
        low, high = RT_PRIORITIES
        if not low <= priority <= high:
            raise VistError(f"a real-time priority must be {low}..{high}, got {priority}")
        self.priority = priority
        self._before: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        """True while the thread runs at the priority."""
        return self._before is not None

    def __enter__(self) -> ClockPriority:
        if not hasattr(os, "SCHED_FIFO") or not hasattr(os, "sched_setscheduler"):
            raise VistError("--rt-priority needs Linux (SCHED_FIFO); run without --rt-priority")
        before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(self.priority))
        except PermissionError:
            raise VistError(
                "--rt-priority needs CAP_SYS_NICE or a real-time priority limit: run as root, or allow your user "
                f'(/etc/security/limits.conf: "<user> - rtprio {self.priority}")'
            ) from None
        except OSError as exc:
            raise VistError(f"--rt-priority: SCHED_FIFO {self.priority} refused: {exc.strerror}") from None
        self._before = before
        return self

    def close(self) -> None:
        """Back to the thread's earlier policy (idempotent)."""
        if self._before is not None:
            (policy, priority), self._before = self._before, None
            os.sched_setscheduler(0, policy, os.sched_param(priority))


def current_limit_us(path: str | None = None) -> int | None:
    """The CPU wake-up latency limit now in force, in us (NO_REQUEST_US: none), or None where it cannot be read."""
    try:
        fd = os.open(path or PM_QOS_DEVICE, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4)
    except OSError:
        return None
    finally:
        os.close(fd)
    return struct.unpack("=i", data)[0] if len(data) == 4 else None


@contextmanager
def frozen_heap() -> Iterator[int]:
    """While entered, the objects alive on entry (after one collection) are out of the cyclic collector's
    reach: its passes walk only what was allocated since. Yields how many were frozen; unfrozen on exit.
    Process-wide: a run nested in another's block unfreezes at its end (collections get slower, no more)."""
    gc.collect()
    gc.freeze()
    try:
        yield gc.get_freeze_count()
    finally:
        gc.unfreeze()
