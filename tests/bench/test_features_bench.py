"""The feature benchmark's compute floor counts what the ViT computes."""

from __future__ import annotations

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
