"""SyntheticMovie: reproducible, random access, 1/f, slow drift, saccades, flashes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vist_rt.errors import VistError
from vist_rt.movie import BLOCK, SyntheticMovie, pink_noise

SIZE = (96, 128)


@pytest.fixture(scope="module")
def movie() -> SyntheticMovie:
    return SyntheticMovie(seed=3, size=SIZE, fps=30.0)


def test_dtype_shape_grey_and_colour(movie: SyntheticMovie):
    f = movie.frame(0)
    assert f.dtype == np.uint8 and f.shape == SIZE
    assert movie.frames(4, start=10).shape == (4, *SIZE)
    c = SyntheticMovie(seed=3, size=SIZE, color=True)
    fc = c.frame(7)
    assert fc.shape == (*SIZE, 3) and fc.dtype == np.uint8
    assert c.frames(2).shape == (2, *SIZE, 3)
    # the channels differ (colour), but are correlated (one luminance texture under them)
    b, g = fc[..., 0].astype(float).ravel(), fc[..., 1].astype(float).ravel()
    assert not np.array_equal(b, g) and np.corrcoef(b, g)[0, 1] > 0.5


def test_same_seed_same_frames_random_access(movie: SyntheticMovie):
    again = SyntheticMovie(seed=3, size=SIZE, fps=30.0)
    idx = [5, 0, BLOCK + 17, 3 * BLOCK - 1, 5]  # any order, across blocks, repeated
    for i in idx:
        np.testing.assert_array_equal(movie.frame(i), again.frame(i))
    np.testing.assert_array_equal(movie.frames(3, start=40), np.stack([again.frame(i) for i in (40, 41, 42)]))
    out = np.empty(SIZE, np.uint8)
    assert movie.frame(9, out=out) is out and np.array_equal(out, again.frame(9))


def test_different_seed_different_frames(movie: SyntheticMovie):
    other = SyntheticMovie(seed=4, size=SIZE, fps=30.0)
    assert not np.array_equal(movie.frame(0), other.frame(0))


def test_spectrum_falls_with_spatial_frequency():
    tex = pink_noise((256, 256), np.random.default_rng(0))
    power = np.abs(np.fft.fft2(tex)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    f = np.hypot(fx, fy)
    bands = np.geomspace(0.01, 0.45, 9)
    mean_power = [power[(f >= lo) & (f < hi)].mean() for lo, hi in itertools.pairwise(bands)]
    centres = np.sqrt(bands[:-1] * bands[1:])
    slope = np.polyfit(np.log(centres), np.log(mean_power), 1)[0]
    assert -2.4 < slope < -1.6  # power ~ 1/f^2 (amplitude ~ 1/f)
    # a movie frame keeps the falling spectrum (windowed crop of the texture)
    frame = SyntheticMovie(seed=1, size=(128, 128)).frame(0).astype(float)
    p2 = np.abs(np.fft.fft2(frame - frame.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij")
    f2 = np.hypot(fx, fy)
    low, high = p2[(f2 > 0.02) & (f2 < 0.06)].mean(), p2[(f2 > 0.2) & (f2 < 0.4)].mean()
    assert low > 30 * high


def test_drift_is_small_saccades_jump_flashes_flash(movie: SyntheticMovie):
    n = 600  # 20 s
    s = movie.schedule(n)
    th, tw = movie.texture_shape
    dx = np.abs(np.diff(s.x))
    dy = np.abs(np.diff(s.y))
    dx, dy = np.minimum(dx, tw - dx), np.minimum(dy, th - dy)  # periodic texture
    step = np.hypot(dx, dy)
    jumps = s.saccade[1:]
    assert 5 <= jumps.sum() <= 60  # about one per 0.8 s fixation
    assert step[~jumps].max() < 2.0  # drift: under 2 px per frame
    assert np.median(step[jumps]) > 20  # saccades: far
    assert s.flash.any() and (s.gain != 1).any()  # flashes and contrast steps happen

    frames = movie.frames(n).astype(np.float32)
    diff = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2))
    quiet = ~jumps & ~s.flash[1:] & ~s.flash[:-1] & (s.gain[1:] == s.gain[:-1])
    assert np.median(diff[quiet]) < 8  # consecutive frames during a fixation look alike
    assert np.median(diff[jumps]) > 2 * np.median(diff[quiet])
    mean = frames.mean(axis=(1, 2))
    on = np.flatnonzero(s.flash & ~np.roll(s.flash, 1))  # flash onsets
    on = on[on > 0]
    assert len(on) and all(abs(mean[i] - mean[i - 1]) > 25 for i in on)


def test_without_flashes_only_the_flashes_go(movie: SyntheticMovie):
    n = 600
    plain = SyntheticMovie(movie.seed, movie.size, movie.fps, flashes=False)
    s, p = movie.schedule(n), plain.schedule(n)
    assert s.flash.any() and not p.flash.any() and not p.offset.any()
    for name in ("x", "y", "gain", "saccade"):  # the eye movements and contrast steps are the same
        np.testing.assert_array_equal(getattr(p, name), getattr(s, name))
    a, b = movie.frames(n), plain.frames(n)
    assert (a[s.flash] != b[s.flash]).any()
    np.testing.assert_array_equal(a[~s.flash], b[~s.flash])


def test_bad_arguments():
    with pytest.raises(VistError):
        SyntheticMovie(size=(4, 4))
    with pytest.raises(VistError):
        SyntheticMovie(fps=0)
    m = SyntheticMovie(size=(16, 16))
    with pytest.raises(VistError):
        m.frame(-1)
    with pytest.raises(VistError):
        m.frame(0, out=np.empty((8, 8), np.uint8))
