"""Training losses on predicted and recorded rates `[B, T, C]`: the Vi-ST loss (RMSE + negativity penalty + two
windowed soft-DTW terms), RMSE alone (the paper's Fig. 5a comparison), and the Poisson negative log-likelihood."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vist_rt.errors import VistError
from vist_rt.train.softdtw import windowed_sdtw

W_RMSE = 0.1
W_NEG = 0.5
W_SDTW = 0.5e-5


def vist_loss(y_hat: torch.Tensor, y: torch.Tensor, gamma: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """Vi-ST loss on y_hat, y ``[B, T, C]``: ``0.1*RMSE + 0.5*mean(ReLU(-y_hat)) + 0.5e-5*(SDTW(T//20) + SDTW(T//10))``.

    RMSE is over all elements. Returns the scalar total (with grad) and the unweighted parts plus
    the total as floats for logging: ``rmse, neg, sdtw_w20, sdtw_w10, total``. Half/bfloat16
    inputs are computed in float32. Note: the gradient of RMSE is undefined (NaN) when y_hat == y
    exactly everywhere, as for any sqrt(mean squared error).
    """
    if y_hat.dim() != 3 or y_hat.shape != y.shape:
        raise VistError(f"vist_loss needs equal [B, T, C] shapes, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    if y_hat.dtype in (torch.float16, torch.bfloat16):
        y_hat = y_hat.float()  # soft-DTW and RMSE in float32 under mixed precision
    y = y.to(y_hat.dtype)
    t = y_hat.shape[1]
    rmse = torch.sqrt(torch.mean((y_hat - y) ** 2))
    neg = torch.relu(-y_hat).mean()
    s20 = windowed_sdtw(y_hat, y, t // 20, gamma)
    s10 = windowed_sdtw(y_hat, y, t // 10, gamma)
    total = W_RMSE * rmse + W_NEG * neg + W_SDTW * s20 + W_SDTW * s10
    parts = {
        "rmse": float(rmse.detach()),
        "neg": float(neg.detach()),
        "sdtw_w20": float(s20.detach()),
        "sdtw_w10": float(s10.detach()),
        "total": float(total.detach()),
    }
    return total, parts


POISSON_EPS = 1e-3  # spikes/s: the smallest rate the Poisson likelihood is evaluated at


def _pair(y_hat: torch.Tensor, y: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if y_hat.dim() != 3 or y_hat.shape != y.shape:
        raise VistError(f"{name} needs equal [B, T, C] shapes, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    if y_hat.dtype in (torch.float16, torch.bfloat16):
        y_hat = y_hat.float()
    return y_hat, y.to(y_hat.dtype)


def rmse_loss(y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """RMSE over all elements of `[B, T, C]` (Fig. 5a's alternative to the Vi-ST loss); parts `rmse, total`."""
    y_hat, y = _pair(y_hat, y, "rmse_loss")
    rmse = torch.sqrt(torch.mean((y_hat - y) ** 2))
    return rmse, {"rmse": float(rmse.detach()), "total": float(rmse.detach())}


def poisson_loss(y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Poisson negative log-likelihood of rates y given predicted rates y_hat `[B, T, C]` (spikes/s; per bin it is
    the count likelihood up to a factor 1/fps and a constant): mean(r - y log r), r = max(y_hat, POISSON_EPS), plus
    the Vi-ST loss's negativity penalty (the rate is the model's output itself, so a run needs no link function,
    and an output below zero still has a gradient). Parts `nll, neg, total`."""
    y_hat, y = _pair(y_hat, y, "poisson_loss")
    r = y_hat.clamp_min(POISSON_EPS)
    nll = torch.mean(r - y * torch.log(r))
    neg = torch.relu(-y_hat).mean()
    total = nll + W_NEG * neg
    return total, {"nll": float(nll.detach()), "neg": float(neg.detach()), "total": float(total.detach())}


LossFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
LOSSES: dict[str, LossFunction] = {"vist": vist_loss, "rmse": rmse_loss, "poisson": poisson_loss}  # --loss NAME


def loss_function(name: str) -> LossFunction:
    """The loss called `name` (one of LOSSES); one VistError line otherwise."""
    if name not in LOSSES:
        raise VistError(f"unknown loss {name!r}; one of {', '.join(LOSSES)}")
    return LOSSES[name]
