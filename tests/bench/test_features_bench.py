"""The feature benchmark's compute floor counts what the ViT computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vist_rt.bench.features import vit_flops
from vist_rt.features.backbones import BACKBONES
from vist_rt.features.vit import DINOv2Tokens


@pytest.mark.parametrize(("name", "block", "size"), [("vits14", 11, 224), ("vits14_reg", 3, 112), ("vitg14", 0, 56)])
def test_flops_match_pytorchs_counter(name: str, block: int, size: int) -> None:
    module = DINOv2Tokens(BACKBONES[name], block, size).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        module(torch.zeros(1, 3, size, size))
    counted = counter.get_total_flops()
    assert vit_flops(module) == pytest.approx(counted, rel=1e-3)
    if (name, size) == ("vits14", 224):
        assert 12.2e9 < vit_flops(module) < 12.4e9  # ViT-S/14 at 224: ~6.1 G multiply-adds


def test_rate_agreement_is_per_cell_over_time_and_needs_enough_frames() -> None:
    from vist_rt.bench.features import MIN_RATE_FRAMES, rate_agreement

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((MIN_RATE_FRAMES, 100, 16)).astype(np.float32)  # 10x10 tokens, 300 frames
    close = rate_agreement(ref + 1e-4 * rng.standard_normal(ref.shape).astype(np.float32), ref)
    assert close["within"] is True and close["cells"] == 90 and close["frames"] == MIN_RATE_FRAMES
    assert 0.999 <= close["min_cc"] <= close["mean_cc"] <= 1.0
    off = ref.copy()
    off[:, :, :8] = rng.standard_normal(off[:, :, :8].shape)  # half of every token's features wrong
    far = rate_agreement(off, ref)
    assert far["within"] is False and far["min_cc"] < 0.999
    assert rate_agreement(ref[:50], ref[:50])["within"] is None  # too few frames for the bound's test
    tiny = rate_agreement(ref[:, :4], ref[:, :4])  # a 2x2 grid
    assert tiny["min_cc"] is None and "too small" in tiny["why"]
