"""The offline Vi-ST spikes alignment module (C3TCN + AdaLN-Zero + CMST + readout).

Module and parameter names follow the authors' released checkpoint (under `net.`), so
`ViST.state_dict()` equals theirs without the prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vist_rt.errors import VistError
from vist_rt.model.config import ViSTConfig
from vist_rt.model.inputs import check_features, check_rf


class CausalConv3d(nn.Module):
    """Conv3d whose time axis is left-padded with zeros (causal); space padding is symmetric."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int, int],
        *,
        dilation: int = 1,
        space_pad: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.time_pad = (kernel[0] - 1) * dilation
        self.space_pad = space_pad
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, dilation=(dilation, 1, 1), groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, Cin, T, H, W] -> [B, Cout, T, H - k + 1 + 2p, W - k + 1 + 2p]."""
        p = self.space_pad
        return self.conv(F.pad(x, (p, p, p, p, self.time_pad, 0)))


class C3TCNLayer(nn.Module):
    """Residual causal depthwise dilated 3-D conv layer."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.dilation = dilation
        self.conv_dilated = nn.Conv3d(channels, channels, 3, dilation=(dilation, 1, 1), groups=channels)
        self.norm = nn.BatchNorm3d(channels)
        self.conv_1x1 = nn.Conv3d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, Ch, T, H, W] -> same shape."""
        h = F.pad(x, (1, 1, 1, 1, 2 * self.dilation, 0))
        h = F.relu(self.norm(self.conv_dilated(h)))
        return x + self.dropout(self.conv_1x1(h))


class C3TCN(nn.Module):
    """Input projection, dilated layers (dilation 2**i), projection to one channel per cell."""

    def __init__(self, cfg: ViSTConfig) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv3d(cfg.feature_dim, cfg.video_dim, 1)
        self.layers = nn.ModuleList(C3TCNLayer(cfg.video_dim, d, cfg.dropout) for d in cfg.dilations)
        self.conv_out = nn.Conv3d(cfg.video_dim, cfg.cells, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, D, T, g, g] -> [B, C, T, g, g]."""
        x = self.conv_1x1(x)
        for layer in self.layers:
            x = layer(x)
        return self.conv_out(x)


class AdaLNZero(nn.Module):
    """RF conditioning: x + gate * conv_x(SiLU(x * (1 + scale) + shift)), (shift, scale, gate) from c."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Conv3d(channels, 3 * channels, 1))
        self.net = nn.Sequential(nn.SiLU(), nn.Conv3d(channels, channels, 1))
        nn.init.zeros_(self.adaLN_modulation[1].weight)
        nn.init.zeros_(self.adaLN_modulation[1].bias)
        nn.init.normal_(self.net[1].weight, std=0.02)
        nn.init.zeros_(self.net[1].bias)

    def modulation(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """c: [B, C, T', g, g] -> shift, scale, gate, each [B, C, T', g, g]."""
        shift, scale, gate = self.adaLN_modulation(c).chunk(3, dim=1)
        return shift, scale, gate

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T, g, g]; c broadcastable to x (T' = 1 or T)."""
        shift, scale, gate = self.modulation(c)
        return x + gate * self.net(x * (1 + scale) + shift)


