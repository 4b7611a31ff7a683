"""How close low-precision ViT features are to fp32 ones: the bounds a CPU path must meet to be offered by `auto`."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Per-token cosine similarity to fp32 (mean and every token), and the per-cell CC of the Vi-ST rates computed
    from the features with the rates from fp32 features (every cell, over >= 300 frames)."""

    mean_cos: float = 0.999
    min_cos: float = 0.99
    rate_cc: float = 0.999


BOUNDS = Bounds()


def token_cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """float `[..., D]` tokens vs reference tokens of the same shape -> float64 `[n_tokens]` cosine similarities."""
    if out.shape != ref.shape:
        raise ValueError(f"tokens {list(out.shape)} and reference {list(ref.shape)} differ in shape")
    a = out.reshape(-1, out.shape[-1]).astype(np.float64)
    b = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.maximum(norms, np.finfo(np.float64).tiny)


def agreement(tokens: np.ndarray, ref_tokens: np.ndarray) -> dict[str, float]:
    """mean_cos and min_cos of the tokens against fp32, and whether they meet BOUNDS."""
    cos = token_cosines(tokens, ref_tokens)
    mean, low = float(cos.mean()), float(cos.min())
    return {"mean_cos": mean, "min_cos": low, "within": mean >= BOUNDS.mean_cos and low >= BOUNDS.min_cos}
