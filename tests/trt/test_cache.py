"""The engine key and cache, on CPU: what invalidates an engine, and that a stale one is never used."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.trt.conftest import IDENTITY
from vist_rt.errors import VistError
from vist_rt.trt.build import get_or_build
from vist_rt.trt.cache import (
    EngineCache,
    EngineKey,
    describe_changes,
    engine_key,
    parse_shape_arg,
    resolve_profile,
)


def key_of(path: Path, **changes) -> EngineKey:
    kwargs = {"precision": "fp16", "input_shapes": None, **IDENTITY, **changes}
    return engine_key(path, **kwargs)


class FakeBuilder:
    """Stands in for build_engine: counts calls and returns recognisable bytes."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, onnx_path, **kw) -> bytes:
        self.calls.append({"onnx_path": onnx_path, **kw})
        return f"engine #{len(self.calls)} {kw['precision']}".encode()


# ------------------------------------------------------------------------------------------------ key


def test_key_is_stable(tiny_onnx: Path, tmp_path: Path) -> None:
    a, b = key_of(tiny_onnx), key_of(tiny_onnx)
    assert a == b and a.digest == b.digest and len(a.digest) == 16
    copy = tmp_path / tiny_onnx.name
    shutil.copy(tiny_onnx, copy)
    assert key_of(copy) == a  # same name and bytes elsewhere: same engine
    assert EngineKey.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.filename == f"features-test-fp16-{a.digest}.engine"
    assert a.spec == {"backbone": "test", "block": 0, "image_size": 8}
    assert a.profile == {"pixels": ((1, 3, 8, 8),) * 3}


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("precision", {"precision": "fp32"}),
        ("trt_version", {"trt_version": "10.7.0"}),
        ("gpu_name", {"gpu_name": "NVIDIA H100 80GB HBM3"}),
        ("compute_capability", {"compute_capability": (9, 0)}),
    ],
)
def test_key_changes_with_build_factors(tiny_onnx: Path, field: str, change: dict) -> None:
    a, b = key_of(tiny_onnx), key_of(tiny_onnx, **change)
    assert a != b and a.digest != b.digest and a.filename != b.filename
    assert [f for f in a.to_dict() if a.to_dict()[f] != b.to_dict()[f]] == [field]


def test_key_changes_with_onnx_bytes_and_spec(tmp_path: Path, export_tiny) -> None:
    base = key_of(export_tiny(tmp_path / "a" / "m.onnx"))
    other_weights = key_of(export_tiny(tmp_path / "b" / "m.onnx", seed=1))
    other_block = key_of(export_tiny(tmp_path / "c" / "m.onnx", block=3))
    assert len({base.digest, other_weights.digest, other_block.digest}) == 3
    assert other_weights.onnx_sha256 != base.onnx_sha256 and other_weights.spec == base.spec
    assert other_block.spec["block"] == 3


def test_key_changes_with_shapes(tiny_dynamic_onnx: Path) -> None:
    default = key_of(tiny_dynamic_onnx)
    assert default.profile == {"pixels": ((1, 3, 8, 8),) * 3}  # a dynamic dim defaults to 1
    assert key_of(tiny_dynamic_onnx, input_shapes={"pixels": (1, 3, 8, 8)}) == default
    batch4 = key_of(tiny_dynamic_onnx, input_shapes={"pixels": (4, 3, 8, 8)})
    assert batch4.profile == {"pixels": ((1, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8))}
    ranged = key_of(tiny_dynamic_onnx, input_shapes={"pixels": ((1, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))})
    assert len({default.digest, batch4.digest, ranged.digest}) == 3


