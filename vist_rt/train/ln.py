"""Linear-nonlinear (LN) baseline: ridge-fitted causal spatio-temporal filter + per-cell softplus.

Pipeline, from the same per-frame inputs the Vi-ST sees (``[T, N, D]`` tokens; pixels as ``[T, H*W, 1]``):

1. pool the N tokens to a small grid (``grid x grid`` by 2-D adaptive average pooling when N is a
   square, else 1-D adaptive pooling to ``grid**2`` groups);
2. PCA of the D channels to ``pca_dims`` (fitted on the pooled training tokens), z-scored per feature;
3. a causal design of the last ``lags`` frames (frames before the start count as the training mean);
4. ridge regression (closed form via one eigendecomposition), the penalty chosen on the last
   ``val_fraction`` of the training frames (lowest validation MSE), then refitted on all frames;
5. per cell ``rate = softplus(a * g + b)`` on the linear output g, fitted by least squares (L-BFGS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vist_rt.errors import VistError

_MAX_PCA_ROWS = 50_000
_CHUNK = 256


def _as_features(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(features)
    if x.dim() != 3:
        raise VistError(f"LN features must be [T, N, D] (pixels as [T, H*W, 1]), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    return x


def _pool(x: torch.Tensor, mode: int, out_h: int, out_w: int) -> np.ndarray:
    """Pool tokens ``[T, N, D]`` to ``[T, G, D]`` float64 (mode 2: square 2-D grid, mode 1: 1-D groups)."""
    t, n, d = x.shape
    out = []
    for s in range(0, t, _CHUNK):
        c = x[s : s + _CHUNK]
        if mode == 2:
            side = math.isqrt(n)
            img = c.reshape(len(c), side, side, d).permute(0, 3, 1, 2)  # [t, D, s, s]
            p = F.adaptive_avg_pool2d(img, (out_h, out_w)).permute(0, 2, 3, 1).reshape(len(c), -1, d)
        else:
            p = F.adaptive_avg_pool1d(c.transpose(1, 2), out_h * out_w).transpose(1, 2)
        out.append(p.double().numpy())
    return np.concatenate(out) if out else np.zeros((0, out_h * out_w, d))


def _lagged(z: np.ndarray, lags: int) -> np.ndarray:
    """Causal design ``[T, lags * F]`` from ``z [T, F]``: block l holds z[t - l] (zeros before the start)."""
    t, f = z.shape
    x = np.zeros((t, lags * f))
    for lag in range(min(lags, t)):
        x[lag:, lag * f : (lag + 1) * f] = z[: t - lag]
    return x


def _ridge_eig(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre x ``[T, P]``, y ``[T, C]``; return (x mean, y mean, eigvals, eigvecs of X'X, V' X' y)."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    s, v = np.linalg.eigh(xc.T @ xc)
    s = np.clip(s, 0.0, None)
    return xm, ym, s, v, v.T @ (xc.T @ (y - ym))


def _softplus(u: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, u)


@dataclass
class LNModel:
    """A fitted LN model; all state is numpy arrays (see ``to_dict``)."""

    pool: np.ndarray  # [3] int: mode (2 = square grid, 1 = groups), out_h, out_w
    n_tokens: int
    pca_mean: np.ndarray  # [D]
    pca_components: np.ndarray  # [D, k]
    feat_mean: np.ndarray  # [F], F = G * k
    feat_std: np.ndarray  # [F]
    lags: int
    weights: np.ndarray  # [lags * F, C]
    bias: np.ndarray  # [C]
    nl_scale: np.ndarray  # [C]
    nl_shift: np.ndarray  # [C]
    ridge: float

    @classmethod
    def fit(
        cls,
        features: np.ndarray | torch.Tensor,
        rates: np.ndarray | torch.Tensor,
        lags: int = 15,
        *,
        grid: int = 4,
        pca_dims: int = 8,
        ridge_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
        val_fraction: float = 0.2,
    ) -> LNModel:
        """Fit to features ``[T, N, D]`` and rates ``[T, C]``; ridge grid values are relative to mean eig(X'X)."""
        x = _as_features(features)
        y = np.asarray(rates, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        t, n, d = x.shape
        if y.ndim != 2 or y.shape[0] != t:
            raise VistError(f"LN rates must be [T, C] with T = {t}, got shape {y.shape}")
        if lags < 1 or grid < 1 or pca_dims < 1:
            raise VistError("LN lags, grid and pca_dims must be >= 1")
        if not 0 < val_fraction < 1:
            raise VistError(f"LN val_fraction must be in (0, 1), got {val_fraction}")
        n_val = max(1, round(t * val_fraction))
        if t - n_val < 2 * lags:
            raise VistError(f"LN fit needs more frames than {t} for {lags} lags")

        side = math.isqrt(n)
        if side * side == n:
            pool = np.array([2, min(grid, side), min(grid, side)], dtype=np.int64)
        else:
            pool = np.array([1, min(grid * grid, n), 1], dtype=np.int64)
        pooled = _pool(x, *(int(v) for v in pool))  # [T, G, D]

        rows = pooled.reshape(-1, d)
        if len(rows) > _MAX_PCA_ROWS:
            rows = rows[np.linspace(0, len(rows) - 1, _MAX_PCA_ROWS).astype(np.int64)]
        mean = rows.mean(0)
        rc = rows - mean
        _, evecs = np.linalg.eigh(rc.T @ rc / max(len(rc) - 1, 1))
        k = min(pca_dims, d)
        comps = evecs[:, ::-1][:, :k].copy()
        # Deterministic sign: the largest-magnitude entry of each component is positive.
        signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(k)])
        comps *= np.where(signs == 0, 1.0, signs)

        z = ((pooled - mean) @ comps).reshape(t, -1)  # [T, F]
        fm, fs = z.mean(0), z.std(0)
        fs = np.where(fs > 0, fs, 1.0)
        xd = _lagged((z - fm) / fs, lags)  # [T, P]

        # Validation split: the last n_val frames (their lag history comes from the training part).
        xm, ym, s, v, vty = _ridge_eig(xd[:-n_val], y[:-n_val])
        scale = max(float(s.mean()), 1e-12)
        best, best_err = ridge_grid[0], np.inf
        for r in ridge_grid:
            w = v @ (vty / (s + r * scale)[:, None])
            err = float(np.mean(((xd[-n_val:] - xm) @ w + ym - y[-n_val:]) ** 2))
            if err < best_err:
                best, best_err = r, err
        xm, ym, s, v, vty = _ridge_eig(xd, y)
        w = v @ (vty / (s + best * max(float(s.mean()), 1e-12))[:, None])
        b = ym - xm @ w
        g = xd @ w + b
        a, c = _fit_softplus(g, y)
        return cls(pool, n, mean, comps, fm, fs, lags, w, b, a, c, best)

    def _design(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        x = _as_features(features)
        if x.shape[1] != self.n_tokens or x.shape[2] != self.pca_mean.shape[0]:
            raise VistError(
                f"LN model expects [T, {self.n_tokens}, {self.pca_mean.shape[0]}] features, got {tuple(x.shape)}"
            )
        pooled = _pool(x, *(int(v) for v in self.pool))
        z = ((pooled - self.pca_mean) @ self.pca_components).reshape(x.shape[0], -1)
        return _lagged((z - self.feat_mean) / self.feat_std, self.lags)

    def predict_linear(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Linear stage output g ``[T, C]``."""
        return self._design(features) @ self.weights + self.bias

    def predict(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted rates ``[T, C]`` (causal: frame t uses frames t - lags + 1 .. t)."""
        return _softplus(self.nl_scale * self.predict_linear(features) + self.nl_shift)

    def to_dict(self) -> dict[str, np.ndarray]:
        """All state as named numpy arrays (safetensors-friendly)."""
        return {
            "pool": self.pool.astype(np.int64),
            "n_tokens": np.array([self.n_tokens], dtype=np.int64),
            "pca_mean": self.pca_mean,
            "pca_components": self.pca_components,
            "feat_mean": self.feat_mean,
            "feat_std": self.feat_std,
            "lags": np.array([self.lags], dtype=np.int64),
            "weights": self.weights,
            "bias": self.bias,
            "nl_scale": self.nl_scale,
            "nl_shift": self.nl_shift,
            "ridge": np.array([self.ridge], dtype=np.float64),
        }

    @classmethod
    def from_dict(cls, state: dict[str, np.ndarray]) -> LNModel:
        """Rebuild from ``to_dict`` output (arrays may be numpy or torch)."""
        try:
            arr = {k: np.asarray(v) for k, v in state.items()}
            return cls(
                pool=arr["pool"].astype(np.int64),
                n_tokens=int(arr["n_tokens"][0]),
                pca_mean=arr["pca_mean"].astype(np.float64),
                pca_components=arr["pca_components"].astype(np.float64),
                feat_mean=arr["feat_mean"].astype(np.float64),
                feat_std=arr["feat_std"].astype(np.float64),
                lags=int(arr["lags"][0]),
                weights=arr["weights"].astype(np.float64),
                bias=arr["bias"].astype(np.float64),
                nl_scale=arr["nl_scale"].astype(np.float64),
                nl_shift=arr["nl_shift"].astype(np.float64),
                ridge=float(arr["ridge"][0]),
            )
        except KeyError as e:
            raise VistError(f"LN model state is missing {e.args[0]!r}") from None


def _fit_softplus(g: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (a, b) minimising ``sum_t (softplus(a * g + b) - y)^2``; g, y ``[T, C]`` -> a, b ``[C]``."""
    # Start from the line through inverse-softplus targets (clipped away from 0).
    yc = np.clip(y, 1e-3, None)
    inv = np.where(yc > 20, yc, np.log(np.expm1(np.minimum(yc, 20))))
    gm, im = g.mean(0), inv.mean(0)
    var = ((g - gm) ** 2).mean(0)
    a0 = np.where(var > 0, ((g - gm) * (inv - im)).mean(0) / np.where(var > 0, var, 1.0), 1.0)
    b0 = im - a0 * gm
    gt, yt = torch.from_numpy(g), torch.from_numpy(y)
    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((F.softplus(a * gt + b) - yt) ** 2).mean(0).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return a.detach().numpy().copy(), b.detach().numpy().copy()
