"""The published training recipe as data: window sampling and the learning-rate schedule (with SWA).

model.md, "Training as published": windows of 128 frames, batch 16, 48 batches per epoch, 30 epochs;
AdamW lr 8e-4, weight decay 0.1; linear warm-up from 5e-5 to 8e-4 over 5 epochs, then cosine decay
to 1e-4; stochastic weight averaging from epoch 20 at lr 1e-4 (cosine annealing over 5 epochs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from vist_rt.errors import VistError
from vist_rt.train.loss import LOSSES


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (defaults: the published ones)."""

    window: int = 128
    batch: int = 16
    batches_per_epoch: int = 48
    epochs: int = 30
    lr: float = 8e-4
    lr_start: float = 5e-5
    lr_end: float = 1e-4
    warmup_epochs: int = 5
    weight_decay: float = 0.1
    swa_start: int = 20  # epoch from which weights are averaged
    swa_lr: float = 1e-4
    swa_anneal_epochs: int = 5
    loss: str = "vist"  # one of vist_rt.train.loss.LOSSES: vist (published), rmse, poisson

    def __post_init__(self) -> None:
        ints = ("window", "batch", "batches_per_epoch", "epochs")
        if any(getattr(self, k) < 1 for k in ints):
            raise VistError(f"{', '.join(ints)} must be >= 1")
        if not 0 <= self.warmup_epochs <= self.epochs or not 0 <= self.swa_start <= self.epochs:
            raise VistError("warm-up and SWA start must lie within the epochs")
        if self.loss not in LOSSES:
            raise VistError(f"unknown loss {self.loss!r}; one of {', '.join(LOSSES)}")
        if self.swa_anneal_epochs < 0:
            raise VistError(f"swa_anneal_epochs must be >= 0, got {self.swa_anneal_epochs}")
        for key in ("lr", "lr_start", "lr_end", "swa_lr", "weight_decay"):  # AdamW's and the schedule's rates
            value = getattr(self, key)
            low_ok = value > 0 if key == "lr" else value >= 0
            if not (math.isfinite(value) and low_ok):
                raise VistError(f"{key} must be a finite number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}")

    @property
    def steps(self) -> int:
        """Optimiser steps in the whole run."""
        return self.epochs * self.batches_per_epoch


PRESETS = {
    "paper": Recipe(),
    # two CPU cores, minutes not hours: shorter windows, fewer and smaller batches, the same schedule shape; a
    # larger step for the fewer steps (tuned on a family of simulated retinas, docs/science/family.md)
    "cpu-small": Recipe(
        window=64,
        batch=8,
        batches_per_epoch=16,
        epochs=16,
        warmup_epochs=2,
        swa_start=12,
        swa_anneal_epochs=2,
        lr=4e-3,
        lr_end=4e-4,
        swa_lr=4e-4,
    ),
}


def learning_rate(step: int, recipe: Recipe) -> float:
    """The learning rate of optimiser step `step` (0-based): warm-up, cosine decay, then the SWA phase."""
    per = recipe.batches_per_epoch
    epoch = step / per
    if epoch < recipe.warmup_epochs:
        return recipe.lr_start + (recipe.lr - recipe.lr_start) * epoch / recipe.warmup_epochs
    if epoch >= recipe.swa_start:
        # SWA: cosine annealing from the current lr to swa_lr over swa_anneal_epochs, then constant
        start_lr = learning_rate(recipe.swa_start * per - 1, recipe) if recipe.swa_start * per > 0 else recipe.lr
        t = min(1.0, (epoch - recipe.swa_start) / max(recipe.swa_anneal_epochs, 1e-9))
        return recipe.swa_lr + (start_lr - recipe.swa_lr) * (1 + math.cos(math.pi * t)) / 2
    span = max(recipe.epochs - recipe.warmup_epochs, 1e-9)
    t = (epoch - recipe.warmup_epochs) / span
    return recipe.lr_end + (recipe.lr - recipe.lr_end) * (1 + math.cos(math.pi * t)) / 2


def window_starts(n_frames: int | Sequence[int], recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """`batch` random window starts, uniform over every window that lies fully inside one movie.

    `n_frames`: a movie's length, or the lengths of several movies joined end to end (the starts index the
    joined frames; no window crosses from one movie into the next). One movie draws exactly as it always has."""
    lengths = np.atleast_1d(np.asarray(n_frames, dtype=np.int64))
    counts = np.maximum(lengths - recipe.window + 1, 0)  # windows per movie
    if (counts == 0).any():
        short = int(np.flatnonzero(counts == 0)[0])
        which = "the movie" if lengths.size == 1 else f"movie {short + 1} of {lengths.size}"
        raise VistError(f"{which} has {lengths[short]} frames, fewer than one {recipe.window}-frame window")
    k = rng.integers(0, int(counts.sum()), size=recipe.batch)  # [batch] index among all windows
    movie = np.searchsorted(np.cumsum(counts), k, side="right")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # where each movie begins in the joined frames
    skipped = np.concatenate([[0], np.cumsum(counts)[:-1]])  # windows in the movies before
    return offsets[movie] + (k - skipped[movie])
