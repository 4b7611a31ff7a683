"""The Vi-ST loss, term by term, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.train.loss import LOSSES, loss_function, poisson_loss, rmse_loss, vist_loss
from vist_rt.train.softdtw import soft_dtw


def _windowed_direct(yh: torch.Tensor, y: torch.Tensor, w: int) -> float:
    vals = []
    t = yh.shape[1]
    s = 0
    while s < t - w:
        a, b = yh[:, s : s + w], y[:, s : s + w]
        vals.append(soft_dtw(a, b, 0.1) - (soft_dtw(a, a, 0.1) + soft_dtw(b, b, 0.1)) / 2)
        s += w // 2
    return float(torch.cat(vals).mean())


def test_terms_match_direct() -> None:
    g = torch.Generator().manual_seed(0)
    yh = torch.randn(2, 60, 4, generator=g, dtype=torch.float64)
    y = torch.rand(2, 60, 4, generator=g, dtype=torch.float64)
    total, parts = vist_loss(yh, y)
    a, b = yh.numpy(), y.numpy()
    rmse = np.sqrt(np.mean((a - b) ** 2))
    neg = np.mean(np.maximum(-a, 0))
    s20 = _windowed_direct(yh, y, 3)  # T//20 = 3
    s10 = _windowed_direct(yh, y, 6)  # T//10 = 6
    np.testing.assert_allclose(parts["rmse"], rmse, rtol=1e-10)
    np.testing.assert_allclose(parts["neg"], neg, rtol=1e-10)
    np.testing.assert_allclose(parts["sdtw_w20"], s20, rtol=1e-8)
    np.testing.assert_allclose(parts["sdtw_w10"], s10, rtol=1e-8)
    want = 0.1 * rmse + 0.5 * neg + 0.5e-5 * s20 + 0.5e-5 * s10
    np.testing.assert_allclose(float(total.detach()), want, rtol=1e-10)
    np.testing.assert_allclose(parts["total"], want, rtol=1e-10)


def test_perfect_nonnegative_prediction_is_zero() -> None:
    y = torch.rand(2, 40, 3, dtype=torch.float64)
    total, parts = vist_loss(y.clone(), y)
    assert parts["rmse"] == 0.0 and parts["neg"] == 0.0
    assert abs(parts["sdtw_w20"]) < 1e-9 and abs(parts["sdtw_w10"]) < 1e-9
    assert abs(float(total)) < 1e-12


def test_negative_predictions_penalised() -> None:
    y = torch.zeros(1, 40, 2)
    pos = torch.full((1, 40, 2), 0.5)
    neg = torch.full((1, 40, 2), -0.5)
    _, p_pos = vist_loss(pos, y)
    _, p_neg = vist_loss(neg, y)
    assert p_pos["neg"] == 0.0
    assert p_neg["neg"] == pytest.approx(0.5)
    assert p_neg["rmse"] == pytest.approx(p_pos["rmse"])
    assert p_neg["total"] > p_pos["total"]


def test_backward_gives_finite_grads() -> None:
    yh = torch.randn(2, 128, 5, requires_grad=True)
    total, _ = vist_loss(yh, torch.rand(2, 128, 5))
    total.backward()
    assert yh.grad is not None and torch.isfinite(yh.grad).all()
    # The ReLU(-y_hat) term pushes negative predictions up (its gradient is negative there).
    assert (yh.grad[yh.detach() < -1] < 0).float().mean() > 0.9


def test_short_sequence_has_no_sdtw_windows() -> None:
    _, parts = vist_loss(torch.randn(1, 15, 2), torch.randn(1, 15, 2))  # T//20 = 0, T//10 = 1 -> starts 0..13
    assert parts["sdtw_w20"] == 0.0


@pytest.mark.parametrize(("a", "b"), [((1, 10, 2), (1, 10, 3)), ((10, 2), (10, 2)), ((1, 10, 2), (2, 10, 2))])
def test_shape_mismatch(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    with pytest.raises(VistError):
        vist_loss(torch.zeros(a), torch.zeros(b))


def test_bfloat16_computed_in_float32() -> None:
    g = torch.Generator().manual_seed(1)
    yh = torch.randn(2, 40, 3, generator=g).bfloat16()
    y = torch.rand(2, 40, 3, generator=g)
    total, parts = vist_loss(yh, y)
    assert total.dtype == torch.float32
    _, ref = vist_loss(yh.float(), y)
    assert parts == pytest.approx(ref, rel=1e-6)


# ---- the other losses (--loss rmse | poisson) --------------------------------------------------------------------


def _grad(name: str, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = y_hat.clone().requires_grad_(True)
    LOSSES[name](x, y)[0].backward()
    assert x.grad is not None
    return x.grad


def test_rmse_and_poisson_are_what_they_say() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(2, 40, 3, generator=gen) * 10
    y_hat = torch.rand(2, 40, 3, generator=gen) * 10 + 0.1
    rmse, parts = rmse_loss(y_hat, y)
    assert float(rmse) == pytest.approx(float(torch.sqrt(((y_hat - y) ** 2).mean())), rel=1e-6)
    assert parts["total"] == pytest.approx(parts["rmse"])
    nll, parts = poisson_loss(y_hat, y)
    want = torch.nn.functional.poisson_nll_loss(y_hat, y, log_input=False, full=False, eps=0.0)
    assert float(nll) == pytest.approx(float(want), rel=1e-5) and parts["neg"] == 0.0


def test_poisson_is_least_at_the_recorded_rates_and_pushes_negatives_up() -> None:
    y = torch.full((1, 20, 2), 4.0)
    assert float(poisson_loss(y, y)[0]) < float(poisson_loss(y * 1.1, y)[0])
    assert float(poisson_loss(y, y)[0]) < float(poisson_loss(y * 0.9, y)[0])
    assert torch.allclose(_grad("poisson", y, y), torch.zeros_like(y), atol=1e-7)  # a minimum
    below = _grad("poisson", torch.full((1, 20, 2), -1.0), y)
    assert (below < 0).all()  # a negative output still gets a gradient that raises it


def test_each_loss_really_changes_the_gradient() -> None:
    gen = torch.Generator().manual_seed(1)
    y = torch.rand(2, 60, 4, generator=gen) * 8
    y_hat = torch.randn(2, 60, 4, generator=gen) * 3 + 2
    grads = {name: _grad(name, y_hat, y).flatten() for name in LOSSES}
    for a in LOSSES:
        for b in LOSSES:
            if a < b:
                cos = float(torch.nn.functional.cosine_similarity(grads[a], grads[b], dim=0))
                assert cos < 0.99, (a, b, cos)  # not one direction: the losses train the model differently


def test_a_loss_is_chosen_by_name_and_saved_with_the_recipe() -> None:
    from vist_rt.cli import build_parser
    from vist_rt.train.schedule import Recipe

    assert loss_function("poisson") is poisson_loss and Recipe().loss == "vist"
    with pytest.raises(VistError, match="unknown loss 'l1'; one of vist, rmse, poisson"):
        loss_function("l1")
    with pytest.raises(VistError, match="unknown loss"):
        Recipe(loss="l1")
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    choices = next(a.choices for a in train._actions if a.dest == "loss")
    assert tuple(choices) == tuple(LOSSES)  # the flag offers exactly the losses there are
