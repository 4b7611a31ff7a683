"""build_engine's use of the TensorRT API, driven against a stand-in `tensorrt` module on CPU.

This checks the control flow (parse errors, flags, fp32 pinning, profile, timing cache, progress) — not
TensorRT itself: the names it calls are the TensorRT 10 Python API's, which the trt/gpu tests exercise.
"""

from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import pytest

from vist_rt.errors import VistError
from vist_rt.trt.build import build_engine

LayerType = enum.Enum("LayerType", "SHUFFLE MATRIX_MULTIPLY NORMALIZATION SHAPE ELEMENTWISE UNARY REDUCE")
ElementWiseOperation = enum.Enum("ElementWiseOperation", "SUM SUB PROD DIV POW")
UnaryOperation = enum.Enum("UnaryOperation", "SQRT EXP")
DataType = enum.Enum("DataType", "FLOAT HALF INT32")
BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 OBEY_PRECISION_CONSTRAINTS")


class Tensor:
    def __init__(self, name: str, shape=(), dtype=DataType.FLOAT) -> None:
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


class ILayer:
    def __init__(self, name, type_, inputs, outputs, op=None) -> None:
        self.name, self.type, self._in, self._out, self.op = name, type_, inputs, outputs, op
        self.precision, self.output_types = None, {}

    num_inputs = property(lambda self: len(self._in))
    num_outputs = property(lambda self: len(self._out))

    def get_input(self, k):
        return self._in[k]

    def get_output(self, k):
        return self._out[k]

    def set_output_type(self, k, dtype):
        self.output_types[k] = dtype


class IElementWiseLayer(ILayer):
    pass


class IUnaryLayer(ILayer):
    pass


class Network:
    def __init__(self) -> None:
        self.layers: list[ILayer] = []
        self.inputs: list[Tensor] = []

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, i):  # TensorRT hands out the layer typed as a plain ILayer
        layer = self.layers[i]
        layer.__class__ = ILayer
        return layer

    def get_input(self, i):
        return self.inputs[i]


class ParserError:
    def desc(self):
        return "No importer registered for op: Frobnicate\nmore detail"

    def node(self):
        return 7


def make_fake_trt(
    record: dict, *, parse_ok: bool = True, dynamic: bool = False, version: str = "10.7.0"
) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.LayerType, trt.ElementWiseOperation, trt.UnaryOperation = LayerType, ElementWiseOperation, UnaryOperation
    trt.DataType = DataType
    trt.BuilderFlag = BuilderFlag if version < "11" else enum.Enum("BuilderFlag", "TF32")
    trt.float32, trt.float16, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT32
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.IElementWiseLayer, trt.IUnaryLayer = IElementWiseLayer, IUnaryLayer

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level) -> None:
            record["log_level"] = level

    class IProgressMonitor:
        def __init__(self) -> None:
            record["monitor_init"] = True

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            record["parsed"] = path
            if not parse_ok:
                self.num_errors = 2
                return False
            net = self.network
            x = Tensor("pixels", (-1 if dynamic else 1, 3, 8, 8))
            net.inputs.append(x)
            mm = Tensor("mm")
            norm = Tensor("norm")
            shape = Tensor("shape", dtype=DataType.INT32)
            net.layers += [
                ILayer("proj", LayerType.MATRIX_MULTIPLY, [x], [mm]),
                ILayer("ln", LayerType.NORMALIZATION, [mm], [norm]),
                ILayer("shape", LayerType.SHAPE, [norm], [shape]),
                ILayer("add", LayerType.ELEMENTWISE, [norm, mm], [Tensor("res")], op=ElementWiseOperation.SUM),
            ]
            return True

        def get_error(self, i):
            return ParserError()

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            record.setdefault("profile", {})[name] = (mn, opt, mx)

    class Cache:
        def __init__(self, blob) -> None:
            self.blob = bytes(blob)

        def serialize(self):
            return memoryview(self.blob + b"+timings")

    class Config:
        progress_monitor = None

        def __init__(self) -> None:
            record["flags"], record["cleared"] = set(), set()

        def set_memory_pool_limit(self, pool, size):
            record["workspace"] = (pool, size)

        def set_flag(self, flag):
            record["flags"].add(flag.name)

        def clear_flag(self, flag):
            record["cleared"].add(flag.name)

        def add_optimization_profile(self, profile):
            record["profiles_added"] = record.get("profiles_added", 0) + 1

        def create_timing_cache(self, blob):
            record["timing_blob"] = bytes(blob)
            return Cache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            record["network_flags"] = flags
            self.network = Network()
            return self.network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            record["pinned"] = {
                layer.name: (layer.precision, layer.output_types) for layer in network.layers if layer.precision
            }
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building", None, 2)
                if not monitor.step_complete("Building", 0):
                    return None
                monitor.phase_finish("Building")
            return memoryview(b"ENGINE")

    trt.Logger, trt.IProgressMonitor, trt.OnnxParser, trt.Builder = Logger, IProgressMonitor, OnnxParser, Builder
    return trt


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    def install(**kw) -> dict:
        record: dict = {}
        monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(record, **kw))
        return record

    return install


