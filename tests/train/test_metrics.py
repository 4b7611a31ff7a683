"""CC and SD-KL against independent computations and crafted traces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks, peak_widths
from scipy.stats import entropy

from vist_rt.errors import VistError
from vist_rt.train.metrics import (
    cc_per_cell,
    noise_ceiling_normalized_cc,
    peak_durations,
    sdkl_from_durations,
    sdkl_per_cell,
    sdkl_scale,
    summary,
)


def _bumps(t: int, centres: list[int], widths: list[int], height: float = 0.8) -> np.ndarray:
    """A trace of triangular bumps of given base widths (frames) on a zero background."""
    x = np.zeros(t)
    for c, w in zip(centres, widths):
        half = w / 2
        idx = np.arange(t)
        x = np.maximum(x, height * np.clip(1 - np.abs(idx - c) / half, 0, None))
    return x


def test_cc_matches_corrcoef() -> None:
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    t[:, 0] += 2 * p[:, 0]
    want = [np.corrcoef(p[:, c], t[:, c])[0, 1] for c in range(5)]
    np.testing.assert_allclose(cc_per_cell(p, t), want, rtol=1e-10, atol=1e-12)


def test_cc_constant_trace_is_zero() -> None:
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    p[:, 1] = 0.4
    t[:, 2] = 0.0
    cc = cc_per_cell(p, t)
    assert cc[1] == 0.0 and cc[2] == 0.0 and cc[0] != 0.0


def test_cc_shape_error() -> None:
    with pytest.raises(VistError):
        cc_per_cell(np.zeros((10, 2)), np.zeros((10, 3)))


def test_peak_durations_match_scipy() -> None:
    x = _bumps(100, [10, 40, 70], [4, 8, 12])
    d = peak_durations(x)
    peaks, _ = find_peaks(x)
    np.testing.assert_allclose(d, peak_widths(x, peaks, rel_height=1.0)[0])
    np.testing.assert_allclose(d, [4, 8, 12], atol=1e-9)


def test_clipping_to_beta() -> None:
    # Above beta, two peaks merge into a plateau at beta: one peak after clipping.
    x = np.array([0, 0.5, 2.0, 1.5, 3.0, 0.5, 0, 0])
    assert len(peak_durations(x, beta=1.0)) == 1
    assert len(peak_durations(x, beta=5.0)) == 2


def _direct_sdkl(dp: np.ndarray, dt: np.ndarray, alpha: float) -> float:
    """Independent SD-KL: explicit Gaussian sums with bandwidth alpha * std(ddof=1), scipy.stats.entropy."""
    hp, ht = alpha * np.std(dp, ddof=1), alpha * np.std(dt, ddof=1)
    grid = np.linspace(min(dp.min() - 3 * hp, dt.min() - 3 * ht), max(dp.max() + 3 * hp, dt.max() + 3 * ht), 200)

    def dens(d: np.ndarray, h: float) -> np.ndarray:
        return np.exp(-0.5 * ((grid[:, None] - d[None, :]) / h) ** 2).sum(1)

    return float(min(max(entropy(dens(dp, hp), dens(dt, ht)), 0.0), 1000.0))


@pytest.mark.parametrize("alpha", [0.3, 0.5])
def test_sdkl_from_durations_matches_direct(alpha: float) -> None:
    rng = np.random.default_rng(2)
    dp, dt = rng.uniform(2, 10, size=12), rng.uniform(3, 12, size=9)
    np.testing.assert_allclose(sdkl_from_durations(dp, dt, alpha), _direct_sdkl(dp, dt, alpha), rtol=1e-8)


def test_sdkl_identical_traces_near_zero() -> None:
    x = _bumps(300, list(range(10, 290, 30)), [4, 6, 8, 10, 12, 6, 8, 4, 10, 12])
    assert sdkl_per_cell(x[:, None], x[:, None])[0] < 1e-9


def test_sdkl_different_widths_large() -> None:
    centres = list(range(15, 285, 30))
    narrow = _bumps(300, centres, [3, 4, 5, 3, 4, 5, 3, 4, 5])
    wide = _bumps(300, centres, [16, 18, 20, 16, 18, 20, 16, 18, 20])
    similar = _bumps(300, centres, [3, 4, 5, 4, 3, 5, 5, 4, 3])
    sd = sdkl_per_cell(np.stack([wide, similar], 1), np.stack([narrow, narrow], 1))
    assert sd[0] > 5.0
    assert sd[1] < 0.1


def test_sdkl_too_few_peaks_and_equal_widths() -> None:
    many = _bumps(200, [20, 60, 100, 140], [4, 6, 8, 10])
    one = _bumps(200, [50], [6])
    flat = np.zeros(200)
    equal = _bumps(200, [20, 60, 100, 140], [6, 6, 6, 6])
    sd = sdkl_per_cell(np.stack([one, many, flat, equal, many], 1), np.stack([many, one, many, many, equal], 1))
    np.testing.assert_array_equal(sd, [1000.0] * 5)


def test_noise_ceiling() -> None:
    out = noise_ceiling_normalized_cc(np.array([0.2, 0.3, 0.1, 0.4]), np.array([0.5, 0.0, -0.1, np.nan]))
    assert out[0] == pytest.approx(0.4)
    assert np.isnan(out[1:]).all()


def test_summary() -> None:
    rng = np.random.default_rng(3)
    t = np.clip(rng.normal(0.3, 0.3, size=(300, 3)), 0, None)
    p = t + 0.1 * rng.normal(size=t.shape)
    p[:, 2] = -t[:, 2]
    s = summary(p, t, ceiling=np.array([0.5, 1.0, 0.0]))
    cc = cc_per_cell(p, t)
    assert s["cc_mean"] == pytest.approx(cc.mean())
    assert s["abs_cc_mean"] == pytest.approx(np.abs(cc).mean())
    assert s["abs_cc_mean"] > s["cc_mean"]
    assert s["sdkl_mean"] == pytest.approx(np.mean(sdkl_per_cell(p, t)))
    assert s["cc_norm"][2] is None
    assert s["cc_norm_mean"] == pytest.approx((cc[0] / 0.5 + cc[1]) / 2)
    assert "cc_norm" not in summary(p, t)


def test_sdkl_on_spikes_per_second_uses_counts_per_bin() -> None:
    """Rates in spikes/s all lie above the clip at 1, so their peaks vanish; per bin they are the published scale."""
    assert sdkl_scale("spikes/s", 30.0) == pytest.approx(1 / 30) and sdkl_scale("counts/bin", 30.0) == 1.0
    rng = np.random.default_rng(4)
    per_bin = 0.05 + rng.gamma(0.6, 0.4, size=(600, 2))  # >= 1.5 spikes/s everywhere
    pred = np.clip(per_bin + 0.05 * rng.normal(size=per_bin.shape), 0.04, None)
    hz = 30.0 * per_bin
    raw = summary(30.0 * pred, hz)
    scaled = summary(30.0 * pred, hz, scale=sdkl_scale("spikes/s", 30.0))
    assert raw["sdkl"] != scaled["sdkl"] and min(raw["sdkl"]) == 1000.0  # clipped flat: no peaks
    assert scaled["sdkl"] == pytest.approx(sdkl_per_cell(pred, per_bin).tolist())
    assert max(scaled["sdkl"]) < 1000.0 and scaled["sdkl_scale"] == pytest.approx(1 / 30)
    assert scaled["cc"] == raw["cc"]  # CC does not depend on the scale


def test_sdkl_noise_baseline_zero_clean_and_saturating_with_noise() -> None:
    """Supp. Fig. 1's baseline: 0 for the clean signal, up as soon as noise is added, then flat (it saturates:
    10 % and 90 % noise score alike), with the 1000 cap counted per ratio."""
    from vist_rt.train.metrics import sdkl_noise_baseline

    result = sdkl_noise_baseline((0.0, 0.1, 0.5, 0.9), trials=8)
    med = {r["ratio"]: r["sdkl_median"] for r in result["rows"]}
    assert med[0.0] == 0.0 and all(r["capped"] == 0 for r in result["rows"][:1])
    assert med[0.1] > 0.1
    assert 0.5 < med[0.9] / med[0.1] < 3.0  # 9x the noise, not 3x the score: it saturates early
    assert all(0 <= r["capped"] <= r["trials"] for r in result["rows"])
    with pytest.raises(VistError, match="noise ratios"):
        sdkl_noise_baseline((1.0,))


def test_summary_counts_cells_at_the_sdkl_cap() -> None:
    from vist_rt.train.metrics import summary

    t = np.linspace(0, 20 * np.pi, 400)
    target = np.stack([0.5 + 0.4 * np.sin(t), 0.5 + 0.4 * np.sin(1.3 * t) * np.sin(0.2 * t)], axis=1)
    flat = np.stack([np.zeros(400), target[:, 1]], axis=1)  # cell 0: no peaks at all -> 1000
    out = summary(flat, target)
    assert out["sdkl"][0] == 1000.0 and out["sdkl_capped"] == sum(v >= 1000.0 for v in out["sdkl"])
