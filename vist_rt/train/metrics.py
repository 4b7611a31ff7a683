"""Evaluation metrics as published: per-cell Pearson CC and SD-KL (supplement Algorithm 1)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import find_peaks, peak_widths
from scipy.special import rel_entr
from scipy.stats import gaussian_kde

from vist_rt.errors import VistError

SDKL_MAX = 1000.0
GRID_POINTS = 200
GRID_BANDWIDTHS = 3.0


def _check_traces(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim != 2 or p.shape != t.shape:
        raise VistError(f"metrics need equal [T, C] prediction and target, got {p.shape} and {t.shape}")
    if p.shape[0] < 2:
        raise VistError(f"metrics need at least 2 frames, got {p.shape[0]}")
    return p, t


def cc_per_cell(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson correlation per cell over time, ``[C]``, from pred/target ``[T, C]``; NaN (constant trace) -> 0."""
    p, t = _check_traces(pred, target)
    pc = p - p.mean(0)
    tc = t - t.mean(0)
    den = np.sqrt((pc * pc).sum(0) * (tc * tc).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = (pc * tc).sum(0) / den
    # A constant trace has no defined correlation (rounding can leave a tiny non-zero value): 0.
    const = (np.ptp(p, axis=0) == 0) | (np.ptp(t, axis=0) == 0)
    cc = np.where(np.isfinite(cc) & ~const, cc, 0.0)
    return np.clip(cc, -1.0, 1.0)


def peak_durations(trace: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Durations (frames) of the peaks of one trace ``[T]`` clipped to [0, beta]; widths at full relative height.

    Peaks are SciPy ``find_peaks(x, height=0)`` peaks; after clipping to [0, beta] a peak is strictly
    above a neighbour >= 0, so its height is > 0.
    """
    x = np.clip(np.asarray(trace, dtype=np.float64), 0.0, beta)
    peaks, _ = find_peaks(x, height=0)
    if len(peaks) == 0:
        return np.zeros(0)
    return peak_widths(x, peaks, rel_height=1.0)[0]


def kde_bandwidth(kde: gaussian_kde) -> float:
    """Bandwidth of a 1-D SciPy KDE: ``sqrt(kde.covariance) = kde.factor * std(data, ddof=1)``."""
    return float(np.sqrt(kde.covariance[0, 0]))


def sdkl_from_durations(d_pred: np.ndarray, d_target: np.ndarray, alpha: float = 0.3) -> float:
    """KL(P_pred || P_target) of duration KDEs (bandwidth factor alpha) on a shared 200-point grid, in [0, 1000].

    Grid: from ``min over both sets of (min(D) - 3 h_D)`` to ``max over both sets of (max(D) + 3 h_D)``,
    h_D the set's KDE bandwidth. Each density is normalised to sum 1 on the grid. Fewer than 2
    durations in either set, a singular KDE (e.g. all durations equal), or a non-finite KL -> 1000.
    """
    dp = np.asarray(d_pred, dtype=np.float64).ravel()
    dt = np.asarray(d_target, dtype=np.float64).ravel()
    if len(dp) < 2 or len(dt) < 2:
        return SDKL_MAX
    if np.ptp(dp) == 0 or np.ptp(dt) == 0:
        return SDKL_MAX
    try:
        kp = gaussian_kde(dp, bw_method=alpha)
        kt = gaussian_kde(dt, bw_method=alpha)
    except np.linalg.LinAlgError:
        return SDKL_MAX
    hp, ht = kde_bandwidth(kp), kde_bandwidth(kt)
    lo = min(dp.min() - GRID_BANDWIDTHS * hp, dt.min() - GRID_BANDWIDTHS * ht)
    hi = max(dp.max() + GRID_BANDWIDTHS * hp, dt.max() + GRID_BANDWIDTHS * ht)
    grid = np.linspace(lo, hi, GRID_POINTS)
    p = kp(grid)
    q = kt(grid)
    if not (p.sum() > 0 and q.sum() > 0):
        return SDKL_MAX
    p = p / p.sum()
    q = q / q.sum()
    kl = float(rel_entr(p, q).sum())
    if not np.isfinite(kl):
        return SDKL_MAX
    return float(np.clip(kl, 0.0, SDKL_MAX))


def sdkl_per_cell(pred: np.ndarray, target: np.ndarray, alpha: float = 0.3, beta: float = 1.0) -> np.ndarray:
    """SD-KL per cell, ``[C]``, from pred/target ``[T, C]`` (supplement Algorithm 1; alpha 0.3, released code 0.5)."""
    p, t = _check_traces(pred, target)
    if not (np.isfinite(alpha) and alpha > 0):
        raise VistError(f"SD-KL alpha must be a finite number > 0, got {alpha}")
    out = np.empty(p.shape[1])
    for c in range(p.shape[1]):
        out[c] = sdkl_from_durations(peak_durations(p[:, c], beta), peak_durations(t[:, c], beta), alpha)
    return out


def noise_ceiling_normalized_cc(cc: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """``cc / ceiling`` per cell, ``[C]``, where ceiling > 0 (finite); NaN elsewhere (no reliable ceiling)."""
    cc = np.asarray(cc, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    if cc.shape != ceiling.shape:
        raise VistError(f"CC and noise ceiling differ in shape: {cc.shape} vs {ceiling.shape}")
    ok = np.isfinite(ceiling) & (ceiling > 0)
    return np.where(ok, cc / np.where(ok, ceiling, 1.0), np.nan)


def sdkl_scale(units: str, fps: float) -> float:
    """Factor that puts rates in `units` into spikes per frame bin, the scale SD-KL's clip to [0, 1] assumes.

    The published traces are trial-averaged counts per bin; rates in spikes/s (our simulator, most labs) are
    divided by the bin rate. Other units are taken as counts per bin already.
    """
    if units.strip().lower() in ("spikes/s", "hz", "spikes per second"):
        return 1.0 / float(fps)
    return 1.0


def summary(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha: float = 0.3,
    ceiling: np.ndarray | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Population metrics for pred/target ``[T, C]``: mean CC, mean |CC|, mean SD-KL, per-cell lists.

    SD-KL is computed on the traces times `scale` (see `sdkl_scale`). With a ceiling ``[C]``: also per-cell
    and mean (over cells with a ceiling) noise-ceiling-normalised CC.
    """
    cc = cc_per_cell(pred, target)
    sd = sdkl_per_cell(np.asarray(pred) * scale, np.asarray(target) * scale, alpha=alpha)
    out: dict[str, Any] = {
        "cc_mean": float(cc.mean()),
        "abs_cc_mean": float(np.abs(cc).mean()),
        "sdkl_mean": float(sd.mean()),
        "sdkl_capped": int((sd >= SDKL_MAX).sum()),  # cells at the cap: their SD-KL says only "no overlap"
        "cc": cc.tolist(),
        "sdkl": sd.tolist(),
        "alpha": float(alpha),
        "sdkl_scale": float(scale),
    }
    if ceiling is not None:
        ncc = noise_ceiling_normalized_cc(cc, ceiling)
        out["cc_norm"] = [None if np.isnan(v) else float(v) for v in ncc]
        out["cc_norm_mean"] = float(np.nanmean(ncc)) if np.isfinite(ncc).any() else float("nan")
    return out


NOISE_RATIOS = tuple(round(0.1 * k, 1) for k in range(10))  # 0 % to 90 %, the supplement's baseline


def sdkl_noise_baseline(
    ratios: tuple[float, ...] = NOISE_RATIOS,
    *,
    frames: int = 3000,
    periods: tuple[float, ...] = (17.0, 29.0, 47.0),
    trials: int = 20,
    alpha: float = 0.3,
    seed: int = 0,
) -> dict[str, Any]:
    """The supplement's SD-KL baseline (Supp. Fig. 1): SD-KL of a sine signal with noise added at each ratio
    against the clean signal. Signal: the sum of sines of `periods` (frames), scaled to [0, 1] (counts per bin,
    SD-KL's clip range; several periods so that its peak durations vary: one sine's are all equal, a singular
    KDE); at ratio r the prediction is (1 - r) s + r u, u uniform on [0, 1] per frame. Per ratio: mean and s.d.
    over `trials` noise draws, and how many hit the 1000 cap."""
    if any(not 0 <= r < 1 for r in ratios):
        raise VistError(f"noise ratios must lie in [0, 1), got {ratios}")
    t = np.arange(frames)
    clean = np.sum([np.sin(2 * np.pi * t / p) for p in periods], axis=0)
    clean = (clean - clean.min()) / np.ptp(clean)
    target = peak_durations(clean)
    rng = np.random.default_rng(seed)
    rows = []
    for r in ratios:
        scores = np.array([sdkl_from_durations(peak_durations((1 - r) * clean + r * rng.random(frames)), target, alpha)
                           for _ in range(trials)])  # fmt: skip
        rows.append({"ratio": float(r), "sdkl_mean": float(scores.mean()), "sdkl_sd": float(scores.std()),
                     "sdkl_median": float(np.median(scores)), "capped": int((scores >= SDKL_MAX).sum()),
                     "trials": trials})  # fmt: skip
    return {"alpha": alpha, "frames": frames, "periods": list(periods), "seed": seed, "rows": rows}
