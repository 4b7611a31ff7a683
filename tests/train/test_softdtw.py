"""Soft-DTW against an independent double-loop DP in float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.train.softdtw import soft_dtw, soft_dtw_normalized, window_starts, windowed_sdtw


def _ref_sdtw(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """Textbook soft-DTW DP for one pair x [N, D], y [M, D]."""
    n, m = len(x), len(y)
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = float(((x[i - 1] - y[j - 1]) ** 2).sum())
            a = -np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]]) / gamma
            mx = a.max()
            r[i, j] = c - gamma * (mx + np.log(np.exp(a - mx).sum()))
    return float(r[n, m])


def _hard_dtw(x: np.ndarray, y: np.ndarray) -> float:
    n, m = len(x), len(y)
    r = np.full((n + 1, m + 1), np.inf)
    r[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r[i, j] = ((x[i - 1] - y[j - 1]) ** 2).sum() + min(r[i - 1, j - 1], r[i - 1, j], r[i, j - 1])
    return float(r[n, m])


@pytest.mark.parametrize(("n", "m", "d", "gamma"), [(5, 7, 3, 0.1), (6, 6, 1, 1.0), (1, 4, 2, 0.1), (8, 3, 4, 0.01)])
def test_matches_double_loop(n: int, m: int, d: int, gamma: float) -> None:
    rng = np.random.default_rng(n * 100 + m)
    x = rng.normal(size=(3, n, d))
    y = rng.normal(size=(3, m, d))
    got = soft_dtw(torch.from_numpy(x), torch.from_numpy(y), gamma).numpy()
    want = [_ref_sdtw(x[b], y[b], gamma) for b in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_float32_close_to_reference() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    got = soft_dtw(torch.from_numpy(x).float(), torch.from_numpy(y).float(), 0.1).numpy()
    np.testing.assert_allclose(got, [_ref_sdtw(x[b], y[b], 0.1) for b in range(2)], rtol=1e-4, atol=1e-4)


def test_small_gamma_approaches_hard_dtw() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 7, 2)), rng.normal(size=(2, 5, 2))
    hard = np.array([_hard_dtw(x[b], y[b]) for b in range(2)])
    for gamma, tol in [(1e-2, 0.2), (1e-4, 2e-3)]:
        got = soft_dtw(torch.from_numpy(x), torch.from_numpy(y), gamma).numpy()
        # softmin lies in [min - gamma*log 3, min], so the DP value lies within (N+M)*gamma*log 3 below.
        assert np.all(got <= hard + 1e-9)
        np.testing.assert_allclose(got, hard, atol=tol)


def test_normalized_self_is_zero_and_positive_otherwise() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(4, 6, 3)))
    np.testing.assert_allclose(soft_dtw_normalized(x, x, 0.1).numpy(), 0.0, atol=1e-9)
    y = x + 1.0
    assert torch.all(soft_dtw_normalized(x, y, 0.1) > 0.5)


def test_gradcheck() -> None:
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.normal(size=(2, 4, 2))).requires_grad_(True)
    y = torch.from_numpy(rng.normal(size=(2, 3, 2))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(a, b, 0.5), (x, y), eps=1e-6, atol=1e-5)
    x2 = torch.from_numpy(rng.normal(size=(2, 3, 2))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw_normalized(a, b, 0.1), (x2, y), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("t", "w", "want"),
    [
        (128, 6, list(range(0, 122, 3))),
        (128, 12, list(range(0, 116, 6))),
        (10, 4, [0, 2, 4]),
        (10, 5, [0, 2, 4]),
        (12, 6, [0, 3]),
        (6, 6, []),
        (5, 6, []),
        (50, 0, []),
        (4, 1, [0, 1, 2]),
    ],
)
def test_window_starts(t: int, w: int, want: list[int]) -> None:
    assert window_starts(t, w) == want
    # Independent statement of the rule: start = k * step while start < T - w.
    step = max(w // 2, 1)
    ref = []
    s = 0
    while w >= 1 and s < t - w:
        ref.append(s)
        s += step
    assert want == ref


def test_windowed_matches_loop_over_windows() -> None:
    rng = np.random.default_rng(5)
    yh, y = rng.normal(size=(2, 20, 3)), rng.normal(size=(2, 20, 3))
    w = 6
    vals = []
    for b in range(2):
        for s in range(0, 20 - w, w // 2):
            a, c = yh[b, s : s + w], y[b, s : s + w]
            vals.append(_ref_sdtw(a, c, 0.1) - (_ref_sdtw(a, a, 0.1) + _ref_sdtw(c, c, 0.1)) / 2)
    got = windowed_sdtw(torch.from_numpy(yh), torch.from_numpy(y), w, 0.1)
    np.testing.assert_allclose(float(got), np.mean(vals), rtol=1e-6)


def test_windowed_no_window_is_zero_with_grad() -> None:
    yh = torch.randn(2, 5, 3, requires_grad=True)
    out = windowed_sdtw(yh, torch.randn(2, 5, 3), 6)
    assert float(out.detach()) == 0.0
    out.backward()
    assert yh.grad is not None


def test_shape_errors() -> None:
    with pytest.raises(VistError):
        soft_dtw(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(VistError):
        soft_dtw(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(VistError):
        windowed_sdtw(torch.zeros(1, 10, 2), torch.zeros(1, 11, 2), 4)
