"""The CPU's matrix extensions, read from its flags: which low precisions it runs natively (no guessing)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

# flags worth showing, strongest first
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
# a precision is native where the CPU has one of these
NATIVE = {"bf16": ("amx_bf16", "avx512_bf16"), "int8": ("amx_int8", "avx512_vnni", "avx_vnni")}
CPUINFO = Path("/proc/cpuinfo")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """A CPU's model name and flags; `known` is False where the flags could not be read."""

    model: str
    flags: frozenset[str]
    known: bool = True

    @property
    def extensions(self) -> tuple[str, ...]:
        """The matrix-relevant flags this CPU has, strongest first."""
        return tuple(f for f in MATRIX_FLAGS if f in self.flags)

    def native(self, precision: str) -> bool:
        """Whether this CPU runs `precision` in hardware (fp32 always)."""
        return precision == "fp32" or any(f in self.flags for f in NATIVE.get(precision, ()))

    def missing(self, precision: str) -> str:
        """Why `precision` is not native here, in words."""
        has = ", ".join(self.extensions) or "none of them"
        if not self.known:
            return f"{precision} needs one of {', '.join(NATIVE[precision])}; this CPU's flags could not be read"
        return f"{precision} needs one of {', '.join(NATIVE[precision])}; this CPU ({self.model}) has {has}"


def parse_cpuinfo(text: str) -> CpuInfo:
    """A CpuInfo from the text of /proc/cpuinfo (the first processor's model name and flags)."""
    model, flags = "unknown CPU", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return CpuInfo(model, flags or frozenset(), known=flags is not None)


@functools.cache
def this_cpu() -> CpuInfo:
    """This machine's CPU (read once); flags unknown where /proc/cpuinfo is absent (then only fp32 is native)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuInfo("unknown CPU", frozenset(), known=False)
