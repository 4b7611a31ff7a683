"""What a stimulus is optimized for (objectives of the predicted rates) and what keeps it displayable
(regularizers of the frames)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vist_rt.errors import VistError

OBJECTIVES = ("mei", "mds", "target")
GREY = 128.0  # the display's mid level: the zero of contrast


@dataclasses.dataclass(frozen=True)
class Objective:
    """A score of predicted rates `[T, C]` to maximise.

    kind `mei`: the mean rate of `cells` (one or a group) over the last `frames` frames (most exciting input);
    `mds`: that mean minus the mean of every other cell over the same frames (most discriminative stimulus);
    `target`: minus the mean squared error of the first cell's rates to `trace` `[T]` (spikes/s) over the clip.
    """

    kind: str
    cells: tuple[int, ...]
    frames: int = 10
    trace: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise VistError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.kind!r}")
        if not self.cells:
            raise VistError("an objective needs at least one cell")
        if self.frames < 1:
            raise VistError(f"an objective scores at least 1 frame, got {self.frames}")
        if self.kind == "target" and not self.trace:
            raise VistError("the target objective needs a target time course (one rate per frame)")

    def window(self, t: int) -> slice:
        """The frames of a clip of `t` frames it scores."""
        return slice(0, t) if self.kind == "target" else slice(max(0, t - self.frames), t)

    def __call__(self, rates: torch.Tensor) -> torch.Tensor:
        """rates `[T, C]` -> a scalar to maximise."""
        t, c = rates.shape
        chosen = rates[self.window(t), list(self.cells)]  # [K, n]
        if self.kind == "mei":
            return chosen.mean()
        if self.kind == "mds":
            others = [i for i in range(c) if i not in self.cells]
            rest = rates[self.window(t), others].mean() if others else rates.new_zeros(())
            return chosen.mean() - rest
        if len(self.trace or ()) != t:
            raise VistError(f"the target time course has {len(self.trace or ())} values, the clip {t} frames")
        target = torch.tensor(self.trace, dtype=rates.dtype, device=rates.device)
        return -((rates[:, self.cells[0]] - target) ** 2).mean()

    def score(self, rates: np.ndarray) -> float:
        """The same score of rates `[T, C]` as numpy."""
        return float(self(torch.from_numpy(np.asarray(rates, np.float32))))


@dataclasses.dataclass(frozen=True)
class Regularizers:
    """What keeps a clip displayable. `contrast`: every pixel stays within GREY +- contrast (a hard bound, by
    construction: 127 = the display's whole range); `smooth`: weight of the mean squared change between
    consecutive frames (temporal low-pass); `energy`: weight of the mean squared contrast. The penalties are
    on contrast units (pixel - GREY) / 128 and in the objective's units per unit of penalty."""

    contrast: float = 127.0
    smooth: float = 0.0
    energy: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.contrast <= 127:
            raise VistError(f"contrast must be in (0, 127] grey levels, got {self.contrast}")
        for name in ("smooth", "energy"):
            if getattr(self, name) < 0:
                raise VistError(f"the {name} weight must be >= 0, got {getattr(self, name)}")

    def frames(self, latent: torch.Tensor) -> torch.Tensor:
        """The unconstrained parameters -> frames in GREY +- contrast (0..255)."""
        return GREY + self.contrast * torch.tanh(latent)

    def penalty(self, frames: torch.Tensor) -> torch.Tensor:
        """The smoothness and energy penalties of frames `[T, H, W(, 3)]`."""
        x = (frames - GREY) / 128.0
        total = frames.new_zeros(())
        if self.smooth and frames.shape[0] > 1:
            total = total + self.smooth * ((x[1:] - x[:-1]) ** 2).mean()
        if self.energy:
            total = total + self.energy * (x**2).mean()
        return total