class Events:
    def __init__(self, cancel: bool = False) -> None:
        self.seen: list[str] = []
        self.cancel = cancel

    def phase_start(self, phase, parent, num_steps):
        self.seen.append(f"start {phase} {num_steps}")

    def step_complete(self, phase, step):
        self.seen.append(f"step {phase} {step}")
        if self.cancel:
            raise KeyboardInterrupt
        return True

    def phase_finish(self, phase):
        self.seen.append(f"finish {phase}")


def test_fp16_build_pins_normalisation_and_saves_timing_cache(fake_trt, tiny_onnx: Path, tmp_path: Path) -> None:
    record = fake_trt()
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"old")
    events = Events()
    engine = build_engine(tiny_onnx, precision="fp16", timing_cache_path=timing, workspace_gib=2, progress=events)
    assert engine == b"ENGINE"
    assert record["network_flags"] == 0 and record["parsed"] == str(tiny_onnx)
    assert record["flags"] == {"FP16", "OBEY_PRECISION_CONSTRAINTS"} and record["workspace"] == ("WORKSPACE", 2 << 30)
    assert record["pinned"] == {"ln": (DataType.FLOAT, {0: DataType.FLOAT})}  # not the int SHAPE, not the residual
    assert "profiles_added" not in record  # static input: no optimisation profile
    assert record["timing_blob"] == b"old" and timing.read_bytes() == b"old+timings"
    assert events.seen == ["start Building 2", "step Building 0", "finish Building"]


def test_fp32_build_disables_tf32_and_sets_profile(fake_trt, tiny_dynamic_onnx: Path) -> None:
    record = fake_trt(dynamic=True)
    shapes = {"pixels": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}
    assert build_engine(tiny_dynamic_onnx, precision="fp32", input_shapes=shapes) == b"ENGINE"
    assert record["flags"] == set() and record["cleared"] == {"TF32"} and record["pinned"] == {}
    assert record["profiles_added"] == 1 and record["profile"] == shapes
    assert record["timing_blob"] == b""


def test_parse_error_is_one_line(fake_trt, tiny_onnx: Path) -> None:
    fake_trt(parse_ok=False)
    with pytest.raises(VistError) as err:
        build_engine(tiny_onnx, precision="fp16")
    assert str(err.value) == (
        f"TensorRT cannot parse {tiny_onnx}: No importer registered for op: Frobnicate at node #7 (+1 more)"
    )


def test_interrupt_in_progress_cancels_and_reraises(fake_trt, tiny_onnx: Path) -> None:
    fake_trt()
    with pytest.raises(KeyboardInterrupt):
        build_engine(tiny_onnx, precision="fp16", progress=Events(cancel=True))


def test_fp16_on_tensorrt_11_is_a_clear_error(fake_trt, tiny_onnx: Path) -> None:
    fake_trt(version="11.4.0")  # TensorRT 11 removed BuilderFlag.FP16 and the precision-constraint flags
    with pytest.raises(VistError, match=r"TensorRT 11\.4\.0 has no weakly typed fp16 builds"):
        build_engine(tiny_onnx, precision="fp16")
    assert build_engine(tiny_onnx, precision="fp32") == b"ENGINE"
