"""Real TensorRT on a GPU: build the tiny engine, run it, and compare with ONNX Runtime on CPU.

These skip (with the reason) where TensorRT or a CUDA device is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.export.ort import make_session
from vist_rt.trt.build import get_or_build
from vist_rt.trt.cache import EngineCache

pytestmark = [pytest.mark.trt, pytest.mark.gpu]

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def reference(onnx_path: Path, pixels: torch.Tensor) -> np.ndarray:
    session = make_session(onnx_path, device="cpu")
    return session.run(["tokens"], {"pixels": pixels.numpy()})[0]


def never_called(*args, **kwargs) -> bytes:
    raise AssertionError("the cache should have been hit")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(precision: str, tiny_onnx: Path, tmp_path: Path) -> None:
    from vist_rt.trt.runner import TensorRTRunner

    logs: list[str] = []
    path = get_or_build(tiny_onnx, precision, engines=tmp_path, log=logs.append)
    assert path.is_file() and logs[-1] == f"built {path}"
    assert list(tmp_path.glob("timing-*.cache")), "the timing cache is saved"
    pixels = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with TensorRTRunner(path) as run:
        assert run.input_names == ["pixels"] and run.output_names == ["tokens"]
        assert run.shapes == {"pixels": (1, 3, 8, 8), "tokens": (1, 16, 24)}
        out = run({"pixels": pixels.cuda()})["tokens"]
        torch.cuda.synchronize()
        np.testing.assert_allclose(out.float().cpu().numpy(), reference(tiny_onnx, pixels), atol=TOLERANCE[precision])
    assert run.closed
    assert get_or_build(tiny_onnx, precision, engines=tmp_path, builder=never_called, log=logs.append) == path


def test_dynamic_batch_profile(tiny_dynamic_onnx: Path, tmp_path: Path) -> None:
    from vist_rt.trt.runner import TensorRTRunner

    shapes = {"pixels": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}
    path = get_or_build(tiny_dynamic_onnx, "fp32", input_shapes=shapes, engines=tmp_path, log=lambda _: None)
    with TensorRTRunner(path) as run:
        assert run.shapes["pixels"] == (-1, 3, 8, 8)
        for batch in (3, 1, 4):
            pixels = torch.randn(batch, 3, 8, 8)
            out = run({"pixels": pixels.cuda()})["tokens"]
            assert out.shape == (batch, 16, 24)
            np.testing.assert_allclose(out.cpu().numpy(), reference(tiny_dynamic_onnx, pixels), atol=1e-4)
        with pytest.raises(VistError, match="built for 1x3x8x8 to 4x3x8x8"):
            run({"pixels": torch.zeros(5, 3, 8, 8, device="cuda")})


def test_runner_checks_inputs(tiny_onnx: Path, tmp_path: Path) -> None:
    from vist_rt.trt.runner import TensorRTRunner

    path = get_or_build(tiny_onnx, "fp32", engines=tmp_path, log=lambda _: None)
    with TensorRTRunner(path) as run:
        ok = torch.zeros(1, 3, 8, 8, device="cuda")
        with pytest.raises(VistError, match="engine inputs are pixels; got image"):
            run({"image": ok})
        with pytest.raises(VistError, match="has shape 1x3x9x9; the engine takes 1x3x8x8"):
            run({"pixels": torch.zeros(1, 3, 9, 9, device="cuda")})
        with pytest.raises(VistError, match=r"torch\.float16; the engine takes torch\.float32"):
            run({"pixels": ok.half()})
        with pytest.raises(VistError, match="is on cpu"):
            run({"pixels": ok.cpu()})
        first = run({"pixels": ok})["tokens"]
        assert run({"pixels": ok + 1})["tokens"].data_ptr() == first.data_ptr()  # outputs allocated once
    with pytest.raises(VistError, match="closed"):
        run({"pixels": ok})


def test_engine_for_another_trt_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    import json

    from vist_rt.trt.runner import TensorRTRunner

    path = get_or_build(tiny_onnx, "fp32", engines=tmp_path, log=lambda _: None)
    sidecar = EngineCache.sidecar_for(path)
    data = json.loads(sidecar.read_text())
    data["key"]["trt_version"] = "9.0.0"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(VistError, match=r"was built for TensorRT 9\.0\.0"):
        TensorRTRunner(path)
