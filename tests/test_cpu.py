"""CPU flags -> the precisions it runs natively."""

from __future__ import annotations

from vist_rt.cpu import parse_cpuinfo

SPR = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480\n"
    "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n"
)
AVX2 = "model name : AMD EPYC 7B13\nflags : fpu sse avx2 fma\n"


def test_flags_decide_native_precisions() -> None:
    spr, old = parse_cpuinfo(SPR), parse_cpuinfo(AVX2)
    assert spr.model == "Intel(R) Xeon(R) Platinum 8480" and spr.known
    assert spr.extensions == ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
    assert all(spr.native(p) for p in ("fp32", "bf16", "int8")) and not spr.native("fp16")
    assert old.native("fp32") and not old.native("bf16") and not old.native("int8")
    assert "needs one of amx_bf16, avx512_bf16; this CPU (AMD EPYC 7B13) has avx2" in old.missing("bf16")
    vnni_only = parse_cpuinfo("flags : avx2 avx_vnni\n")
    assert vnni_only.native("int8") and not vnni_only.native("bf16") and vnni_only.model == "unknown CPU"


def test_unreadable_flags_mean_fp32_only() -> None:
    cpu = parse_cpuinfo("model name : something\n")
    assert not cpu.known and cpu.extensions == () and not cpu.native("int8") and cpu.native("fp32")
    assert "could not be read" in cpu.missing("int8")