class CMSTBlock(nn.Module):
    """Causal multiscale spatiotemporal block: one branch per time window, space shrinks by 2."""

    def __init__(self, channels: int, windows: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.windows = windows
        self.embed = nn.ModuleList(
            nn.Sequential(
                CausalConv3d(channels, channels, (w, 3, 3), groups=1 if w == 1 else channels),
                nn.LeakyReLU(0.1),
                nn.Dropout3d(dropout),
            )
            for w in windows
        )
        self.mapping = nn.Conv3d(channels, channels, 1)
        self.conv1x1 = nn.Conv3d(channels, channels, 1)
        self.pool = nn.AvgPool3d((1, 3, 3), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, T, H, W] -> [B, C, T, H - 2, W - 2]."""
        branches = self.embed[0](x)
        for branch in self.embed[1:]:
            branches = branches + branch(x)
        return self.mapping(branches) + self.pool(self.conv1x1(x))


class ViST(nn.Module):
    """Vi-ST spikes alignment module: per-frame ViT tokens + RF masks -> firing rate per cell and frame."""

    def __init__(self, config: ViSTConfig | None = None) -> None:
        super().__init__()
        cfg = config or ViSTConfig()
        self.config = cfg
        self.stage1 = C3TCN(cfg)
        self.adaln = AdaLNZero(cfg.cells) if cfg.rf_conditioning else None
        for k, ws in enumerate(cfg.windows, start=1):
            self.add_module(f"msb_{k}", CMSTBlock(cfg.cells, ws, cfg.dropout))
        self.add_module(f"msb_{len(cfg.windows) + 1}", nn.Linear(cfg.cells * cfg.readout_grid**2, cfg.cells))

    @property
    def blocks(self) -> list[CMSTBlock]:
        """The CMST blocks, in order."""
        return [getattr(self, f"msb_{k}") for k in range(1, len(self.config.windows) + 1)]

    @property
    def readout(self) -> nn.Linear:
        """Linear readout from the flattened last map to one rate per cell."""
        return getattr(self, f"msb_{len(self.config.windows) + 1}")

    def condition(self, rf: torch.Tensor) -> torch.Tensor:
        """rf: [B, C, g, g] -> AdaLN condition [B, C, 1, g, g] (sum of the cells' masks, on every channel)."""
        total = rf.sum(dim=1, keepdim=True)  # [B, 1, g, g]
        return total.unsqueeze(2).expand(-1, self.config.cells, 1, -1, -1)

    def forward(self, features: torch.Tensor, rf: torch.Tensor) -> torch.Tensor:
        """features: [B, T, grid*grid, D]; rf: [B, C, grid, grid] (or [C, grid, grid]) -> rates [B, C, T]."""
        cfg = self.config
        check_features(features, cfg, streaming=False)
        features = features.to(self.stage1.conv_1x1.weight.dtype)
        rf = check_rf(rf, cfg).to(features)
        b, t = features.shape[:2]
        if rf.shape[0] not in (1, b):
            raise VistError(f"rf holds {rf.shape[0]} RF sets but features hold {b} sequences")
        x = features.permute(0, 3, 1, 2).reshape(b, cfg.feature_dim, t, cfg.grid, cfg.grid)
        x = self.stage1(x)
        if self.adaln is not None:
            x = self.adaln(x, self.condition(rf))
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 2, 1, 3, 4).reshape(b, t, -1)  # flatten (channel, row, col) per frame
        return self.readout(x).transpose(1, 2)


def perturb(model: ViST, seed: int = 0) -> ViST:
    """Random weights (of `seed`) where no term is a no-op: non-trivial BatchNorm statistics, a non-zero AdaLN,
    outputs ~ unit scale; eval mode. A stand-in for a trained model where only its sensitivity to its inputs
    matters (the golden tests, the low-precision features' effect on rates)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
        for layer in model.stage1.layers:
            n = layer.norm
            n.running_mean.copy_(torch.randn(n.running_mean.shape, generator=gen) * 0.3)
            n.running_var.copy_(torch.rand(n.running_var.shape, generator=gen) + 0.5)
            n.weight.copy_(1 + 0.3 * torch.randn(n.weight.shape, generator=gen))
        if model.adaln is not None:  # (the no-rf ablation has none)
            mod = model.adaln.adaLN_modulation[1]
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * 0.3)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.3)
        # scale the readout so that outputs are unit-scale (the golden tests' tolerances assume it)
        cfg = model.config
        model.eval()
        probe = model(
            torch.randn(1, 64, cfg.tokens, cfg.feature_dim, generator=gen),
            torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=gen),
        )
        std = float(probe.std())
        model.readout.weight.div_(std)
        model.readout.bias.div_(std)
    return model


def step_macs(cfg: ViSTConfig) -> int:
    """Multiply-adds to produce one new output frame when nothing is recomputed."""
    g, ch, c = cfg.grid, cfg.video_dim, cfg.cells
    n = g * g
    total = n * cfg.feature_dim * ch  # input projection
    total += cfg.video_layers * (n * ch * 27 + n * ch * ch)  # depthwise 3x3x3 + 1x1
    total += n * ch * c  # conv_out
    total += n * c * c  # AdaLN conv_x (shift/scale/gate are precomputed)
    side = g
    for ws in cfg.windows:
        out = (side - 2) ** 2
        for w in ws:
            total += out * c * 9 * (c if w == 1 else w)
        total += out * c * c  # mapping
        total += side * side * c * c  # conv1x1 of the block input
        side -= 2
    total += c * side * side * c  # readout
    return total
