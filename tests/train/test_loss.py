"""The Vi-ST loss, term by term, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.train.loss import vist_loss
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
