"""A reproducible natural-like movie: a 1/f texture seen through a drifting, jumping window, with flashes.

`SyntheticMovie(seed).frame(i)` is a pure function of (seed, size, fps, color, i): random access, so the same
index always gives the same frame. The texture is made once (numpy FFT); each frame is one `cv2.warpAffine`
(subpixel translation, wrap-around border: the texture is periodic, so the view never meets an edge) and one
`cv2.addWeighted` (contrast and flash), i.e. O(H*W) work and no per-pixel Python.

Time structure (drawn from the seed, per block of `BLOCK` frames, so any index is reachable without
simulating the frames before it):
- fixations of 0.25 s and more (exponential, mean `fixation_s`), during which the window drifts slowly
  (a constant velocity of 3-20 px/s plus a small random walk, like fixational drift);
- a saccade between fixations: the window jumps to a new, uniformly drawn place in the texture
  (each block also starts with one);
- contrast steps (gain 0.35-1.5 about mid-grey, mean interval `contrast_s`) and brief full-field
  flashes (+-60-120 grey levels for 2-4 frames, mean interval `flash_s`; none with `flashes=False`, which
  leaves every other frame as it was: the flashes are drawn last).
"""

from __future__ import annotations

import dataclasses
import threading

import cv2
import numpy as np

from vist_rt.errors import VistError

BLOCK = 1024  # frames per independently drawn stretch of eye movements and events
MIN_SIDE, MAX_SIDE = 8, 4096  # frame size; the texture is twice that each way (4096: ~1.5 GB while it is made)
_MEAN, _STD = 128.0, 45.0  # grey level and contrast of the texture


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of a synthetic movie, each MIN_SIDE..MAX_SIDE pixels; one-line VistError otherwise."""
    h, w = (int(v) for v in size)
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise VistError(f"synthetic movie size must be {MIN_SIDE} to {MAX_SIDE} pixels each way, got {w}x{h} (WxH)")
    return h, w


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Per-frame ground truth of a stretch of the movie; every array is `[n]`."""

    x: np.ndarray  # float64, window's left edge in texture pixels (mod texture width)
    y: np.ndarray  # float64, window's top edge in texture pixels (mod texture height)
    gain: np.ndarray  # float32, contrast about mid-grey (1 = the texture's own)
    offset: np.ndarray  # float32, flash in grey levels added to every pixel (0 = none)
    saccade: np.ndarray  # bool, the window jumped between frame i-1 and i
    flash: np.ndarray  # bool, offset != 0


