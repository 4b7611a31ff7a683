"""Stateful streaming Vi-ST: one new frame in, that frame's rates out.

Every per-frame activation is kept channels-last, `[B, H, W, Ch]`, which is both the token
layout of the features and the layout in which CPU depthwise convolutions are fastest.
Each temporal layer owns a ring of the inputs it still needs, laid out so that the frames one
output reads are always one contiguous block (see the two layer classes): per-step work does
not depend on history length or dilation, and nothing is copied but the new frame.
The zero ring is exactly the offline model's zero padding.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vist_rt.errors import VistError
from vist_rt.model.config import ViSTConfig
from vist_rt.model.exact import exact_context
from vist_rt.model.inputs import check_features, check_rf
from vist_rt.model.vist import C3TCNLayer, CMSTBlock, ViST


def _frozen(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().contiguous()


class _RingModule(nn.Module):
    """A streaming layer that owns a ring buffer `ring` and per-phase views into it.

    The views are made once (and again after `.to()`/`.cuda()`), never per step.
    """

    ring: torch.Tensor
    batch_dim = 0  # the ring's stream axis

    def _init_ring(self, shape: tuple[int, ...], like: torch.Tensor) -> None:
        self.register_buffer("ring", torch.zeros(shape, dtype=like.dtype, device=like.device), persistent=False)
        self._make_views()

    def _make_views(self) -> None:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # signature of nn.Module._apply
        with torch.inference_mode(False):  # state must stay writable outside inference mode
            out = super()._apply(fn, recurse)
        self._make_views()
        return out

    def reset(self, row: int | None = None) -> None:
        """Back to the zero state (the offline model's zero padding): every stream, or stream `row` only."""
        if row is None:
            self.ring.zero_()
        else:
            self.ring.select(self.batch_dim, row).zero_()


class StreamingC3TCNLayer(_RingModule):
    """One C3TCN layer with BatchNorm folded into the depthwise conv.

    Ring state `ring`: `[d, B, 3, g, g, Ch]`. Frame t is written once, to phase `t % d`,
    slot `(t // d) % 3`; the phase `t % d` then holds exactly frames t-2d, t-d, t as one
    contiguous block, in a rotated order that a pre-rotated copy of the kernel undoes.
    """

    batch_dim = 1

    def __init__(self, layer: C3TCNLayer, batch: int, side: int) -> None:
        super().__init__()
        conv, norm = layer.conv_dilated, layer.norm
        ch, d = conv.out_channels, layer.dilation
        self.dilation = d
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        w = conv.weight * scale.view(-1, 1, 1, 1, 1)  # [Ch, 1, 3, 3, 3], tap k has delay (2 - k) * d
        # rotation a: slot i holds the frame with delay ((a - i) % 3) * d, i.e. kernel tap 2 - (a - i) % 3
        rot = torch.stack([w[:, :, [2 - (a - i) % 3 for i in range(3)]] for a in range(3)])
        self.register_buffer("w_dw", _frozen(rot), persistent=False)
        self.register_buffer("b_dw", _frozen((conv.bias - norm.running_mean) * scale + norm.bias), persistent=False)
        self.register_buffer("wt_pw", _frozen(layer.conv_1x1.weight.view(ch, ch).t()), persistent=False)
        self.register_buffer("b_pw", _frozen(layer.conv_1x1.bias), persistent=False)
        self.groups = ch
        self._init_ring((d, batch, 3, side, side, ch), w)

    def _make_views(self) -> None:
        self.w_rot = list(self.w_dw.unbind(0))
        self.slots = [[self.ring[p, :, a] for a in range(3)] for p in range(self.dilation)]  # [B, g, g, Ch]
        self.taps = [self.ring[p].permute(0, 4, 1, 2, 3) for p in range(self.dilation)]  # [B, Ch, 3, g, g]

    def step(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x: [B, g, g, Ch] (frame t, consumed: it is updated in place) -> [B, g, g, Ch]."""
        d = self.dilation
        phase, rot = t % d, (t // d) % 3
        self.slots[phase][rot].copy_(x)
        h = F.conv3d(self.taps[phase], self.w_rot[rot], self.b_dw, padding=(0, 1, 1), groups=self.groups)
        h = F.relu_(h.permute(0, 2, 3, 4, 1).reshape(x.shape))
        out = x.view(-1, x.shape[-1])
        out.addmm_(h.reshape(out.shape), self.wt_pw).add_(self.b_pw)
        return x


class StreamingCMSTBlock(_RingModule):
    """One CMST block for one frame at a time.

    Ring state `ring`: `[B, 2L, H, W, C]`, L = max window, written at `t % L` and `t % L + L`
    so that the last L inputs are always one contiguous slice. The dense (w = 1) branch is a
    matmul over the frame's 3x3 patches.
    """

    def __init__(self, block: CMSTBlock, batch: int, side: int) -> None:
        super().__init__()
        c = block.mapping.out_channels
        self.out_side = side - 2
        self.length = max(block.windows)
        dense, dense_bias = [], []
        self.depthwise: list[int] = []
        for w, branch in zip(block.windows, block.embed):
            conv = branch[0].conv
            if w == 1 and conv.groups == 1:  # rows ordered (ky, kx, c_in) like the patches
                dense.append(conv.weight[:, :, 0].permute(2, 3, 1, 0).reshape(9 * c, c))
                dense_bias.append(conv.bias)
            else:
                self.depthwise.append(w)
                self.register_buffer(f"w_dw{len(self.depthwise) - 1}", _frozen(conv.weight), persistent=False)
                self.register_buffer(f"b_dw{len(self.depthwise) - 1}", _frozen(conv.bias), persistent=False)
        self.dense = len(dense)
        if dense:  # all dense branches as one matmul over the frame's 3x3 patches: [9C, dense * C]
            self.register_buffer("w_patch", _frozen(torch.cat(dense, dim=1)), persistent=False)
            self.register_buffer("b_patch", _frozen(torch.cat(dense_bias)), persistent=False)
        self.register_buffer("wt_res", _frozen(block.conv1x1.weight.view(c, c).t()), persistent=False)
        self.register_buffer("wt_map", _frozen(block.mapping.weight.view(c, c).t()), persistent=False)
        self.register_buffer("b_out", _frozen(block.mapping.bias + block.conv1x1.bias), persistent=False)
        self._init_ring((batch, 2 * self.length, side, side, c), block.mapping.weight)

    def _make_views(self) -> None:
        n = self.length
        self.kernels = [(getattr(self, f"w_dw{j}"), getattr(self, f"b_dw{j}")) for j in range(len(self.depthwise))]
        self.slots = [(self.ring[:, s], self.ring[:, s + n]) for s in range(n)]
        # windows[s][j]: the last w_j frames when frame t (t % n == s) is the newest, as [B, C, w, H, W]
        self.windows = [
            [self.ring[:, s + n + 1 - w : s + n + 1].permute(0, 4, 1, 2, 3) for w in self.depthwise] for s in range(n)
        ]

    def step(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x: [B, H, W, C] (frame t) -> [B, H-2, W-2, C]."""
        b, _, _, c = x.shape
        o = self.out_side
        n = b * o * o
        sb, sh, sw, sc = x.stride()
        acc = None
        if self.dense:
            patches = x.as_strided((b, o, o, 3, 3, c), (sb, sh, sw, sh, sw, sc)).reshape(n, 9 * c)
            mixed = torch.addmm(self.b_patch, patches, self.w_patch)  # [n, dense * C]
            acc = F.leaky_relu_(mixed[:, :c], 0.1)
            for k in range(1, self.dense):
                acc = acc.add_(F.leaky_relu_(mixed[:, k * c : (k + 1) * c], 0.1))
        if self.depthwise:
            s = t % self.length
            first, second = self.slots[s]
            first.copy_(x)
            second.copy_(x)
            for window, (weight, bias) in zip(self.windows[s], self.kernels):
                y = F.conv3d(window, weight, bias, groups=c)
                y = F.leaky_relu_(y.permute(0, 2, 3, 4, 1).reshape(n, c), 0.1)
                acc = y if acc is None else acc.add_(y)
        assert acc is not None
        # AvgPool(conv1x1(x)) == conv1x1(AvgPool(x)): pool first, on C channels, then one matmul
        pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), 3, stride=1).permute(0, 2, 3, 1).reshape(n, c)
        out = torch.addmm(self.b_out, acc, self.wt_map)
        return out.addmm_(pooled, self.wt_res).view(b, o, o, c)


