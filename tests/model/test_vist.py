"""The offline model: size, shapes, causality and receptive field."""

import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.model import ViST, ViSTConfig, step_macs


def test_published_parameter_count() -> None:
    model = ViST()
    assert sum(p.numel() for p in model.parameters()) == 1_702_952


def test_published_step_cost() -> None:
    # model.md: about 243 M multiply-adds per new frame (67 M input conv, 112 M C3TCN, ~56 M CMST)
    assert 242e6 < step_macs(ViSTConfig()) < 244e6


def test_parameter_names_follow_the_authors_checkpoint() -> None:
    names = set(ViST().state_dict())
    for name in (
        "stage1.conv_1x1.weight",
        "stage1.layers.5.conv_dilated.weight",
        "stage1.layers.0.norm.running_var",
        "stage1.layers.0.norm.num_batches_tracked",
        "stage1.conv_out.bias",
        "adaln.adaLN_modulation.1.weight",
        "adaln.net.1.bias",
        "msb_1.embed.1.0.conv.weight",
        "msb_2.embed.2.0.conv.weight",
        "msb_4.mapping.weight",
        "msb_4.conv1x1.bias",
        "msb_5.weight",
    ):
        assert name in names
    sd = ViST().state_dict()
    assert sd["stage1.layers.0.conv_dilated.weight"].shape == (256, 1, 3, 3, 3)
    assert sd["adaln.adaLN_modulation.1.weight"].shape == (270, 90, 1, 1, 1)
    assert sd["msb_1.embed.0.0.conv.weight"].shape == (90, 90, 1, 3, 3)
    assert sd["msb_1.embed.1.0.conv.weight"].shape == (90, 1, 25, 3, 3)
    assert sd["msb_5.weight"].shape == (90, 64 * 90)


def test_adaln_zero_init() -> None:
    model = ViST(ViSTConfig(feature_dim=8, video_dim=8, cells=3, grid=10))
    mod, net = model.adaln.adaLN_modulation[1], model.adaln.net[1]
    assert torch.count_nonzero(mod.weight) == 0 and torch.count_nonzero(mod.bias) == 0
    assert torch.count_nonzero(net.bias) == 0
    assert 0.005 < float(net.weight.detach().std()) < 0.05


def test_shapes(make_model, tiny) -> None:
    model = make_model()
    out = model(torch.randn(2, 7, tiny.tokens, tiny.feature_dim), torch.rand(2, tiny.cells, tiny.grid, tiny.grid))
    assert out.shape == (2, tiny.cells, 7)
    # one RF set broadcast to the batch
    out1 = model(torch.randn(3, 4, tiny.tokens, tiny.feature_dim), torch.rand(tiny.cells, tiny.grid, tiny.grid))
    assert out1.shape == (3, tiny.cells, 4)


def test_causal_and_receptive_field_is_183_frames(make_model, tiny) -> None:
    model = make_model()
    torch.manual_seed(1)
    t, poke = 400, 150
    feats = torch.randn(1, t, tiny.tokens, tiny.feature_dim)
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    with torch.no_grad():
        base = model(feats, rf)
        poked = feats.clone()
        poked[:, poke] += 5.0
        diff = (model(poked, rf) - base).abs().amax(dim=1)[0]
    assert torch.all(diff[:poke] == 0), "an output changed before its input frame"
    assert torch.all(diff[poke : poke + 183] > 0), "a frame within the receptive field had no effect"
    assert torch.all(diff[poke + 183 :] == 0), "a frame influenced outputs beyond 183 frames"


def test_rf_conditioning_matters(make_model, tiny) -> None:
    model = make_model()
    feats = torch.randn(1, 5, tiny.tokens, tiny.feature_dim)
    with torch.no_grad():
        a = model(feats, torch.rand(tiny.cells, tiny.grid, tiny.grid))
        b = model(feats, torch.rand(tiny.cells, tiny.grid, tiny.grid))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    ("shape", "needle"),
    [((1, 4, 99, 12), r"\[B, T, 100, 12\]"), ((1, 4, 100, 11), "got \\[1, 4, 100, 11\\]"), ((4, 100, 12), "grid")],
)
def test_wrong_feature_shape(make_model, tiny, shape, needle) -> None:
    with pytest.raises(VistError, match=needle):
        make_model()(torch.randn(*shape), torch.rand(tiny.cells, tiny.grid, tiny.grid))


def test_wrong_cell_count_and_nan(make_model, tiny) -> None:
    model = make_model()
    feats = torch.randn(1, 3, tiny.tokens, tiny.feature_dim)
    with pytest.raises(VistError, match=r"rf must have shape \[B, 5, 10, 10\].*got \[6, 10, 10\]"):
        model(feats, torch.rand(6, tiny.grid, tiny.grid))
    feats[0, 1, 3, 2] = float("nan")
    with pytest.raises(VistError, match="1 NaN"):
        model(feats, torch.rand(tiny.cells, tiny.grid, tiny.grid))


def test_training_mode_uses_dropout(tiny) -> None:
    model = ViST(tiny).train()
    feats = torch.randn(1, 6, tiny.tokens, tiny.feature_dim)
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    torch.manual_seed(0)
    a = model(feats, rf)
    torch.manual_seed(1)
    b = model(feats, rf)
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert model.stage1.conv_1x1.weight.grad is not None


def test_rf_batch_mismatch_and_float64_features(make_model, tiny) -> None:
    model = make_model()
    feats = torch.randn(2, 3, tiny.tokens, tiny.feature_dim, dtype=torch.float64)
    with pytest.raises(VistError, match="rf holds 3 RF sets but features hold 2"):
        model(feats, torch.rand(3, tiny.cells, tiny.grid, tiny.grid))
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    with torch.no_grad():
        assert torch.allclose(model(feats, rf), model(feats.float(), rf))