def pink_noise(shape: tuple[int, int], rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Periodic 2-D noise with amplitude spectrum ~ 1/f**exponent (power ~ 1/f**(2*exponent)) -> float32 `[H,W]`.

    Zero mean, unit standard deviation.
    """
    h, w = shape
    white = rng.standard_normal((h, w))
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0  # DC: removed below
    spec /= f**exponent
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w))
    out /= out.std()
    return out.astype(np.float32)


class SyntheticMovie:
    """Procedural natural-like movie; `frame(i)` -> uint8 `[H,W]` grey (or `[H,W,3]` BGR when `color`)."""

    def __init__(
        self,
        seed: int = 0,
        size: tuple[int, int] = (480, 640),
        fps: float = 30.0,
        color: bool = False,
        *,
        fixation_s: float = 0.8,
        flash_s: float = 3.0,
        contrast_s: float = 4.0,
        flashes: bool = True,
    ) -> None:
        h, w = check_size(size)
        if not fps > 0:
            raise VistError(f"synthetic movie fps must be > 0, got {fps!r}")
        self.seed, self.size, self.fps, self.color = int(seed), (h, w), float(fps), bool(color)
        self.fixation_s, self.flash_s, self.contrast_s = fixation_s, flash_s, contrast_s
        self.flashes = bool(flashes)  # False: no full-field flashes (the rest of the movie is the same frame for frame)
        # texture: about twice the frame each way, a multiple of 32 (fast FFT), periodic
        self.texture_shape = (2 * h + 31) // 32 * 32, (2 * w + 31) // 32 * 32
        self._texture = self._make_texture()
        self._blocks: dict[int, Schedule] = {}  # small cache of drawn blocks
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one frame: (H, W) or (H, W, 3)."""
        return (*self.size, 3) if self.color else self.size

    def _make_texture(self) -> np.ndarray:
        """uint8 `[TH,TW]` or `[TH,TW,3]` (BGR): luminance 1/f noise, plus weaker 1/f colour variation."""
        rng = np.random.default_rng([self.seed, 0])
        lum = pink_noise(self.texture_shape, rng)
        if self.color:
            chroma = [pink_noise(self.texture_shape, rng) for _ in range(2)]
            # blue-yellow and red-green opponent variation, a third of the luminance contrast
            b = lum + 0.35 * chroma[0]
            g = lum - 0.2 * chroma[0] - 0.3 * chroma[1]
            r = lum - 0.2 * chroma[0] + 0.3 * chroma[1]
            lum = np.stack([b, g, r], axis=-1)
        return np.clip(_MEAN + _STD * lum, 0, 255).round().astype(np.uint8)

    # -- time structure -------------------------------------------------------------------------

    def _draw_block(self, b: int) -> Schedule:
        """Eye movements and events of frames [b*BLOCK, (b+1)*BLOCK), from the seed and b only."""
        rng = np.random.default_rng([self.seed, 1, b])
        n, fps = BLOCK, self.fps
        th, tw = self.texture_shape
        # fixations: durations in frames, at least a quarter second
        min_len = max(2, round(0.25 * fps))
        lens: list[int] = []
        while sum(lens) < n:
            lens.append(max(min_len, round(rng.exponential(self.fixation_s * fps))))
        starts = np.cumsum([0, *lens[:-1]])
        k = len(lens)
        seg = np.repeat(np.arange(k), lens)[:n]
        t_in = np.arange(n) - starts[seg]
        x0, y0 = rng.uniform(0, tw, k), rng.uniform(0, th, k)
        speed = rng.uniform(3.0, 20.0, k) / fps  # px per frame
        angle = rng.uniform(0, 2 * np.pi, k)
        vx, vy = speed * np.cos(angle), speed * np.sin(angle)
        # fixational random walk, restarted at each fixation
        walk = rng.normal(0.0, 0.15, (2, n)).cumsum(axis=1)
        walk -= walk[:, starts[seg]]
        x = np.mod(x0[seg] + vx[seg] * t_in + walk[0], tw)
        y = np.mod(y0[seg] + vy[seg] * t_in + walk[1], th)
        saccade = t_in == 0
        if b == 0:
            saccade[0] = False  # frame 0 has no predecessor
        # contrast steps: piecewise-constant gain
        steps = rng.random(n) < 1.0 / (self.contrast_s * fps)
        levels = rng.uniform(0.35, 1.5, int(steps.sum()) + 1)
        levels[0] = 1.0 if b == 0 else levels[0]
        gain = levels[np.cumsum(steps)].astype(np.float32)
        # flashes: brief full-field steps up or down
        offset = np.zeros(n, np.float32)
        onsets = np.flatnonzero(rng.random(n) < 1.0 / (self.flash_s * fps)) if self.flashes else ()
        for t0 in onsets:  # a handful per block
            dur = int(rng.integers(2, 5))
            offset[t0 : t0 + dur] = rng.choice([-1.0, 1.0]) * rng.uniform(60.0, 120.0)
        return Schedule(x=x, y=y, gain=gain, offset=offset, saccade=saccade, flash=offset != 0)

    def _block(self, b: int) -> Schedule:
        with self._lock:
            sched = self._blocks.get(b)
            if sched is None:
                if len(self._blocks) >= 4:
                    self._blocks.pop(next(iter(self._blocks)))
                sched = self._blocks[b] = self._draw_block(b)
            return sched

    def schedule(self, n: int, start: int = 0) -> Schedule:
        """Ground truth of frames [start, start+n): window position, gain, flash offset, saccade/flash flags."""
        if start < 0 or n < 0:
            raise VistError(f"frame range must be non-negative, got start={start}, n={n}")
        parts: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(Schedule)}
        i = start
        while i < start + n:
            b, j = divmod(i, BLOCK)
            m = min(BLOCK - j, start + n - i)
            sched = self._block(b)
            for name, part in parts.items():
                part.append(getattr(sched, name)[j : j + m])
            i += m
        return Schedule(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()})

    # -- frames ---------------------------------------------------------------------------------

    def frame(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame `i` (>= 0) -> uint8 `[H,W]` (`[H,W,3]` BGR if color); written into `out` when given."""
        if i < 0:
            raise VistError(f"frame index must be >= 0, got {i}")
        b, j = divmod(int(i), BLOCK)
        s = self._block(b)
        h, w = self.size
        if out is None:
            out = np.empty(self.shape, np.uint8)
        elif out.shape != self.shape or out.dtype != np.uint8:
            raise VistError(f"out must be uint8 {list(self.shape)}, got {out.dtype} {list(out.shape)}")
        m = np.array([[1.0, 0.0, -s.x[j]], [0.0, 1.0, -s.y[j]]], np.float64)
        cv2.warpAffine(self._texture, m, (w, h), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        gain = float(s.gain[j])
        beta = _MEAN * (1.0 - gain) + float(s.offset[j])
        if gain != 1.0 or beta != 0.0:
            cv2.addWeighted(out, gain, out, 0.0, beta, dst=out)  # saturating
        return out

    def frames(self, n: int, start: int = 0) -> np.ndarray:
        """Frames [start, start+n) -> uint8 `[n,H,W]` (or `[n,H,W,3]`)."""
        out = np.empty((n, *self.shape), np.uint8)
        for k in range(n):
            self.frame(start + k, out=out[k])
        return out
