"""The device-resident stream (one CUDA graph per step on GPU) equals the offline model; run eagerly on CPU."""

from __future__ import annotations

import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.model import StreamingViST
from vist_rt.model.device_stream import DeviceStreamingViST
from vist_rt.model.exact import exact_fp32


def test_equals_offline_over_three_receptive_fields(make_model, tiny):
    model = make_model()
    gen = torch.Generator().manual_seed(2)
    frames = 3 * tiny.receptive_field + 11
    feats = torch.randn(2, frames, tiny.tokens, tiny.feature_dim, generator=gen)
    rf = torch.rand(2, tiny.cells, tiny.grid, tiny.grid, generator=gen)
    with torch.no_grad():
        offline = model(feats, rf)  # [B, C, T]
    stream = DeviceStreamingViST.from_model(model, rf)
    out = torch.stack([stream.step(feats[:, t]) for t in range(frames)], dim=-1)
    assert float((out - offline).abs().max()) <= 1e-4
    stream.reset()  # reset restarts: the first frames again give the offline outputs
    again = torch.stack([stream.step(feats[:, t]) for t in range(20)], dim=-1)
    assert float((again - offline[..., :20]).abs().max()) <= 1e-4
    with pytest.raises(VistError):
        stream.step(feats[:1, 0])
    assert stream.t == 20


def test_set_rf_matches_a_fresh_stream(make_model, tiny):
    model = make_model()
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 30, tiny.tokens, tiny.feature_dim, generator=gen)
    rf_a, rf_b = (torch.rand(1, tiny.cells, tiny.grid, tiny.grid, generator=gen) for _ in range(2))
    a = DeviceStreamingViST.from_model(model, rf_a)
    a.set_rf(rf_b)
    b = StreamingViST.from_model(model, rf_b)
    for t in range(30):
        assert torch.allclose(a.step(feats[:, t]), b.step(feats[:, t]), atol=1e-5)


@pytest.mark.gpu
def test_cuda_graph_equals_eager_on_gpu(make_model, tiny):
    model = make_model().cuda()
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 250, tiny.tokens, tiny.feature_dim, generator=gen).cuda()
    rf = torch.rand(2, tiny.cells, tiny.grid, tiny.grid, generator=gen).cuda()
    graphed = DeviceStreamingViST.from_model(model, rf)
    assert graphed.cuda_graph is not None
    eager = StreamingViST.from_model(model, rf)
    with torch.no_grad(), exact_fp32():
        offline = model(feats, rf)
    for t in range(250):
        out = graphed.step(feats[:, t])
        assert torch.allclose(out, eager.step(feats[:, t]), atol=1e-5)
        assert torch.allclose(out, offline[..., t], atol=1e-4)


def test_built_in_inference_mode_still_works_outside(make_model, tiny):
    model = make_model()
    rf = torch.rand(1, tiny.cells, tiny.grid, tiny.grid)
    with torch.inference_mode():
        stream = DeviceStreamingViST.from_model(model, rf)
    feats = torch.randn(1, tiny.tokens, tiny.feature_dim)
    first = stream.step(feats)
    stream.reset()
    stream.set_rf(rf)
    assert torch.equal(stream.step(feats), first)


def test_cannot_be_moved_after_it_is_built(make_model, tiny):
    stream = DeviceStreamingViST.from_model(make_model(), torch.rand(1, tiny.cells, tiny.grid, tiny.grid))
    with pytest.raises(VistError, match="cannot be moved or cast"):
        stream.to(torch.float64)
