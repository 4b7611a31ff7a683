"""Low-precision CPU paths: what `auto` picks per CPU, the accuracy bounds against fp32, the int8 graph cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.features.replicas import hf_model, write_hf_folder
from vist_rt.bench.features import rate_agreement
from vist_rt.cpu import CpuInfo, this_cpu
from vist_rt.errors import VistError
from vist_rt.features import backends
from vist_rt.features.accuracy import BOUNDS, agreement, token_cosines
from vist_rt.features.backends import resolve
from vist_rt.features.extractor import DINOv2Extractor
from vist_rt.movie import SyntheticMovie

SPR = CpuInfo("Xeon 8480", frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"}))
BF16_ONLY = CpuInfo("imaginary", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AVX2 = CpuInfo("EPYC 7B13", frozenset({"avx2"}))
IMAGE = 140  # 10x10 tokens (the smallest grid Vi-ST takes): the bounds concern arithmetic, not the grid
FRAMES = 320  # > 300, the downstream bound's length


def test_auto_takes_the_fastest_native_path_and_says_why() -> None:
    assert resolve("auto", "cpu", "auto", SPR) == ("onnxruntime", "int8", "auto: int8 (amx_int8, avx512_vnni)")
    assert resolve("torch", "cpu", "auto", SPR) == ("torch", "bf16", "auto: bf16 (amx_bf16, avx512_bf16)")
    assert resolve("auto", "cpu", "auto", BF16_ONLY)[:2] == ("torch", "bf16")
    assert resolve("auto", "cpu", "auto", AVX2)[:2] == ("onnxruntime", "fp32")
    assert "no faster native path" in resolve("torch", "cpu", "auto", AVX2).why
    assert resolve("auto", "cpu", "fp32", SPR) == ("onnxruntime", "fp32", "")  # explicit fp32 stays exact


def test_auto_without_onnxruntime_and_explicit_paths_that_cannot_run(monkeypatch) -> None:
    real = backends.available()
    monkeypatch.setattr(backends, "available", lambda: {**real, "onnxruntime": "not installed"})
    assert resolve("auto", "cpu", "auto", SPR)[:2] == ("torch", "bf16")
    with pytest.raises(VistError, match="not available: not installed"):
        resolve("onnxruntime", "cpu", "auto", SPR)
    monkeypatch.undo()
    with pytest.raises(VistError, match="--precision bf16 does not run natively on this CPU: bf16 needs one of "
                                        "amx_bf16, avx512_bf16; this CPU \\(EPYC 7B13\\) has avx2"):  # fmt: skip
        resolve("torch", "cpu", "bf16", AVX2)
    with pytest.raises(VistError, match="int8 needs one of amx_int8, avx512_vnni, avx_vnni"):
        resolve("auto", "cpu", "int8", AVX2)
    with pytest.raises(VistError, match="the torch backend runs fp32, bf16 on cpu, not int8"):
        resolve("torch", "cpu", "int8", SPR)
    with pytest.raises(VistError, match="precision must be one of"):
        resolve("auto", "cpu", "fp8", SPR)


def _native_low_paths() -> list:
    params = []
    for backend, precision in (("onnxruntime", "int8"), ("torch", "bf16")):
        cpu = this_cpu()
        skip = pytest.mark.skip(reason=cpu.missing(precision)) if not cpu.native(precision) else ()
        params.append(pytest.param(backend, precision, marks=skip, id=f"{backend}-{precision}"))
    return params


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub-style ViT-S/14 folder with trained-like (non-trivial) layer scales: low precision is tested where it
    matters, not on the near-identity blocks of a default random init."""
    return write_hf_folder(hf_model(image_size=IMAGE, seed=3), tmp_path_factory.mktemp("vit") / "dinov2-small")


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    """The documented test set: frames 0..FRAMES-1 of the synthetic movie (seed 7), colour, 160x160."""
    m = SyntheticMovie(seed=7, size=(160, 160), color=True)
    return np.stack([m.frame(i) for i in range(FRAMES)])


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "precision"), _native_low_paths())
def test_low_precision_paths_meet_the_bounds(replica, movie, tmp_path, backend, precision) -> None:
    """Every token's cosine to fp32 >= 0.99 (mean >= 0.999), and the Vi-ST rates from these features correlate
    >= 0.999 per cell with the rates from fp32 features over 320 frames."""
    ref_ext = DINOv2Extractor("vits14", replica, image_size=IMAGE)
    low = DINOv2Extractor("vits14", replica, image_size=IMAGE, backend=backend, precision=precision,
                          cache_dir=tmp_path, log=lambda _m: None)  # fmt: skip
    assert low.runtime == {"backend": backend, "device": "cpu", "precision": precision}
    ref = np.concatenate([ref_ext(movie[i : i + 32]) for i in range(0, FRAMES, 32)])
    out = np.concatenate([low(movie[i : i + 32]) for i in range(0, FRAMES, 32)])
    tokens = agreement(out, ref)
    assert tokens["within"], tokens
    assert token_cosines(out, ref).min() < 1.0  # the path really is another arithmetic than fp32
    rates = rate_agreement(out, ref)  # a published-size Vi-ST: per cell, over time
    assert rates["frames"] == FRAMES and rates["cells"] == 90 and rates["within"] is True, rates


def test_the_bounds_catch_a_path_that_is_off() -> None:
    """A feature error that is small per value but systematic fails the token bound."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 16, 64)).astype(np.float32)
    assert agreement(ref, ref)["within"] and agreement(ref, ref)["min_cos"] == pytest.approx(1.0)
    off = ref.copy()
    off[0, 0] = rng.standard_normal(64)  # one token wrong
    assert not agreement(off, ref)["within"]
    blurred = ref + 0.06 * rng.standard_normal(ref.shape).astype(np.float32)  # every token a little off
    got = agreement(blurred, ref)
    assert got["min_cos"] >= 0.99 and got["mean_cos"] < BOUNDS.mean_cos and not got["within"]


@pytest.mark.skipif(not this_cpu().native("int8"), reason=this_cpu().missing("int8"))
def test_int8_graph_is_cached_and_rebuilt_when_stale_or_truncated(tmp_path: Path, monkeypatch) -> None:
    lines: list[str] = []
    kw = dict(seed=0, block=1, image_size=28, backend="onnxruntime", precision="int8", cache_dir=tmp_path,
              log=lines.append)  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    first = DINOv2Extractor("vits14", **kw)(frames)
    assert [ln.split()[0] for ln in lines] == ["exporting", "quantizing"]
    path = next((tmp_path / "onnx").glob("*-int8.onnx"))
    lines.clear()
    np.testing.assert_array_equal(DINOv2Extractor("vits14", **kw)(frames), first)
    assert lines[-1] == f"reusing int8 graph {path}"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    lines.clear()
    np.testing.assert_array_equal(DINOv2Extractor("vits14", **kw)(frames), first)
    assert len(lines) == 2 and lines[1].startswith("re-quantizing int8 graph:") and "not a readable ONNX" in lines[1]
    lines.clear()
    from vist_rt.features import onnx as features_onnx

    monkeypatch.setattr(features_onnx, "INT8_VERSION", features_onnx.INT8_VERSION + 1)
    DINOv2Extractor("vits14", **kw)
    assert lines[1] == f"re-quantizing int8 graph {path}: version changed"
