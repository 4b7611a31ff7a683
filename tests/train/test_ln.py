"""The LN baseline: recovers a synthetic LN ground truth, is causal, deterministic, round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vist_rt.errors import VistError
from vist_rt.train.ln import LNModel


def _synthetic(seed: int = 0, t: int = 3000, cells: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features [t, 256, 12] built from a 4x4 grid of 3 latent channels (so pooling + PCA keep the signal)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(t, 4, 4, 3))  # [T, 4, 4, k]
    mix = np.linalg.qr(rng.normal(size=(12, 12)))[0][:3]  # [k, D] orthonormal rows
    up = latent.repeat(4, axis=1).repeat(4, axis=2).reshape(t, 256, 3)  # 16x16 tokens
    feats = (up @ mix).astype(np.float32) + 0.05 * rng.standard_normal(size=(t, 256, 12), dtype=np.float32)
    lags = 8
    decay = np.exp(-np.arange(lags) / 2.0)
    filt = rng.normal(size=(cells, lags, 4, 4, 3)) * decay[None, :, None, None, None]
    g = np.zeros((t, cells))
    for lag in range(lags):
        g[lag:] += np.einsum("tyxk,cyxk->tc", latent[: t - lag], filt[:, lag])
    g /= g.std(0)
    rates = np.logaddexp(0.0, 1.5 * g - 0.5)
    return feats, rates, filt


def _cc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(a[:, c], b[:, c])[0, 1] for c in range(a.shape[1])])


@pytest.fixture(scope="module")
def fitted() -> tuple[LNModel, np.ndarray, np.ndarray]:
    feats, rates, _ = _synthetic()
    model = LNModel.fit(feats[:2400], rates[:2400], lags=8, grid=4, pca_dims=3)
    return model, feats, rates


def test_recovers_ln_ground_truth(fitted: tuple[LNModel, np.ndarray, np.ndarray]) -> None:
    model, feats, rates = fitted
    pred = model.predict(feats[2400:])
    assert pred.shape == (600, 3)
    # The first frames of a held-out segment lack history; score after the filter length.
    cc = _cc(pred[8:], rates[2408:])
    assert cc.min() > 0.95, cc
    assert np.all(pred >= 0)
    # The nonlinearity matters: it should do at least as well as the linear stage.
    lin = model.predict_linear(feats[2400:])
    assert np.mean((pred[8:] - rates[2408:]) ** 2) <= np.mean((lin[8:] - rates[2408:]) ** 2)


def test_causal(fitted: tuple[LNModel, np.ndarray, np.ndarray]) -> None:
    model, feats, _ = fitted
    x = feats[:200].copy()
    base = model.predict(x)
    x[120:] = np.random.default_rng(9).normal(size=x[120:].shape).astype(np.float32)
    changed = model.predict(x)
    np.testing.assert_array_equal(base[:120], changed[:120])
    assert not np.allclose(base[120:], changed[120:])


def test_deterministic_and_round_trip(fitted: tuple[LNModel, np.ndarray, np.ndarray]) -> None:
    model, feats, rates = fitted
    again = LNModel.fit(feats[:2400], rates[:2400], lags=8, grid=4, pca_dims=3)
    for k, v in model.to_dict().items():
        np.testing.assert_array_equal(v, again.to_dict()[k], err_msg=k)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.to_dict().items()}
    assert all(isinstance(v, np.ndarray) for v in model.to_dict().values())
    loaded = LNModel.from_dict(state)
    np.testing.assert_array_equal(loaded.predict(feats[2400:2500]), model.predict(feats[2400:2500]))


def test_pixels_and_errors() -> None:
    rng = np.random.default_rng(1)
    pix = rng.normal(size=(300, 10 * 10, 1))  # pixels as [T, H*W, 1]
    rates = np.logaddexp(0.0, pix[:, :50, 0].mean(1, keepdims=True) * 5)
    m = LNModel.fit(pix, rates, lags=3, grid=5, pca_dims=4)
    assert m.predict(pix).shape == (300, 1)
    with pytest.raises(VistError):
        m.predict(rng.normal(size=(10, 64, 1)))
    with pytest.raises(VistError):
        LNModel.fit(pix, rates[:-1], lags=3)
    with pytest.raises(VistError):
        LNModel.fit(pix[:10], rates[:10], lags=8)
    with pytest.raises(VistError):
        LNModel.from_dict({"pool": np.zeros(3)})
