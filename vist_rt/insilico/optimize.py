"""Gradient ascent on a clip's pixels through the emulator: a seeded start near grey, Adam, a stopper."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch

from vist_rt.errors import VistError
from vist_rt.insilico.differentiable import PixelsToRates
from vist_rt.insilico.objectives import Objective, Regularizers

MEMORY_SHARE = 0.5  # a clip may use at most this share of the memory available now


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the optimization runs: at most `steps` Adam steps of rate `lr` on the frames' parameters, stopped
    early when the objective has not risen by `min_delta` for `patience` steps; `seed` draws the start (grey plus
    small noise)."""

    steps: int = 300
    lr: float = 0.05
    patience: int = 40
    min_delta: float = 1e-3
    seed: int = 0
    start_noise: float = 0.1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.patience < 1:
            raise VistError(f"steps and patience must be >= 1, got {self.steps} and {self.patience}")
        if not self.lr > 0:
            raise VistError(f"the learning rate must be > 0, got {self.lr}")
        if not 0 <= self.seed < 2**63:
            raise VistError(f"seed must be in 0..2**63-1, got {self.seed}")


@dataclasses.dataclass(frozen=True)
class Optimized:
    """The clip found: uint8 frames `[T, H, W(, 3)]`, the objective after each step (penalties not included),
    the steps run, why it stopped, and the objective of the uint8 clip itself."""

    stimulus: np.ndarray
    history: list[float]
    steps: int
    stopped: str
    score: float


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable: free plus reclaimable cache; free pages where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_frames(frames: int, net: PixelsToRates, color: bool) -> None:
    """One line for a clip of no frames, or one too long for the memory available here."""
    if frames < 1:
        raise VistError(f"a clip needs at least 1 frame, got {frames}")
    cfg = net.model.config
    s, (h, w) = net.image_size, net.size
    values = (h * w * (3 if color else 1) * 4 + 3 * s * s * 6 + cfg.tokens * cfg.feature_dim * 4
              + cfg.tokens * cfg.video_dim * (cfg.video_layers + 2) * 6 + cfg.tokens * cfg.cells * 40)  # fmt: skip
    per_frame = 4 * values  # float32 activations kept for the backward pass, a generous count
    if net.vit is not None:  # per block: ~16 activations per token and channel, and the attention maps
        vit = net.vit.vit
        blocks, heads, n = len(vit.blocks), vit.blocks[0].attn.num_heads, cfg.tokens + 1 + vit.num_reg_tokens
        per_frame += 4 * blocks * (16 * n * vit.embed_dim + 2 * heads * n * n)
    available = available_memory()
    need = frames * per_frame
    if need > MEMORY_SHARE * available:
        raise VistError(
            f"a clip of {frames} frames needs about {need / 2**30:.1f} GiB to optimize, more than "
            f"{MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available: use fewer --frames"
        )


def optimize_stimulus(
    net: PixelsToRates,
    objective: Objective,
    regularizers: Regularizers,
    *,
    frames: int,
    color: bool = False,
    settings: Settings | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Optimized:
    """A clip of `frames` frames (grey, or RGB with `color`) at the net's frame size maximising `objective` of
    its predicted rates minus the regularizers' penalties. `progress(step, steps, objective)` after each step."""
    opts = settings or Settings()
    check_frames(frames, net, color)
    h, w = net.size
    shape = (frames, h, w, 3) if color else (frames, h, w)
    gen = torch.Generator().manual_seed(opts.seed)
    seen = net.visible[..., None] if color else net.visible  # pixels outside the model's crop stay grey
    latent = (opts.start_noise * torch.randn(shape, generator=gen) * seen).requires_grad_(True)
    adam = torch.optim.Adam([latent], lr=opts.lr)
    history: list[float] = []
    best, best_latent, since = -np.inf, latent.detach().clone(), 0
    stopped = "max steps"
    for step in range(1, opts.steps + 1):
        adam.zero_grad(set_to_none=True)
        clip = regularizers.frames(latent * seen)
        value, penalty = objective(net(clip)), regularizers.penalty(clip)
        (penalty - value).backward()
        score, total = float(value.detach()), float((value - penalty).detach())
        if total > best + opts.min_delta:
            best, best_latent, since = total, latent.detach().clone(), 0  # the parameters scored, before the step
        else:
            since += 1
        adam.step()
        history.append(score)
        if progress is not None:
            progress(step, opts.steps, score)
        if since >= opts.patience:
            stopped = "converged"
            break
    with torch.no_grad():
        clip = regularizers.frames(best_latent * seen).round().clamp(0, 255)
        final = float(objective(net(clip)))
    return Optimized(clip.numpy().astype(np.uint8), history, len(history), stopped, final)
