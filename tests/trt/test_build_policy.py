"""What build.py decides, on CPU: the graph TensorRT gets, the fp16 policy, progress forwarding, install hints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest

from vist_rt.errors import VistError
from vist_rt.export.onnx import read_meta
from vist_rt.trt.build import LayerInfo, ProgressForwarder, build_engine, fp32_layers

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_onnx_graph_is_what_tensorrt_consumes(tiny_onnx: Path, tiny_dynamic_onnx: Path) -> None:
    meta = read_meta(tiny_onnx, kind="features")
    assert meta["opset"] >= 17  # LayerNormalization is an ONNX op from opset 17 (TensorRT's INormalizationLayer)
    assert meta["inputs"] == {"pixels": [1, 3, 8, 8]} and meta["outputs"] == {"tokens": [1, 16, 24]}
    assert meta["spec"] == {"backbone": "test", "block": 0, "image_size": 8}
    ops = [n.op_type for n in onnx.load(str(tiny_onnx)).graph.node]
    assert ops.count("LayerNormalization") == 1  # one fused op: the layer build.py keeps in fp32
    assert "ReduceMean" not in ops and "Pow" not in ops  # not decomposed
    dyn = read_meta(tiny_dynamic_onnx)
    assert dyn["inputs"] == {"pixels": ["batch", 3, 8, 8]} and dyn["outputs"]["tokens"][0] == "batch"


def test_fp32_policy_keeps_fused_layernorm() -> None:
    layers = [
        LayerInfo("SHUFFLE"),
        LayerInfo("MATRIX_MULTIPLY", inputs_from=(0,)),
        LayerInfo("NORMALIZATION", inputs_from=(1,)),
        LayerInfo("SOFTMAX", inputs_from=(2,)),
        LayerInfo("SHAPE", float_output=False),
    ]
    assert fp32_layers(layers) == [2]


def test_fp32_policy_keeps_decomposed_layernorm_pieces() -> None:
    # x -> mean -> (x - mean) -> pow 2 -> mean -> + eps -> sqrt -> d / sqrt -> * gamma -> + beta -> matmul
    layers = [
        LayerInfo("MATRIX_MULTIPLY"),  # 0: x
        LayerInfo("REDUCE", inputs_from=(0,)),  # 1: mean
        LayerInfo("ELEMENTWISE", "SUB", inputs_from=(0, 1)),  # 2: d = x - mean
        LayerInfo("CONSTANT"),  # 3: 2.0
        LayerInfo("ELEMENTWISE", "POW", inputs_from=(2, 3)),  # 4: d^2
        LayerInfo("REDUCE", inputs_from=(4,)),  # 5: var
        LayerInfo("ELEMENTWISE", "SUM", inputs_from=(5, 3)),  # 6: var + eps
        LayerInfo("UNARY", "SQRT", inputs_from=(6,)),  # 7
        LayerInfo("ELEMENTWISE", "DIV", inputs_from=(2, 7)),  # 8: d / sqrt
        LayerInfo("ELEMENTWISE", "PROD", inputs_from=(8, 3)),  # 9: * gamma
        LayerInfo("ELEMENTWISE", "SUM", inputs_from=(9, 3)),  # 10: + beta
        LayerInfo("MATRIX_MULTIPLY", inputs_from=(10,)),  # 11
        LayerInfo("UNARY", "EXP", inputs_from=(11,)),  # 12
        LayerInfo("ELEMENTWISE", "SUM", inputs_from=(0, 11)),  # 13: a residual add, not LayerNorm
        LayerInfo("ELEMENTWISE", "POW", inputs_from=(0, 3), float_output=False),  # 14: integer maths stays
    ]
    assert fp32_layers(layers) == [1, 2, 4, 5, 6, 7, 8]


class Sink:
    def __init__(self, fail_at: int | None = None, cancel_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.fail_at, self.cancel_at = fail_at, cancel_at

    def phase_start(self, phase, parent, num_steps) -> None:
        self.events.append(("start", phase, parent, num_steps))

    def step_complete(self, phase, step) -> bool:
        self.events.append(("step", phase, step))
        if step == self.fail_at:
            raise RuntimeError("display broke")
        return step != self.cancel_at

    def phase_finish(self, phase) -> None:
        self.events.append(("finish", phase))


def test_progress_forwarder_forwards_and_cancels() -> None:
    sink = Sink()
    fwd = ProgressForwarder(sink)
    fwd.phase_start("Building engine", None, 2)
    fwd.phase_start("Tactic timing", "Building engine", 3)
    assert fwd.step_complete("Tactic timing", 0) is True
    fwd.phase_finish("Tactic timing")
    assert sink.events == [
        ("start", "Building engine", None, 2),
        ("start", "Tactic timing", "Building engine", 3),
        ("step", "Tactic timing", 0),
        ("finish", "Tactic timing"),
    ]
    assert ProgressForwarder(Sink(cancel_at=1)).step_complete("p", 1) is False
    failing = ProgressForwarder(Sink(fail_at=0))
    assert failing.step_complete("p", 0) is False  # an error in the display cancels the build ...
    assert isinstance(failing.error, RuntimeError)  # ... and is kept to re-raise after TensorRT returns
    failing.phase_finish("p")  # no further calls reach the sink, nothing raises into TensorRT
    assert ProgressForwarder(None).step_complete("p", 0) is True


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message when it is not")
def test_without_tensorrt_build_and_run_fail_with_install_hint(tiny_onnx: Path, tmp_path: Path) -> None:
    from vist_rt.trt.runner import TensorRTRunner

    with pytest.raises(VistError, match=r'pip install "vist-rt\[tensorrt\]" \(needs an NVIDIA GPU and CUDA\)'):
        build_engine(tiny_onnx, precision="fp16")
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"x")
    with pytest.raises(VistError, match=r"vist-rt\[tensorrt\]"):
        TensorRTRunner(engine)


def test_build_refuses_bad_input_before_tensorrt(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(VistError, match="not found"):
        build_engine(tmp_path / "missing.onnx", precision="fp16")
    with pytest.raises(VistError, match="precision"):
        build_engine(tiny_onnx, precision="int8")
