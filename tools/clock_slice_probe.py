"""Experiment (tried, not kept; docs/benchmarks.md "Several streams"): `vist-rt ...` with the live clock thread
given a short EEVDF slice (Linux >= 6.12: sched_setattr with SCHED_OTHER and sched_runtime = the slice; no
privilege needed).

    SLICE_US=100 python tools/clock_slice_probe.py bench pipeline --streams 1,2,4 --json out.json
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys

SYS_SCHED_SETATTR, SYS_SCHED_GETATTR = 314, 315  # x86-64
SCHED_FLAG_RESET_ON_FORK = 0x01
ATTR = "IIQiIQQQII"  # struct sched_attr (56 bytes): size, policy, flags, nice, priority, runtime, deadline, ...


def set_slice(us: int) -> int:
    """The calling thread's slice to `us` microseconds; returns the slice read back, ns."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack(ATTR, 56, 0, SCHED_FLAG_RESET_ON_FORK, 0, 0, us * 1000, 0, 0, 0, 0))
    if libc.syscall(SYS_SCHED_SETATTR, 0, attr, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    out = ctypes.create_string_buffer(56)
    if libc.syscall(SYS_SCHED_GETATTR, 0, out, 56, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(struct.unpack(ATTR, out.raw)[5])


def main() -> int:
    from vist_rt.cli import main as vist_main
    from vist_rt.runtime import drivers

    live = drivers.live

    def with_slice(rt: object) -> None:
        print(f"clock thread slice: {set_slice(int(os.environ.get('SLICE_US', '100')))} ns", file=sys.stderr)
        live(rt)  # type: ignore[arg-type]

    drivers.live = with_slice
    sys.argv = ["vist-rt", *sys.argv[1:]]
    return int(vist_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
