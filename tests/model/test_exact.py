"""exact_fp32: TF32 off inside, the caller's settings back after (also after an error)."""

from __future__ import annotations

import pytest
import torch

from vist_rt.model.exact import exact_context, exact_fp32


@pytest.mark.parametrize("cudnn, matmul", [(True, False), (False, True), (True, True)])
def test_tf32_off_inside_and_restored_after(cudnn: bool, matmul: bool) -> None:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
        with exact_fp32():
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (cudnn, matmul)
        with pytest.raises(RuntimeError), exact_fp32():
            raise RuntimeError("inside")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (cudnn, matmul)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_exact_context_only_touches_cuda() -> None:
    assert exact_context(torch.device("cuda", 0)) is exact_fp32
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        with exact_context(torch.device("cpu"))():
            assert torch.backends.cudnn.allow_tf32  # CPU steps leave the CUDA settings alone
    finally:
        torch.backends.cudnn.allow_tf32 = saved
