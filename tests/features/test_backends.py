"""Feature backends: ONNX Runtime equals PyTorch, the ONNX graph is reused only when it is the right one,
choices are explicit, and GPU paths (CUDA graphs, half precision) check themselves where a GPU exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vist_rt.cpu import this_cpu
from vist_rt.errors import VistError
from vist_rt.export.onnx import OnnxFileError, export_module, read_meta
from vist_rt.features import DINOv2Extractor
from vist_rt.features.backends import choose
from vist_rt.features.backends.onnxruntime_backend import OnnxRuntimeBackend
from vist_rt.features.onnx import onnx_filename


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)


@pytest.mark.slow
def test_onnxruntime_equals_pytorch_vits14(tmp_path, frames):
    """The published-style graph (ViT-S/14 at 224, all 12 blocks): fp32 max relative error <= 1e-4."""
    logs: list[str] = []
    torch_ext = DINOv2Extractor("vits14", seed=0, block=-1)
    ort_ext = DINOv2Extractor("vits14", seed=0, block=-1, backend="onnxruntime", cache_dir=tmp_path, log=logs.append)
    assert ort_ext.runtime == {"backend": "onnxruntime", "device": "cpu", "precision": "fp32"}
    want = torch_ext(frames)
    assert _rel(ort_ext(frames), want) <= 1e-4  # a batch (dynamic batch axis)
    assert _rel(ort_ext(frames[0])[0], want[0]) <= 1e-4  # one frame
    meta = read_meta(tmp_path / "onnx" / onnx_filename(ort_ext.spec), kind="features")
    assert meta["opset"] >= 17 and meta["spec"] == ort_ext.spec
    assert meta["inputs"] == {"pixels": ["batch", 3, 224, 224]} and meta["outputs"] == {"tokens": ["batch", 256, 384]}
    assert logs and logs[0].startswith("exporting ONNX graph")


def test_onnx_graph_is_reused_and_never_used_stale(tmp_path, frames):
    logs: list[str] = []
    kw = dict(seed=0, block=1, image_size=56, backend="onnxruntime", cache_dir=tmp_path, log=logs.append)
    first = DINOv2Extractor("vits14", **kw)
    path = tmp_path / "onnx" / onnx_filename(first.spec)
    stamp = path.stat().st_mtime_ns
    second = DINOv2Extractor("vits14", **kw)
    assert logs[-1].startswith("reusing") and path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first(frames), second(frames))
    # another extractor's graph under this file name (e.g. copied by hand) is re-exported, not used
    other = DINOv2Extractor("vits14", seed=0, block=0, image_size=56, backend="onnxruntime", cache_dir=tmp_path / "x")
    path.write_bytes((tmp_path / "x" / "onnx" / onnx_filename(other.spec)).read_bytes())
    third = DINOv2Extractor("vits14", **kw)
    assert logs[-1].startswith("re-exporting ONNX graph") and "block: file 0, wanted 1" in logs[-1]
    np.testing.assert_array_equal(third(frames), first(frames))
    with pytest.raises(OnnxFileError, match="another extractor"):
        OnnxRuntimeBackend(tmp_path / "x" / "onnx" / onnx_filename(other.spec), first.spec)


def test_foreign_onnx_is_refused(tmp_path):
    ext = DINOv2Extractor("vits14", seed=0, block=0, image_size=28)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(plain), dynamo=False)
    with pytest.raises(OnnxFileError, match="not written by vist-rt"):
        OnnxRuntimeBackend(plain, ext.spec)
    step = export_module(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), tmp_path / "s.onnx", kind="temporal-step",
                         spec={}, input_names=["a"], output_names=["b"])  # fmt: skip
    with pytest.raises(OnnxFileError, match="holds a 'temporal-step' graph"):
        OnnxRuntimeBackend(step, ext.spec)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(OnnxFileError, match="not a readable ONNX file"):
        OnnxRuntimeBackend(tmp_path / "junk.onnx", ext.spec)


def test_choices_are_explicit():
    assert choose("auto", "cpu") == "onnxruntime"
    assert choose("auto", "cpu", "bf16") == "torch"  # auto picks a backend that runs the precision asked for
    with pytest.raises(VistError, match="fp16 is not supported on CPU"):
        choose("auto", "cpu", "fp16")
    with pytest.raises(VistError, match="backend must be one of"):
        choose("openvino", "cpu")
    with pytest.raises(VistError, match="fp16 is not supported on CPU"):
        DINOv2Extractor("vits14", seed=0, block=0, image_size=28, precision="fp16")
    with pytest.raises(VistError, match="the onnxruntime backend runs fp32, int8 on cpu, not bf16"):
        DINOv2Extractor("vits14", seed=0, block=0, image_size=28, backend="onnxruntime", precision="bf16")
    with pytest.raises(VistError, match="precision must be one of"):
        DINOv2Extractor("vits14", seed=0, block=0, image_size=28, precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(VistError, match="no CUDA device is visible"):
            choose("torch", "cuda")


NEEDS_BF16 = pytest.mark.skipif(not this_cpu().native("bf16"), reason="bf16 is not native here (no AMX / AVX512-BF16)")


@NEEDS_BF16
def test_bf16_on_cpu_is_close(frames):
    a = DINOv2Extractor("vits14", seed=0, block=2, image_size=56)
    b = DINOv2Extractor("vits14", seed=0, block=2, image_size=56, precision="bf16")
    assert b.runtime["precision"] == "bf16" and b(frames).dtype == np.float32
    assert _rel(b(frames), a(frames)) <= 5e-2


@pytest.mark.gpu
def test_cuda_graph_equals_eager_and_fp16_is_close(frames):
    eager = DINOv2Extractor("vits14", seed=0, block=-1, device="cuda", cuda_graphs=False)
    graph = DINOv2Extractor("vits14", seed=0, block=-1, device="cuda")
    cpu = DINOv2Extractor("vits14", seed=0, block=-1)
    kept = [graph(f) for f in frames]  # results are kept: none may be overwritten by a later call
    for f, out in zip(frames, kept):
        np.testing.assert_allclose(out, eager(f), rtol=0, atol=1e-5)
    assert _rel(eager(frames), cpu(frames)) <= 1e-3  # TF32 may be on for matmuls
    half = DINOv2Extractor("vits14", seed=0, block=-1, device="cuda", precision="fp16")
    assert _rel(half(frames[0]), cpu(frames[0])) <= 2e-2


@NEEDS_BF16
def test_export_leaves_the_extractors_module_alone(tmp_path, frames):
    from vist_rt.features.onnx import export_features_onnx

    ext = DINOv2Extractor("vits14", seed=0, block=0, image_size=28, precision="bf16")
    before = ext(frames)
    export_features_onnx(ext.module, ext.spec, tmp_path / "x.onnx")
    assert next(ext.module.parameters()).dtype == torch.bfloat16
    np.testing.assert_array_equal(ext(frames), before)
    ort = OnnxRuntimeBackend(tmp_path / "x.onnx", ext.spec)
    ort.close()
    with pytest.raises(VistError, match="closed"):
        ort(ext.preprocess(frames))
    with pytest.raises(VistError, match=r"pixels must be \[N, 3, 28, 28\]"):
        ext.tokens_from_pixels(np.zeros((1, 3, 32, 32), np.float32))
