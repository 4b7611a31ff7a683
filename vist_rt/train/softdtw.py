"""Soft-DTW (Cuturi & Blondel 2017) in torch, differentiable through autograd.

The dynamic programme is computed one anti-diagonal at a time, vectorised over the batch and the
diagonal, so the Python loop runs ``N + M - 1`` times rather than ``N * M``.
"""

from __future__ import annotations

import torch

from vist_rt.errors import VistError

# Stands in for +inf on the DP borders: exp(-_BIG / gamma) underflows to exactly 0, so it acts
# like +inf in the soft-min while keeping logsumexp and its gradient finite (a true inf gives NaN
# gradients when all three predecessors are inf).
_BIG = 1e10


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 3 or y.dim() != 3:
        raise VistError(f"soft-DTW needs [B, N, D] and [B, M, D], got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise VistError(f"soft-DTW batch/feature sizes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.shape[1] < 1 or y.shape[1] < 1:
        raise VistError("soft-DTW needs series with at least one time step")


def pairwise_sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean cost ``[B, N, M]`` between the steps of x ``[B, N, D]`` and y ``[B, M, D]``."""
    diff = x.unsqueeze(2) - y.unsqueeze(1)  # [B, N, M, D]
    return (diff * diff).sum(-1)


def soft_dtw(x: torch.Tensor, y: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """Soft-DTW value per batch item, ``[B]``, between x ``[B, N, D]`` and y ``[B, M, D]``.

    ``R[i, j] = cost[i, j] + softmin(R[i-1, j-1], R[i-1, j], R[i, j-1])`` with
    ``softmin(a) = -gamma * logsumexp(-a / gamma)``, ``R[0, 0] = 0`` and +inf borders; returns ``R[N, M]``.
    """
    _check_pair(x, y)
    if gamma <= 0:
        raise VistError(f"soft-DTW gamma must be > 0, got {gamma}")
    cost = pairwise_sq_dist(x, y)  # [B, N, M]
    b, n, m = cost.shape
    dev, dt = cost.device, cost.dtype

    # Skew the cost so that diagonal k (= i + j with 1-based i, j) is row k - 2, indexed by i - 1.
    ks = torch.arange(2, n + m + 1, device=dev)  # [K]
    ii = torch.arange(1, n + 1, device=dev)  # [N]
    jj = ks[:, None] - ii[None, :]  # [K, N] 1-based j on diagonal k
    valid = (jj >= 1) & (jj <= m)  # [K, N]
    skew = cost[:, (ii - 1)[None, :].expand_as(jj), (jj - 1).clamp(0, m - 1)]  # [B, K, N]
    big = torch.tensor(_BIG, device=dev, dtype=dt)
    skew = torch.where(valid[None], skew, big)

    # Diagonals are stored as [B, N + 1] tensors indexed by i = 0..N (R[i, k - i]).
    inf_col = torch.full((b, 1), _BIG, device=dev, dtype=dt)
    prev2 = torch.full((b, n + 1), _BIG, device=dev, dtype=dt)  # k = 0: only R[0, 0] = 0
    prev2 = torch.cat([torch.zeros((b, 1), device=dev, dtype=dt), prev2[:, 1:]], dim=1)
    prev1 = torch.full((b, n + 1), _BIG, device=dev, dtype=dt)  # k = 1: R[0, 1], R[1, 0] are borders
    for k in range(2, n + m + 1):
        cand = torch.stack([prev2[:, :-1], prev1[:, :-1], prev1[:, 1:]], dim=0)  # [3, B, N]
        smin = -gamma * torch.logsumexp(-cand / gamma, dim=0)  # [B, N]
        cur = skew[:, k - 2] + smin
        cur = torch.where(valid[k - 2][None], cur, big)
        prev2, prev1 = prev1, torch.cat([inf_col, cur], dim=1)
    return prev1[:, n]


def soft_dtw_normalized(x: torch.Tensor, y: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """Normalised soft-DTW ``sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2``, ``[B]`` (one batched DP)."""
    _check_pair(x, y)
    if x.shape[1] != y.shape[1]:
        # Different lengths cannot be stacked into one call; three calls instead.
        return soft_dtw(x, y, gamma) - (soft_dtw(x, x, gamma) + soft_dtw(y, y, gamma)) / 2
    b = x.shape[0]
    vals = soft_dtw(torch.cat([x, x, y]), torch.cat([y, x, y]), gamma)  # [3B]
    return vals[:b] - (vals[b : 2 * b] + vals[2 * b :]) / 2


def window_starts(t: int, w: int) -> list[int]:
    """Window starts ``0, w//2, 2*(w//2), ...`` while ``start < t - w`` (the published rule).

    The step is ``max(w // 2, 1)`` so that ``w == 1`` still advances; ``w < 1`` gives no windows.
    Note the rule leaves out the last window that would end exactly at ``t``.
    """
    if w < 1:
        return []
    return list(range(0, t - w, max(w // 2, 1)))


def windowed_sdtw(y_hat: torch.Tensor, y: torch.Tensor, w: int, gamma: float = 0.1) -> torch.Tensor:
    """Mean normalised soft-DTW over windows of w frames of y_hat and y ``[B, T, C]``; a scalar.

    Each window is a multivariate series (w steps x C cells). All windows of all batch items go
    into one soft-DTW call. When no window fits (``w < 1`` or ``T <= w``) it returns 0 (kept in
    the graph so ``backward`` still works).
    """
    if y_hat.shape != y.shape or y_hat.dim() != 3:
        raise VistError(f"windowed soft-DTW needs equal [B, T, C], got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    starts = window_starts(y_hat.shape[1], w)
    if not starts:
        return (y_hat * 0).sum() + (y * 0).sum()
    step = max(w // 2, 1)
    nw = len(starts)
    # unfold: [B, n_all, C, w] with starts 0, step, ... while start <= T - w; keep the first nw.
    xa = y_hat.unfold(1, w, step)[:, :nw].permute(0, 1, 3, 2).reshape(-1, w, y_hat.shape[2])
    ya = y.unfold(1, w, step)[:, :nw].permute(0, 1, 3, 2).reshape(-1, w, y.shape[2])
    return soft_dtw_normalized(xa, ya, gamma).mean()
