"""The RGC duration analysis that chose the CMST windows (paper Fig. 3): the durations of the recorded rates'
peaks, their histogram, its peaks, and the causal windows they suggest (a window truncated just after a peak)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.signal import find_peaks

from vist_rt.errors import VistError
from vist_rt.model.config import PUBLISHED_WINDOWS
from vist_rt.train.metrics import peak_durations

SMOOTH_FRAMES = 1.0  # s.d. (frames) of the Gaussian that smooths the 1-frame histogram before its peaks are found
PROMINENCE = 0.02  # a histogram peak must stand this fraction of all durations above its surroundings
MAX_WINDOWS = 7  # as many windows as the published configuration has beyond the current frame


@dataclasses.dataclass(frozen=True)
class DurationReport:
    """What the analysis found; durations in frames (bins of the dataset's frame rate)."""

    fps: float
    counts: np.ndarray  # int64 [B] durations per 1-frame bin [b, b+1)
    smoothed: np.ndarray  # float64 [B] the histogram smoothed (fraction of all durations per bin)
    peaks: tuple[float, ...]  # durations (frames, bin centres) at the histogram's peaks, most prominent first
    windows: tuple[int, ...]  # the odd window just after each peak, longest first
    blocks: tuple[tuple[int, ...], ...]  # the windows as a CMST configuration: 1 plus a share per block
    n_durations: int
    per_movie: dict[str, int]  # durations found per movie

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "fps": self.fps,
            "n_durations": self.n_durations,
            "per_movie": dict(self.per_movie),
            "histogram_counts": self.counts.tolist(),
            "histogram_smoothed": [float(v) for v in self.smoothed],
            "peaks_frames": list(self.peaks),
            "peaks_ms": [1000.0 * p / self.fps for p in self.peaks],
            "windows": list(self.windows),
            "suggested_windows": [list(b) for b in self.blocks],
            "published_windows": [list(b) for b in PUBLISHED_WINDOWS],
            "smooth_frames": SMOOTH_FRAMES,
            "prominence": PROMINENCE,
        }


def window_after(peak: float) -> int:
    """The smallest odd window (frames) longer than a peak duration: truncation just after the peak."""
    w = int(np.floor(peak)) + 1
    return w if w % 2 else w + 1


def _split(windows: list[int], blocks: int) -> tuple[tuple[int, ...], ...]:
    """Longest-first windows into `blocks` CMST blocks (earlier blocks the longer ones), each with window 1."""
    groups = np.array_split(np.array(windows, dtype=np.int64), min(blocks, len(windows)))
    return tuple((1, *sorted(int(w) for w in g)) for g in groups if len(g))


def analyse_durations(
    rates: Mapping[str, np.ndarray], *, fps: float, scale: float, beta: float = 1.0, blocks: int = 4
) -> DurationReport:
    """Fig. 3 on recorded rates `{movie: [T, C]}`: every cell's peak durations (SD-KL's: the traces times `scale`,
    clipped to [0, beta], widths at full height), pooled; a 1-frame histogram, smoothed; its prominent peaks; and
    for each the odd window just after it, split into `blocks` CMST blocks."""
    found: list[np.ndarray] = []
    per_movie: dict[str, int] = {}
    for name, r in rates.items():
        r = np.asarray(r, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] < 3:
            raise VistError(f"movie {name}: rates must be [T, C] with T >= 3, got {list(r.shape)}")
        d = [peak_durations(r[:, c] * scale, beta) for c in range(r.shape[1])]
        per_movie[name] = int(sum(len(x) for x in d))
        found.extend(d)
    durations = np.concatenate(found) if found else np.zeros(0)
    if len(durations) < 10:
        raise VistError(f"the recorded rates have {len(durations)} peaks; the duration analysis needs at least 10")
    edges = np.arange(0.0, np.ceil(durations.max()) + 2.0)
    counts, _ = np.histogram(durations, bins=edges)
    x = np.arange(-4 * SMOOTH_FRAMES, 4 * SMOOTH_FRAMES + 1)
    kernel = np.exp(-0.5 * (x / SMOOTH_FRAMES) ** 2)
    smoothed = np.convolve(counts / counts.sum(), kernel / kernel.sum(), mode="same")
    idx, props = find_peaks(np.concatenate([[0.0], smoothed, [0.0]]), prominence=PROMINENCE)
    order = np.argsort(-props["prominences"])[:MAX_WINDOWS]
    peaks = tuple(float(idx[i] - 1 + 0.5) for i in order)  # bin centres, most prominent first
    windows = sorted({window_after(p) for p in peaks}, reverse=True)
    return DurationReport(
        fps=float(fps),
        counts=counts.astype(np.int64),
        smoothed=smoothed,
        peaks=peaks,
        windows=tuple(windows),
        blocks=_split(windows, blocks) if windows else (),
        n_durations=len(durations),
        per_movie=per_movie,
    )


def plot_durations(report: DurationReport, path: Any) -> None:
    """The histogram (bars), its smoothed form, the peaks and the suggested and published windows, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vist_rt.train.evaluate import save_figure

    frames = np.arange(len(report.counts)) + 0.5
    fig, ax = plt.subplots(figsize=(8, 3.5))
    total = max(1, int(report.counts.sum()))
    ax.bar(frames, report.counts / total, width=1.0, color="0.75", label=f"{report.n_durations} peak durations")
    ax.plot(frames, report.smoothed, color="C0", lw=1.5, label="smoothed")
    for i, p in enumerate(report.peaks):
        ax.axvline(p, color="C1", lw=1, ls="--", label="peaks" if i == 0 else None)
    for i, w in enumerate(report.windows):
        ax.axvline(w, color="C2", lw=1, label="suggested windows" if i == 0 else None)
    published = sorted({w for ws in PUBLISHED_WINDOWS for w in ws if w > 1})
    ax.plot(published, [0] * len(published), "v", color="C3", ms=7, clip_on=False, label="published windows")
    ax.set_xlabel(f"duration (frames at {report.fps:g} Hz)")
    ax.set_ylabel("fraction of durations")
    ax.set_xlim(0, max(len(report.counts), max(published) + 2))
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(plt, fig, path)
