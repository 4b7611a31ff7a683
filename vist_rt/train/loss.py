"""The Vi-ST training loss (RMSE + negativity penalty + two windowed soft-DTW terms)."""

from __future__ import annotations

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
