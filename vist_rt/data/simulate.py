"""A simulated retina with known ground truth, written in the dataset format (docs/data.md).

Cells are linear-nonlinear-Poisson units:

1. contrast: x_t = (frame_t - 128) / 128, float32 `[T, H*W]`;
2. spatial: s = x @ F, F `[H*W, C]` a difference of Gaussians per cell (centre normalised to sum 1, surround
   to sum `surround`), times the polarity (+1 ON, -1 OFF);
3. temporal: causal convolution with a biphasic kernel k_c (fast gamma lobe minus a slower, weaker one,
   `kernel_s` long), the stimulus before frame 0 taken equal to frame 0 (no start-up transient);
4. normalisation by the cell's generator s.d. measured once on a calibration movie (so a cell's scale does
   not depend on the movie it is shown);
5. rate = r_max * softplus(gain * (z - threshold)) in spikes/s (the ground truth, `truth`);
6. counts ~ Poisson(rate / fps) per frame bin, independently over R trials (`spikes`), and
   `rates` = trial mean of counts * fps.

Everything is drawn from `seed` (cells from `[seed, 0]`, movie m from `[seed, 1, m]`, spikes from
`[seed, 2, m]`), so the same arguments give identical arrays.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vist_rt.data.dataset import open_dataset, write_dataset
from vist_rt.errors import VistError
from vist_rt.files import check_output_file
from vist_rt.movie import SyntheticMovie

CALIBRATION_FRAMES = 240  # frames of the calibration movie that fix each cell's generator scale
FPS_RANGE = (0.1, 1000.0)  # Hz: frame (= bin) rates the simulator accepts
RF_MASK_SIGMAS = 1.5  # a cell's RF mask: pixels within this many centre sigmas of its centre
CHUNK_PIXELS = 1 << 26  # pixels converted to float contrast at a time (256 MiB); a demo-sized movie is one chunk
SUBUNITS_PER_CELL = 8  # bipolar-like subunits inside a cell's centre (when `subunits` > 0)
SUBUNIT_SIGMA = 0.35  # a subunit's Gaussian sigma, as a fraction of the retina's mean centre sigma


def _pair(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise VistError(f"simulate: {name} must be two numbers LO,HI, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and low <= lo <= hi <= high):
        raise VistError(f"simulate: {name} must satisfy {low:g} <= LO <= HI <= {high:g}, got {lo:g},{hi:g}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class RetinaSettings:
    """What kind of retina is simulated (the defaults: the LNP retina of the demo data, drawn bit for bit as before).

    cell_size: a cell's centre sigma, as fractions (LO, HI) of the frame's short side.
    rate: the cells' peak-rate scale r_max, spikes/s (LO, HI).
    subunits: weight in [0, 1] of a spatially nonlinear pathway: the centre pools rectified subunits
        (SUBUNITS_PER_CELL Gaussians within it) instead of pixels linearly; 0 = linear (LNP).
    adaptation: strength >= 0 of contrast adaptation: the drive's gain is divided by its recent size
        (an exponential average over `adaptation_s` seconds) relative to its size on the calibration movie.
    fano: spike-count variance / mean >= 1: 1 = Poisson, above it gamma-Poisson (more trial-to-trial noise).
    """

    cell_size: tuple[float, float] = (0.035, 0.06)
    rate: tuple[float, float] = (5.0, 15.0)
    subunits: float = 0.0
    adaptation: float = 0.0
    adaptation_s: float = 0.5
    fano: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell_size", _pair(self.cell_size, "cell size", 0.005, 0.5))
        object.__setattr__(self, "rate", _pair(self.rate, "rate", 0.1, 1000.0))
        for name, low, high in (("subunits", 0.0, 1.0), ("adaptation", 0.0, 100.0), ("adaptation_s", 0.01, 60.0),
                                ("fano", 1.0, 100.0)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise VistError(f"simulate: {name} must be a number in [{low:g}, {high:g}], got {value!r}")
            object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Any) -> RetinaSettings:
        """From `to_dict`'s form; unknown keys are a one-line error."""
        if not isinstance(data, dict):
            raise VistError(f"retina settings must be a table, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise VistError(f"unknown retina settings {', '.join(sorted(set(data) - known))}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Subunits:
    """A cell's nonlinear centre: rectified subunits pooled with Gaussian weights."""

    sigma: float  # pixels, the same for every subunit of the retina
    center: np.ndarray  # float64 [C, K, 2] (y, x) pixels
    weight: np.ndarray  # float32 [C, K] pooling weights, each row summing to 1
    linear_scale: np.ndarray  # float32 [C] 1 / s.d. of the linear spatial drive on the calibration movie
    scale: np.ndarray  # float32 [C] 1 / s.d. of the subunit drive on the calibration movie
    offset: np.ndarray  # float32 [C] mean of the subunit drive on the calibration movie


@dataclasses.dataclass(frozen=True)
class Retina:
    """The simulated cells; every per-cell array has C on its first (or only) axis except `temporal`."""

    size: tuple[int, int]  # (H, W) stimulus pixels
    fps: float
    center: np.ndarray  # float64 [C, 2] (y, x) in pixels
    sigma_center: np.ndarray  # float64 [C] pixels
    sigma_surround: np.ndarray  # float64 [C] pixels
    surround: np.ndarray  # float64 [C] surround weight (integral relative to the centre's)
    polarity: np.ndarray  # float32 [C] +1 ON, -1 OFF
    temporal: np.ndarray  # float32 [L, C] causal kernels, lag 0 first
    scale: np.ndarray  # float32 [C] 1 / generator s.d. on the calibration movie
    gain: np.ndarray  # float32 [C]
    threshold: np.ndarray  # float32 [C]
    r_max: np.ndarray  # float32 [C] spikes/s
    cell_ids: tuple[str, ...]
    settings: RetinaSettings = RetinaSettings()
    subunits: Subunits | None = None  # with settings.subunits > 0
    adapt_ref: np.ndarray | None = None  # float32 [C] mean |z| on the calibration movie (with adaptation > 0)

    @property
    def n_cells(self) -> int:
        """C."""
        return len(self.cell_ids)

    def spatial(self) -> np.ndarray:
        """float32 `[C,H,W]` signed spatial filters (polarity included)."""
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        d2 = (yy[None] - self.center[:, 0, None, None]) ** 2 + (xx[None] - self.center[:, 1, None, None]) ** 2
        cen = np.exp(-d2 / (2 * self.sigma_center[:, None, None] ** 2))
        sur = np.exp(-d2 / (2 * self.sigma_surround[:, None, None] ** 2))
        cen /= cen.sum(axis=(1, 2), keepdims=True)
        sur /= sur.sum(axis=(1, 2), keepdims=True)
        dog = cen - self.surround[:, None, None] * sur
        return (dog * self.polarity[:, None, None]).astype(np.float32)

    def rf_masks(self) -> np.ndarray:
        """float32 `[C,H,W]` binary masks: pixels within `RF_MASK_SIGMAS` centre sigmas of the centre."""
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        d2 = (yy[None] - self.center[:, 0, None, None]) ** 2 + (xx[None] - self.center[:, 1, None, None]) ** 2
        return (d2 <= (RF_MASK_SIGMAS * self.sigma_center[:, None, None]) ** 2).astype(np.float32)

    def _grey(self, stimulus: np.ndarray) -> np.ndarray:
        stim = np.asarray(stimulus)
        if stim.ndim == 4:
            stim = stim.mean(axis=-1)
        if stim.ndim != 3 or tuple(stim.shape[1:]) != self.size or stim.shape[0] == 0:
            raise VistError(f"stimulus must be [T,{self.size[0]},{self.size[1]}] with T > 0, got {list(stim.shape)}")
        return stim

    def subunit_drive(self, stimulus: np.ndarray) -> np.ndarray:
        """uint8 frames -> float32 `[T,C]`: each cell's pooled rectified subunits (polarity applied before the
        rectification), not yet normalised; zeros for a linear retina."""
        stim = self._grey(stimulus)
        if self.subunits is None:
            return np.zeros((stim.shape[0], self.n_cells), np.float32)
        from scipy.ndimage import gaussian_filter, map_coordinates

        su = self.subunits
        pts = su.center.reshape(-1, 2).T  # [2, C*K]
        out = np.empty((stim.shape[0], self.n_cells), np.float32)
        for t in range(stim.shape[0]):  # one frame at a time: a blur, then [C*K] samples vectorised over cells
            x = (stim[t].astype(np.float32) - 128.0) / 128.0
            blurred = gaussian_filter(x, sigma=su.sigma, mode="nearest")
            v = map_coordinates(blurred, pts, order=1, mode="nearest").reshape(su.center.shape[:2])
            out[t] = (np.maximum(v * self.polarity[:, None], 0.0) * su.weight).sum(axis=1)
        return out

    def spatial_drive(self, stimulus: np.ndarray) -> np.ndarray:
        """uint8 `[T,H,W]` (or `[T,H,W,3]`, averaged to grey) -> float32 `[T,C]`: the drive before temporal filtering
        (the DoG, or with subunits a mix of the DoG and the subunit pathway, each normalised on the calibration
        movie)."""
        stim = self._grey(stimulus)
        t = stim.shape[0]
        filters = self.spatial().reshape(self.n_cells, -1).T  # [H*W, C]
        s = np.empty((t, self.n_cells), np.float32)
        step = max(1, CHUNK_PIXELS // filters.shape[0])  # bounded memory; one matmul (the same bits) when it fits
        for a in range(0, t, step):
            x = (stim[a : a + step].reshape(-1, filters.shape[0]).astype(np.float32) - 128.0) / 128.0
            s[a : a + step] = x @ filters
        if self.subunits is None:
            return s
        w = np.float32(self.settings.subunits)
        su = self.subunits
        return (1 - w) * s * su.linear_scale + w * (self.subunit_drive(stim) - su.offset) * su.scale

    def generator(self, stimulus: np.ndarray) -> np.ndarray:
        """uint8 `[T,H,W]` (or `[T,H,W,3]`) -> float32 `[T,C]` unnormalised drive (spatial, then temporal)."""
        s = self.spatial_drive(stimulus)
        t = s.shape[0]
        k = self.temporal  # [L, C]
        pad = np.concatenate([np.repeat(s[:1], k.shape[0] - 1, axis=0), s])  # steady state before frame 0
        out = np.zeros_like(s)
        for lag in range(k.shape[0]):  # L ~ 9 lags, each vectorised over [T, C]
            out += k[lag] * pad[k.shape[0] - 1 - lag : k.shape[0] - 1 - lag + t]
        return out

    def adapted(self, z: np.ndarray) -> np.ndarray:
        """Normalised drive `[T,C]` -> the same after contrast adaptation (identity without it): gain
        (1 + a) / (1 + a c_t / c_ref), c_t the causal exponential average of |z| (starting at c_ref)."""
        if self.adapt_ref is None or self.settings.adaptation == 0:
            return z
        from scipy.signal import lfilter

        alpha = min(1.0, 1.0 / (self.settings.adaptation_s * self.fps))
        ref = self.adapt_ref.astype(np.float64)
        c, _ = lfilter([alpha], [1.0, alpha - 1.0], np.abs(z), axis=0, zi=((1 - alpha) * ref)[None])
        a = self.settings.adaptation
        return (z * (1 + a) / (1 + a * c / ref)).astype(np.float32)

    def rates(self, stimulus: np.ndarray) -> np.ndarray:
        """uint8 `[T,H,W]` -> float32 `[T,C]` ground-truth rates in spikes/s."""
        z = self.adapted(self.generator(stimulus) * self.scale)
        u = self.gain * (z - self.threshold)
        return (self.r_max * np.logaddexp(0.0, u)).astype(np.float32)  # softplus, overflow-safe


def _temporal_kernels(rng: np.random.Generator, n: int, fps: float, kernel_s: float) -> np.ndarray:
    """float32 `[L, C]` biphasic kernels: g(t; tau1) - b * g(t; tau2), g = t^3 exp(-t/tau) normalised to sum 1."""
    length = max(2, round(kernel_s * fps))
    t = (np.arange(length)[:, None] + 0.5) / fps  # bin centres, s
    tau1 = rng.uniform(0.015, 0.025, n)  # fast lobe peaks at 3*tau1 = 45-75 ms
    tau2 = tau1 * rng.uniform(1.6, 2.2, n)  # slow, opposite lobe
    b = rng.uniform(0.6, 0.85, n)  # part-transient: the kernel's sum is 1 - b > 0
    g1 = t**3 * np.exp(-t / tau1)
    g2 = t**3 * np.exp(-t / tau2)
    k = g1 / g1.sum(0) - b * g2 / g2.sum(0)
    return k.astype(np.float32)


def make_retina(
    n_cells: int,
    seed: int,
    size: tuple[int, int] = (120, 160),
    fps: float = 30.0,
    kernel_s: float = 0.3,
    settings: RetinaSettings | None = None,
) -> Retina:
    """Draw C cells: centres on a jittered grid inside the central square, ~half ON, DoG RFs, biphasic kernels;
    with `settings`, other cell sizes and rates, subunits, contrast adaptation (drawn from a separate stream, so
    the default retina is the same bit for bit)."""
    settings = settings or RetinaSettings()
    h, w = size
    rng = np.random.default_rng([seed, 0])
    side = min(h, w)
    y0, x0 = (h - side) / 2, (w - side) / 2
    per_row = int(np.ceil(np.sqrt(n_cells)))
    cell = side / per_row
    idx = np.arange(n_cells)
    jitter = rng.uniform(-0.3, 0.3, (n_cells, 2)) * cell
    center = np.stack([y0 + (idx // per_row + 0.5) * cell, x0 + (idx % per_row + 0.5) * cell], axis=1) + jitter
    sigma_c = rng.uniform(*settings.cell_size, n_cells) * side
    sigma_s = sigma_c * rng.uniform(2.0, 3.0, n_cells)
    surround = rng.uniform(0.5, 0.8, n_cells)
    polarity = np.where(rng.permutation(n_cells) % 2 == 0, 1.0, -1.0).astype(np.float32)
    temporal = _temporal_kernels(rng, n_cells, fps, kernel_s)
    gain = rng.uniform(1.5, 3.0, n_cells).astype(np.float32)
    threshold = rng.uniform(0.5, 1.5, n_cells).astype(np.float32)
    r_max = rng.uniform(*settings.rate, n_cells).astype(np.float32)
    ids = tuple(f"sim{i:03d}" for i in range(n_cells))
    retina = Retina(
        size=(h, w), fps=fps, center=center, sigma_center=sigma_c, sigma_surround=sigma_s, surround=surround,
        polarity=polarity, temporal=temporal, scale=np.ones(n_cells, np.float32), gain=gain,
        threshold=threshold, r_max=r_max, cell_ids=ids, settings=settings,
    )  # fmt: skip
    calib = SyntheticMovie(seed=_movie_seed(seed, -1), size=(h, w), fps=fps).frames(CALIBRATION_FRAMES)
    if settings.subunits > 0:
        retina = dataclasses.replace(retina, subunits=_draw_subunits(retina, calib, np.random.default_rng([seed, 3])))
    sd = retina.generator(calib).std(axis=0)
    scale = (1.0 / np.maximum(sd, 1e-6)).astype(np.float32)
    retina = dataclasses.replace(retina, scale=scale)
    if settings.adaptation > 0:
        ref = np.abs(retina.generator(calib) * scale).mean(axis=0)
        retina = dataclasses.replace(retina, adapt_ref=np.maximum(ref, 1e-6).astype(np.float32))
    return retina


def _draw_subunits(retina: Retina, calib: np.ndarray, rng: np.random.Generator) -> Subunits:
    """SUBUNITS_PER_CELL subunits per cell within its centre, pooled by a Gaussian of the centre's sigma; each
    pathway's scale and the subunit drive's mean measured on the calibration movie."""
    c, k = retina.n_cells, SUBUNITS_PER_CELL
    offsets = rng.normal(0.0, 1.0, (c, k, 2)) * retina.sigma_center[:, None, None]
    center = retina.center[:, None, :] + offsets
    h, w = retina.size
    center = np.stack([np.clip(center[..., 0], 0, h - 1), np.clip(center[..., 1], 0, w - 1)], axis=-1)
    d2 = (offsets**2).sum(-1) / retina.sigma_center[:, None] ** 2
    weight = np.exp(-0.5 * d2)
    weight = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)
    sigma = float(SUBUNIT_SIGMA * retina.sigma_center.mean())
    ones = np.ones(c, np.float32)
    probe = dataclasses.replace(retina, subunits=Subunits(sigma, center, weight, ones, ones, np.zeros(c, np.float32)))
    sub = probe.subunit_drive(calib)
    linear = dataclasses.replace(retina, subunits=None).spatial_drive(calib)
    return Subunits(
        sigma, center, weight,
        linear_scale=(1.0 / np.maximum(linear.std(axis=0), 1e-6)).astype(np.float32),
        scale=(1.0 / np.maximum(sub.std(axis=0), 1e-6)).astype(np.float32),
        offset=sub.mean(axis=0).astype(np.float32),
    )  # fmt: skip


def _movie_seed(seed: int, m: int) -> int:
    """Seed of movie m (m = -1: the calibration movie), derived from the simulation seed."""
    return int(np.random.SeedSequence([seed, 1, m + 1]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class SimMovie:
    """One simulated movie: stimulus uint8 `[T,H,W]`, truth/rates float32 `[T,C]`, spikes uint16 `[R,T,C]`."""

    stimulus: np.ndarray
    truth: np.ndarray
    rates: np.ndarray
    spikes: np.ndarray


@dataclasses.dataclass(frozen=True)
class Simulation:
    """A simulated dataset: the cells, the movies by name, the parameters it was made with."""

    retina: Retina
    movies: dict[str, SimMovie]
    seed: int
    n_trials: int
    flashes: bool = True  # the movies' full-field flashes (SyntheticMovie)

    @property
    def fps(self) -> float:
        """Frame (= bin) rate, Hz."""
        return self.retina.fps

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write in the dataset format, with each movie's ground truth as `/movies/<name>/truth` (an existing
        file is replaced only with `overwrite`)."""
        r = self.retina
        params = {
            "seed": self.seed, "cells": r.n_cells, "movies": len(self.movies), "trials": self.n_trials,
            "frames": int(next(iter(self.movies.values())).stimulus.shape[0]),
            "size": list(r.size), "fps": r.fps, "model": "LNP: DoG x biphasic kernel, softplus, Poisson",
        }  # fmt: skip
        if r.settings != RetinaSettings():  # the default retina's attribute stays as it always was
            params["retina"] = r.settings.to_dict()
            params["model"] = "DoG + rectified subunits x biphasic kernel, contrast adaptation, softplus, gamma-Poisson"
        if not self.flashes:  # likewise the default movies'
            params["movie"] = {"flashes": False}
        return write_dataset(
            path,
            {name: (m.stimulus, m.rates, m.spikes) for name, m in self.movies.items()},
            r.rf_masks(),
            list(r.cell_ids),
            r.fps,
            "spikes/s",
            f"vist_rt.data.simulate seed={self.seed}",
            extras={name: {"truth": m.truth} for name, m in self.movies.items()},
            attrs={"simulation": params},
            overwrite=overwrite,
        )


def simulate(
    n_cells: int = 16,
    n_movies: int = 2,
    n_frames: int = 300,
    n_trials: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (120, 160),
    fps: float = 30.0,
    settings: RetinaSettings | None = None,
    flashes: bool = True,
) -> Simulation:
    """Simulate C cells' responses to K synthetic movies of T frames over R trials; writes nothing.
    `settings`: the kind of retina (default: the LNP retina of the demo); `flashes=False`: movies without the
    full-field flashes (the same frames otherwise; the retina, calibrated on its own movie, is the same)."""
    for label, value, low in (("cells", n_cells, 1), ("movies", n_movies, 1), ("frames", n_frames, 1),
                              ("trials", n_trials, 1)):  # fmt: skip
        if not isinstance(value, (int, np.integer)) or value < low:
            raise VistError(f"simulate: {label} must be an integer >= {low}, got {value!r}")
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise VistError(f"simulate: size must be at least 16x16, got {h}x{w}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VistError(f"simulate: seed must be an integer >= 0, got {seed!r}")
    if not (np.isfinite(fps) and FPS_RANGE[0] <= fps <= FPS_RANGE[1]):
        raise VistError(f"simulate: fps must be between {FPS_RANGE[0]:g} and {FPS_RANGE[1]:g} Hz, got {fps!r}")
    retina = make_retina(n_cells, seed, (h, w), float(fps), settings=settings)
    fano = retina.settings.fano
    movies: dict[str, SimMovie] = {}
    for m in range(n_movies):
        stim = SyntheticMovie(seed=_movie_seed(seed, m), size=(h, w), fps=fps, flashes=flashes).frames(n_frames)
        truth = retina.rates(stim)
        rng = np.random.default_rng([seed, 2, m])
        mean = np.broadcast_to(truth[None] / fps, (n_trials, *truth.shape))
        if fano > 1:  # gamma-Poisson: mean as Poisson, variance fano x mean
            mean = rng.gamma(mean / (fano - 1), fano - 1)
        counts = rng.poisson(mean, size=(n_trials, *truth.shape))
        spikes = np.minimum(counts, np.iinfo(np.uint16).max).astype(np.uint16)
        rates = (spikes.mean(axis=0) * fps).astype(np.float32)
        movies[f"movie{m + 1}"] = SimMovie(stimulus=stim, truth=truth, rates=rates, spikes=spikes)
    return Simulation(retina=retina, movies=movies, seed=seed, n_trials=n_trials, flashes=bool(flashes))


def simulation_params(attribute: Any) -> dict[str, Any] | None:
    """A dataset's `simulation` attribute (JSON text or a dict) as a dict; None where it holds none."""
    if isinstance(attribute, (str, bytes)):
        try:
            attribute = json.loads(attribute)
        except ValueError:
            return None
    return attribute if isinstance(attribute, dict) else None


def retina_from_params(params: Any, where: str = "the dataset") -> Retina:
    """The simulated retina that `params` (a simulation's `simulation` attribute, dict or JSON text) describe:
    rebuilt from its seed, cell count, frame size and rate. VistError (one line) if they do not describe one."""
    params = simulation_params(params)
    keys = ("seed", "cells", "size", "fps")
    if not isinstance(params, dict) or any(k not in params for k in keys):
        raise VistError(f"{where} was not made by `vist-rt simulate` (no simulation parameters): no known retina")
    try:
        size = tuple(int(v) for v in params["size"])
        cells, seed, fps = int(params["cells"]), int(params["seed"]), float(params["fps"])
    except (TypeError, ValueError, IndexError) as exc:
        raise VistError(f"{where}: its simulation parameters are malformed ({exc})") from None
    if len(size) != 2 or min(size) < 16 or cells < 1 or seed < 0 or not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        raise VistError(f"{where}: its simulation parameters are out of range (cells {cells}, size {size}, fps {fps})")
    settings = RetinaSettings.from_dict(params["retina"]) if "retina" in params else None
    return make_retina(cells, seed, (size[0], size[1]), fps, settings=settings)


def known_retina(path: str | os.PathLike[str]) -> Retina:
    """The simulated retina that made the dataset at `path` (`vist-rt simulate`); VistError for any other file."""
    with open_dataset(path) as ds:
        return retina_from_params(ds.attrs.get("simulation"), where=str(path))


def respond(path: str | os.PathLike[str], stimulus: np.ndarray) -> np.ndarray:
    """The ground-truth rates float32 `[T, C]` (spikes/s) of the simulated retina that made the dataset at `path`
    to any frames uint8 `[T, H, W]` or `[T, H, W, 3]` of its frame size (`vist-rt simulate --respond`)."""
    stim = np.asarray(stimulus)
    if stim.dtype != np.uint8:
        raise VistError(f"a stimulus must be uint8 frames, got {stim.dtype}")
    return known_retina(path).rates(stim)


def write_simulation(
    path: str | os.PathLike[str],
    n_cells: int = 16,
    n_movies: int = 2,
    n_frames: int = 300,
    n_trials: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (120, 160),
    fps: float = 30.0,
    *,
    settings: RetinaSettings | None = None,
    flashes: bool = True,
    overwrite: bool = False,
) -> Simulation:
    """`simulate(...)` and write the result to `path` (the dataset format plus `/movies/<name>/truth`).

    `path` is checked first (a folder, an unwritable place, or an existing file without `overwrite`: VistError)."""
    check_output_file(path, overwrite=overwrite)
    sim = simulate(n_cells, n_movies, n_frames, n_trials, seed, size, fps, settings=settings, flashes=flashes)
    sim.write(path, overwrite=overwrite)
    return sim


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation of `[T,C]` arrays -> float64 `[C]`; a constant column gives 0."""
    a = np.asarray(a, np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, np.float64) - np.mean(b, axis=0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / den
    return np.where(den > 0, r, 0.0)


def noise_ceiling(spikes: np.ndarray) -> np.ndarray:
    """Per-cell CC ceiling from per-trial counts `[R,T,C]` (R >= 2) -> float64 `[C]` in [0, 1].

    r = CC(mean of even trials, mean of odd trials) (split-half); rho = 2r / (1 + r) (Spearman-Brown: the
    reliability of the R-trial average); ceiling = sqrt(rho), the expected CC between the noiseless rate
    and the recorded R-trial average. r <= 0 (or a silent cell) gives 0.
    """
    spikes = np.asarray(spikes)
    if spikes.ndim != 3 or spikes.shape[0] < 2:
        raise VistError(f"noise ceiling needs per-trial counts [R,T,C] with R >= 2, got shape {list(spikes.shape)}")
    r = pearson(spikes[0::2].mean(axis=0), spikes[1::2].mean(axis=0))
    r = np.clip(r, 0.0, 1.0)
    return np.sqrt(2 * r / (1 + r))


def truth_cc(sim: Simulation) -> dict[str, np.ndarray]:
    """Per movie, the per-cell CC of the ground-truth rate with the recorded trial average."""
    return {name: pearson(m.truth, m.rates) for name, m in sim.movies.items()}


FAMILY_SIZES = ((96, 96), (120, 160), (240, 320), (480, 640))  # frame sizes of the retina family


def family_member(index: int) -> dict[str, Any]:
    """Member `index` of the family of simulated retinas the CPU preset is judged on: frame size, cell count and
    RetinaSettings drawn from the index (members 0-99 for tuning, 100 and up held out). Returns `simulate`'s
    keywords (`n_cells`, `size`, `settings`, `seed`)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise VistError(f"a family member is an integer >= 0, got {index!r}")
    rng = np.random.default_rng([index, 77])
    lo = float(rng.uniform(0.025, 0.05))
    rate = float(rng.uniform(3.0, 8.0))
    settings = RetinaSettings(
        cell_size=(round(lo, 4), round(lo * float(rng.uniform(1.3, 2.0)), 4)),
        rate=(round(rate, 2), round(rate * float(rng.uniform(2.0, 4.0)), 2)),
        subunits=round(float(rng.uniform(0.0, 0.7)), 3),
        adaptation=round(float(rng.uniform(0.0, 2.0)), 3),
        fano=round(float(rng.uniform(1.0, 2.0)), 3),
    )
    size = FAMILY_SIZES[int(rng.integers(len(FAMILY_SIZES)))]
    return {"n_cells": int(rng.integers(8, 41)), "size": size, "settings": settings, "seed": 1000 + index}