def test_key_refuses_bad_input(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(VistError, match="not found"):
        key_of(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not an onnx file")
    with pytest.raises(VistError, match="not a readable ONNX file"):
        key_of(foreign)
    with pytest.raises(VistError, match="precision"):
        key_of(tiny_onnx, precision="int8")
    with pytest.raises(VistError, match="does not fit"):
        key_of(tiny_onnx, input_shapes={"pixels": (1, 3, 16, 16)})
    with pytest.raises(VistError, match="not an input"):
        key_of(tiny_onnx, input_shapes={"image": (1, 3, 8, 8)})


def test_resolve_profile_and_parse_shape() -> None:
    dims = {"x": ["batch", 3, 0, 224]}
    assert resolve_profile(dims) == {"x": ((1, 3, 1, 224),) * 3}
    assert resolve_profile(dims, {"x": (2, 3, 224, 224)}) == {"x": ((1, 3, 1, 224), (2, 3, 224, 224), (2, 3, 224, 224))}
    with pytest.raises(VistError, match="min <= opt <= max"):
        resolve_profile(dims, {"x": ((2, 3, 8, 224), (1, 3, 8, 224), (4, 3, 8, 224))})
    with pytest.raises(VistError, match="has 3 dims"):
        resolve_profile(dims, {"x": (1, 3, 224)})
    assert parse_shape_arg("pixels=1x3x224x224") == ("pixels", (1, 3, 224, 224))
    assert parse_shape_arg("p=1x3:2x3:4x3") == ("p", ((1, 3), (2, 3), (4, 3)))
    for bad in ("pixels", "pixels=", "=1x3", "p=1x3x", "p=0x3", "p=1x3:2x3", "p=axb"):
        with pytest.raises(VistError):
            parse_shape_arg(bad)


def test_describe_changes_names_fields() -> None:
    old = {"trt_version": "10.3", "gpu_name": "A", "compute_capability": [8, 9], "precision": "fp16"}
    new = {"trt_version": "10.7", "gpu_name": "B", "compute_capability": [9, 0], "precision": "fp16"}
    assert describe_changes(old, new) == "TensorRT version 10.3 -> 10.7, GPU A -> B, compute capability 8.9 -> 9.0"


# ---------------------------------------------------------------------------------------------- cache


def test_miss_builds_once_then_hit_reuses(tiny_onnx: Path, tmp_path: Path) -> None:
    build, logs = FakeBuilder(), []
    kw = {"engines": tmp_path / "engines", "builder": build, "log": logs.append, **IDENTITY}
    first = get_or_build(tiny_onnx, "fp16", **kw)
    assert len(build.calls) == 1 and first.read_bytes() == b"engine #1 fp16"
    assert build.calls[0]["input_shapes"] == {"pixels": ((1, 3, 8, 8),) * 3}
    assert (
        build.calls[0]["timing_cache_path"]
        == tmp_path / "engines" / "timing-trt10.3.0-NVIDIA_GeForce_RTX_4090-sm89.cache"
    )
    assert logs[0].startswith("building ") and logs[-1] == f"built {first}"
    sidecar = json.loads(EngineCache.sidecar_for(first).read_text())
    assert sidecar["key"] == key_of(tiny_onnx).to_dict() and sidecar["size"] == first.stat().st_size
    logs.clear()
    again = get_or_build(tiny_onnx, "fp16", **kw)
    assert again == first and len(build.calls) == 1 and logs == [f"reusing {first}"]
    assert EngineCache(tmp_path / "engines").status(key_of(tiny_onnx)).status == "hit"


def test_stale_engine_is_rebuilt_with_a_reason_and_never_returned(tiny_onnx: Path, tmp_path: Path) -> None:
    build, logs = FakeBuilder(), []
    engines = tmp_path / "engines"
    old = get_or_build(tiny_onnx, "fp16", engines=engines, builder=build, log=logs.append, **IDENTITY)
    logs.clear()
    newer = {**IDENTITY, "trt_version": "10.7.0"}
    cache = EngineCache(engines)
    state = cache.status(key_of(tiny_onnx, trt_version="10.7.0"))
    assert state.status == "stale" and state.stale_path == old
    assert state.reason == "TensorRT version 10.3.0 -> 10.7.0"
    assert cache.lookup(key_of(tiny_onnx, trt_version="10.7.0")) is None  # the old engine is never handed out
    new = get_or_build(tiny_onnx, "fp16", engines=engines, builder=build, log=logs.append, **newer)
    assert new != old and len(build.calls) == 2 and new.read_bytes() == b"engine #2 fp16"
    assert logs[0].startswith("rebuilding: TensorRT version 10.3.0 -> 10.7.0")


def test_tampered_sidecar_makes_engine_stale(tiny_onnx: Path, tmp_path: Path) -> None:
    build = FakeBuilder()
    kw = {"engines": tmp_path, "builder": build, "log": lambda _: None, **IDENTITY}
    path = get_or_build(tiny_onnx, "fp32", **kw)
    sidecar = EngineCache.sidecar_for(path)
    data = json.loads(sidecar.read_text())
    data["key"]["gpu_name"] = "Some Other GPU"
    sidecar.write_text(json.dumps(data))
    key = key_of(tiny_onnx, precision="fp32")
    state = EngineCache(tmp_path).status(key)
    assert state.status == "stale" and "GPU Some Other GPU -> NVIDIA GeForce RTX 4090" in state.reason
    assert EngineCache(tmp_path).lookup(key) is None
    for corrupt in ("{", None):
        if corrupt is None:
            sidecar.unlink()
        else:
            sidecar.write_text(corrupt)
        assert EngineCache(tmp_path).lookup(key) is None and EngineCache(tmp_path).status(key).status == "stale"
    get_or_build(tiny_onnx, "fp32", **kw)
    assert len(build.calls) == 2 and EngineCache(tmp_path).lookup(key) == path
    path.write_bytes(b"trunc")  # size no longer matches the sidecar
    assert EngineCache(tmp_path).lookup(key) is None


def test_force_rebuilds(tiny_onnx: Path, tmp_path: Path) -> None:
    build, logs = FakeBuilder(), []
    kw = {"engines": tmp_path, "builder": build, "log": logs.append, **IDENTITY}
    path = get_or_build(tiny_onnx, "fp16", **kw)
    assert get_or_build(tiny_onnx, "fp16", force=True, **kw) == path
    assert len(build.calls) == 2 and path.read_bytes() == b"engine #2 fp16" and "(--force)" in logs[-2]


def test_store_is_atomic(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, key = EngineCache(tmp_path / "engines"), key_of(tiny_onnx)
    path = cache.store(key, b"first")
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.store(key, b"second engine")
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == b"first"  # never a partial file
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files; the sidecar was withdrawn
    assert cache.lookup(key) is None  # an engine without its sidecar is not used
    with pytest.raises(VistError, match="empty"):
        cache.store(key, b"")


def test_entries_list_every_engine(tiny_onnx: Path, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.store(key_of(tiny_onnx), b"a")
    cache.store(key_of(tiny_onnx, precision="fp32"), b"bb")
    (tmp_path / "orphan.engine").write_bytes(b"x")
    entries = {e.path.name: e for e in cache.entries()}
    assert len(entries) == 3
    assert entries["orphan.engine"].key is None and "no sidecar" in entries["orphan.engine"].problem
    assert {e.key["precision"] for e in entries.values() if e.key} == {"fp16", "fp32"}


def test_key_is_frozen(tiny_onnx: Path) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        key_of(tiny_onnx).precision = "fp32"  # type: ignore[misc]