def check_row(row: int, batch: int) -> None:
    """VistError unless `row` is a stream of a batch of `batch`."""
    if not 0 <= row < batch:
        raise VistError(f"stream row {row} is not in 0..{batch - 1}")


@torch.no_grad()
def adaln_terms(
    rf: torch.Tensor, w_mod: torch.Tensor, b_mod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdaLN-Zero (shift, 1 + scale, gate), each [B, g, g, C], from rf [B, C, g, g] and conv_c as w_mod [3C, C]."""
    c = rf.shape[1]
    cond = F.silu(rf.sum(dim=1)).unsqueeze(-1).expand(-1, -1, -1, c)  # [B, g, g, C]
    shift, scale, gate = F.linear(cond, w_mod, b_mod).split(c, dim=-1)
    return shift, 1 + scale, gate


@dataclasses.dataclass(frozen=True)
class StreamState:
    """A copy of a stream's state: step count and every layer's ring."""

    t: int
    rings: tuple[torch.Tensor, ...]


def restore_rings(state: StreamState, rings: list[torch.Tensor]) -> int:
    """Copy state's rings into `rings` (checked: same count, shapes and dtypes); return its step count."""
    if len(state.rings) != len(rings) or any(
        r.shape != m.shape or r.dtype != m.dtype for r, m in zip(state.rings, rings)
    ):
        raise VistError("state does not belong to a stream of this kind, shape and dtype")
    if not isinstance(state.t, int) or state.t < 0:
        raise VistError(f"state step count must be an integer >= 0, got {state.t!r}")
    for ring, src in zip(rings, state.rings):
        ring.copy_(src)
    return state.t


class StreamingViST(nn.Module):
    """Vi-ST that steps one frame at a time for B independent streams, equal to the offline forward."""

    def __init__(self, model: ViST, rf: torch.Tensor, batch: int | None = None) -> None:
        super().__init__()
        cfg = model.config
        self.config: ViSTConfig = cfg
        ref = model.stage1.conv_1x1.weight
        rf = check_rf(rf, cfg).to(device=ref.device, dtype=ref.dtype)
        self.batch = int(batch if batch is not None else rf.shape[0])
        g, ch, c = cfg.grid, cfg.video_dim, cfg.cells
        self.t = 0
        # a snapshot of the model's weights; normal (not inference) tensors even if built in inference mode
        with torch.inference_mode(False), torch.no_grad():
            s1 = model.stage1
            # matmul weights are stored transposed, [in, out], for addmm on channels-last rows
            self.register_buffer("wt_in", _frozen(s1.conv_1x1.weight.view(ch, cfg.feature_dim).t()), persistent=False)
            self.register_buffer("b_in", _frozen(s1.conv_1x1.bias), persistent=False)
            self.layers = nn.ModuleList(StreamingC3TCNLayer(layer, self.batch, g) for layer in s1.layers)
            self.register_buffer("wt_out", _frozen(s1.conv_out.weight.view(c, ch).t()), persistent=False)
            self.register_buffer("b_out", _frozen(s1.conv_out.bias), persistent=False)
            if model.adaln is not None:
                net, mod = model.adaln.net[1], model.adaln.adaLN_modulation[1]
                w_mod, b_mod = mod.weight.view(3 * c, c), mod.bias
                wt_ada, b_ada = net.weight.view(c, c).t(), net.bias
            else:  # no RF conditioning: zero weights make shift 0, scale 1, gate 0, i.e. x + 0 (exactly x)
                w_mod, b_mod, wt_ada, b_ada = (ref.new_zeros(shape) for shape in ((3 * c, c), (3 * c,), (c, c), (c,)))
            self.register_buffer("w_mod", _frozen(w_mod), persistent=False)
            self.register_buffer("b_mod", _frozen(b_mod), persistent=False)
            self.register_buffer("wt_ada", _frozen(wt_ada), persistent=False)
            self.register_buffer("b_ada", _frozen(b_ada), persistent=False)
            for name in ("shift", "one_plus_scale", "gate"):
                self.register_buffer(
                    name, torch.zeros(self.batch, g, g, c, dtype=ref.dtype, device=ref.device), persistent=False
                )
            sides = [g - 2 * k for k in range(len(cfg.windows))]
            self.blocks = nn.ModuleList(
                StreamingCMSTBlock(block, self.batch, side) for block, side in zip(model.blocks, sides)
            )
            r = cfg.readout_grid
            w_read = model.readout.weight.view(c, c, r, r).permute(0, 2, 3, 1).reshape(c, r * r * c)
            self.register_buffer("wt_read", _frozen(w_read.t()), persistent=False)
            self.register_buffer("b_read", _frozen(model.readout.bias), persistent=False)
            self.set_rf(rf)

    @classmethod
    def from_model(cls, model: ViST, rf: torch.Tensor, batch: int | None = None) -> StreamingViST:
        """Snapshot `model`'s weights (eval semantics) for streams conditioned on rf: [B, C, g, g] or [C, g, g]."""
        return cls(model, rf, batch).eval()

    def set_rf(self, rf: torch.Tensor) -> None:
        """Recompute the AdaLN shift/scale/gate for a new RF set ([B or 1, C, g, g]); the ring state is kept."""
        rf = check_rf(rf, self.config, streams=self.batch).to(self.shift)
        for dst, term in zip((self.shift, self.one_plus_scale, self.gate), adaln_terms(rf, self.w_mod, self.b_mod)):
            dst.copy_(term.expand_as(dst))

    @property
    def receptive_field(self) -> int:
        """Frames that influence one output."""
        return self.config.receptive_field

    def reset(self, row: int | None = None) -> None:
        """Return every stream (or stream `row` only) to the zero state, as if no frame had been seen: its next
        outputs equal a fresh stream's (a zero ring is the offline model's zero padding, at any phase)."""
        if row is not None:
            check_row(row, self.batch)
        for layer in (*self.layers, *self.blocks):
            layer.reset(row)
        if row is None:
            self.t = 0

    def get_state(self) -> StreamState:
        """A copy of the current state (for snapshots, tests and export)."""
        return StreamState(self.t, tuple(m.ring.clone() for m in (*self.layers, *self.blocks)))

    def set_state(self, state: StreamState) -> None:
        """Restore a state taken with get_state()."""
        self.t = restore_rings(state, [m.ring for m in (*self.layers, *self.blocks)])

    @torch.inference_mode()
    def step(self, features_t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """features_t: [B, grid*grid, D] for the newest frame -> rates [B, C] for that frame.

        Invalid input (wrong shape, NaN/inf) raises VistError and leaves the state untouched.
        """
        if isinstance(features_t, np.ndarray):
            features_t = torch.from_numpy(features_t)
        check_features(features_t, self.config, streaming=True, batch=self.batch)
        with exact_context(self.wt_in.device)():
            return self._step(features_t.to(device=self.wt_in.device, dtype=self.wt_in.dtype))

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, grid*grid, D] checked features on the model's device -> rates [B, C]; advances t."""
        b, g = self.batch, self.config.grid
        t = self.t
        x = torch.addmm(self.b_in, x.reshape(b * g * g, -1), self.wt_in).view(b, g, g, -1)
        for layer in self.layers:
            x = layer.step(x, t)
        x = torch.addmm(self.b_out, x.view(b * g * g, -1), self.wt_out).view(b, g, g, -1)
        h = F.silu(torch.addcmul(self.shift, x, self.one_plus_scale), inplace=True)
        x = torch.addcmul(x, self.gate, torch.addmm(self.b_ada, h.view(b * g * g, -1), self.wt_ada).view(h.shape))
        for block in self.blocks:
            x = block.step(x, t)
        self.t = t + 1
        return torch.addmm(self.b_read, x.reshape(b, -1), self.wt_read)

    forward = step


class RowStreams(nn.Module):
    """B one-stream `StreamingViST`s stepped one after the other: the interface of a B-stream StreamingViST whose
    rows are each bit for bit a one-stream step (a batched torch step is not: BLAS blocks, and vectorised
    element-wise loops split, by the tensor's size, so a row's rounding depends on B). Each row has its own t:
    `reset(row)` makes that row a fresh stream exactly."""

    def __init__(self, model: ViST, rf: torch.Tensor) -> None:
        super().__init__()
        rf = check_rf(rf, model.config)
        self.config: ViSTConfig = model.config
        self.batch = int(rf.shape[0])
        self.rows = nn.ModuleList(StreamingViST.from_model(model, rf[b : b + 1]) for b in range(self.batch))

    @classmethod
    def from_model(cls, model: ViST, rf: torch.Tensor) -> RowStreams:
        """Snapshot `model`'s weights for streams conditioned on rf: [B, C, g, g]."""
        return cls(model, rf).eval()

    @property
    def receptive_field(self) -> int:
        """Frames that influence one output."""
        return self.config.receptive_field

    def set_rf(self, rf: torch.Tensor) -> None:
        """New RF sets ([B or 1, C, g, g]); the ring states are kept."""
        rf = check_rf(rf, self.config, streams=self.batch)
        for b, row in enumerate(self.rows):
            row.set_rf(rf[b : b + 1] if rf.shape[0] > 1 else rf)

    def reset(self, row: int | None = None) -> None:
        """Every stream (or stream `row` only) back to a fresh stream's state."""
        if row is not None:
            check_row(row, self.batch)
        for b, stream in enumerate(self.rows):
            if row is None or b == row:
                stream.reset()

    @torch.inference_mode()
    def step(self, features_t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """features_t: [B, grid*grid, D] -> rates [B, C]; invalid input raises VistError and changes no state."""
        if isinstance(features_t, np.ndarray):
            features_t = torch.from_numpy(features_t)
        check_features(features_t, self.config, streaming=True, batch=self.batch)  # once, for every row
        first = self.rows[0]
        x = features_t.to(device=first.wt_in.device, dtype=first.wt_in.dtype)
        with exact_context(first.wt_in.device)():
            return torch.cat([row._step(x[b : b + 1]) for b, row in enumerate(self.rows)])

    forward = step
