"""The streaming Vi-ST step as a pure function with its state as explicit inputs/outputs, exported to ONNX.

`StepGraph` computes what `StreamingViST.step` computes for one frame, but owns no state: the
past frames each temporal layer reads come in as inputs and the frame it must remember goes out
as an output. `OnnxStreamingViST` runs the exported graph under ONNX Runtime and owns the rings.

Public contract of the `temporal-step` ONNX graph (names are stable; all float32, static shapes).
Layout is channels-first (NCHW): ONNX Runtime's fast convolution kernels (and TensorRT's) use it,
and on this model keeping the state channels-last costs more in transposes than the convs take.
The cell channels are zero-padded from C to Cp = C rounded up to a multiple of 16 (`spec.cells_padded`)
so that the CMST convolutions take the blocked-layout kernels; the padded channels stay exactly 0.

    B batch (fixed at export), N = grid*grid tokens, D feature dim, Ch video_dim, C cells,
    g grid, d_i = 2**i dilation of C3TCN layer i, L_k max window of CMST block k,
    H_k = W_k = g - 2k side of block k's input.

    inputs
      features          [B, N, D]              tokens of frame t
      shift             [B, Cp, g, g]          AdaLN shift (from the RF set; padded channels 0)
      one_plus_scale    [B, Cp, g, g]          AdaLN 1 + scale
      gate              [B, Cp, g, g]          AdaLN gate
      tcn{i}_d1         [B, Ch, g, g]          input of C3TCN layer i at frame t - d_i (zeros before the stream)
      tcn{i}_d2         [B, Ch, g, g]          input of C3TCN layer i at frame t - 2*d_i
      cmst{k}_past      [L_k-1, B, Cp, H_k, W_k]   inputs of CMST block k at frames t-L_k+1 .. t-1, oldest first
    outputs
      rates             [B, C]                 firing rates of frame t
      tcn{i}_new        [B, Ch, g, g]          input of C3TCN layer i at frame t (to remember)
      cmst{k}_new       [B, Cp, H_k, W_k]      input of CMST block k at frame t (to remember)

Inputs come in this order: features, shift, one_plus_scale, gate, tcn0_d1, tcn0_d2, tcn1_d1, ...,
cmst0_past, ...; outputs: rates, tcn0_new, ..., cmst0_new, .... A CMST block whose windows are
all 1 needs no past and has neither `cmst{k}_past` nor `cmst{k}_new` (k keeps the block's index).
The past is time-major (`[L-1, B, ...]`) so that a ring of frames hands it over as one contiguous
slice for any B. The file's `vist_rt` metadata `spec` holds the model config, batch, dtype, the
padded cell count and `weights_sha256`, a hash of the graph's weights, to refuse another model's file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vist_rt.errors import VistError
from vist_rt.export.onnx import export_module, read_meta
from vist_rt.export.ort import make_session
from vist_rt.model.config import ViSTConfig
from vist_rt.model.inputs import check_features, check_rf
from vist_rt.model.streaming import StreamingViST, StreamState, adaln_terms
from vist_rt.model.vist import ViST

KIND = "temporal-step"
CHANNEL_ALIGN = 16
LAYOUT = "nchw-v1"


def _pad(w: torch.Tensor, size: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad `w` to `size` along each of `dims` (a contiguous copy)."""
    for d in dims:
        extra = list(w.shape)
        extra[d] = size - w.shape[d]
        w = torch.cat([w, w.new_zeros(extra)], dim=d)
    return w.contiguous()


class StepGraph(nn.Module):
    """One streaming step as a pure function (see the module docstring for the I/O contract).

    Built from a `StreamingViST`: its frozen, BatchNorm-folded weights are reused (only re-laid out
    channels-first and zero-padded); nothing in `forward` depends on the step count.
    """

    def __init__(self, stream: StreamingViST) -> None:
        super().__init__()
        cfg = stream.config
        self.config: ViSTConfig = cfg
        self.batch = b = stream.batch
        ch, c = cfg.video_dim, cfg.cells
        cp = -(-c // CHANNEL_ALIGN) * CHANNEL_ALIGN
        self.cells_padded = cp
        self.dilations = [layer.dilation for layer in stream.layers]
        with torch.no_grad():
            self.register_buffer("w_in", stream.wt_in.t().contiguous(), persistent=False)  # [Ch, D]
            self.register_buffer("b_in", stream.b_in.view(ch, 1).clone(), persistent=False)
            for i, layer in enumerate(stream.layers):
                w = layer.w_dw[2]  # rotation 2 is the kernel in time order: taps t-2d, t-d, t; [Ch, 1, 3, 3, 3]
                for j in range(3):
                    self.register_buffer(f"tcn{i}_w{j}", w[:, :, j].contiguous(), persistent=False)  # [Ch,1,3,3]
                self.register_buffer(f"tcn{i}_b", layer.b_dw.clone(), persistent=False)
                self.register_buffer(f"tcn{i}_w_pw", layer.wt_pw.t().reshape(ch, ch, 1, 1).clone(), persistent=False)
                self.register_buffer(f"tcn{i}_b_pw", layer.b_pw.clone(), persistent=False)
            self.register_buffer("w_out", _pad(stream.wt_out.t().reshape(c, ch, 1, 1), cp, (0,)), persistent=False)
            self.register_buffer("b_out", _pad(stream.b_out, cp, (0,)), persistent=False)
            self.register_buffer("w_ada", _pad(stream.wt_ada.t().reshape(c, c, 1, 1), cp, (0, 1)), persistent=False)
            self.register_buffer("b_ada", _pad(stream.b_ada, cp, (0,)), persistent=False)
            self.register_buffer("w_mod", stream.w_mod.clone(), persistent=False)  # for set_rf only
            self.register_buffer("b_mod", stream.b_mod.clone(), persistent=False)
            # block plans: (max window L, number of dense branches, depthwise windows, input side)
            self.blocks: list[tuple[int, int, list[int], int]] = []
            for k, blk in enumerate(stream.blocks):
                if blk.dense:  # rows of w_patch are (ky, kx, c_in); columns (branch, c_out)
                    w = blk.w_patch.view(3, 3, c, blk.dense, c).permute(3, 4, 2, 0, 1)
                    w = _pad(w, cp, (1, 2)).reshape(blk.dense * cp, cp, 3, 3)
                    self.register_buffer(f"cmst{k}_w_dense", w, persistent=False)
                    bias = _pad(blk.b_patch.view(blk.dense, c), cp, (1,)).reshape(-1)
                    self.register_buffer(f"cmst{k}_b_dense", bias, persistent=False)
                for j, (wgt, bias) in enumerate(blk.kernels):  # wgt: [C, 1, w, 3, 3]
                    w = wgt.shape[2]
                    wgt = _pad(wgt, cp, (0,))
                    # past frames as channels of one depthwise conv: channel (tau, b, c), tau oldest first
                    past = wgt[:, :, :-1].permute(2, 0, 1, 3, 4).unsqueeze(1).expand(w - 1, b, cp, 1, 3, 3)
                    self.register_buffer(f"cmst{k}_w_past{j}", past.reshape(-1, 1, 3, 3).clone(), persistent=False)
                    self.register_buffer(f"cmst{k}_w_now{j}", wgt[:, :, -1].contiguous(), persistent=False)
                    self.register_buffer(f"cmst{k}_b_dw{j}", _pad(bias, cp, (0,)), persistent=False)
                w_res, w_map = (m.t().reshape(c, c, 1, 1) for m in (blk.wt_res, blk.wt_map))
                self.register_buffer(f"cmst{k}_w_res", _pad(w_res, cp, (0, 1)), persistent=False)
                self.register_buffer(f"cmst{k}_w_map", _pad(w_map, cp, (0, 1)), persistent=False)
                self.register_buffer(f"cmst{k}_b_out", _pad(blk.b_out, cp, (0,)), persistent=False)
                self.blocks.append((blk.length, blk.dense, list(blk.depthwise), blk.out_side + 2))
            r = cfg.readout_grid  # rows of wt_read are (row, col, channel): make them (channel, row, col)
            w_read = _pad(stream.wt_read.view(r, r, c, c).permute(2, 0, 1, 3), cp, (0,)).reshape(cp * r * r, c)
            self.register_buffer("w_read", w_read, persistent=False)
            self.register_buffer("b_read", stream.b_read.clone(), persistent=False)
        self.input_names, self.output_names = self._names()

    # ---- the contract -------------------------------------------------------------------------------------------

    @property
    def stateful_blocks(self) -> list[int]:
        """Indices of the CMST blocks that have a past (max window > 1)."""
        return [k for k, (length, *_rest) in enumerate(self.blocks) if length > 1]

    def _names(self) -> tuple[list[str], list[str]]:
        n = len(self.dilations)
        ins = ["features", "shift", "one_plus_scale", "gate"]
        ins += [f"tcn{i}_d{j}" for i in range(n) for j in (1, 2)]
        ins += [f"cmst{k}_past" for k in self.stateful_blocks]
        outs = ["rates", *(f"tcn{i}_new" for i in range(n)), *(f"cmst{k}_new" for k in self.stateful_blocks)]
        return ins, outs

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Input name -> shape, in input order."""
        cfg, b, cp = self.config, self.batch, self.cells_padded
        g, ch = cfg.grid, cfg.video_dim
        shapes = {"features": (b, cfg.tokens, cfg.feature_dim)}
        shapes.update({name: (b, cp, g, g) for name in ("shift", "one_plus_scale", "gate")})
        for i in range(len(self.dilations)):
            shapes[f"tcn{i}_d1"] = shapes[f"tcn{i}_d2"] = (b, ch, g, g)
        for k in self.stateful_blocks:
            length, _, _, side = self.blocks[k]
            shapes[f"cmst{k}_past"] = (length - 1, b, cp, side, side)
        return shapes

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output name -> shape, in output order."""
        cfg, b, cp = self.config, self.batch, self.cells_padded
        shapes = {"rates": (b, cfg.cells)}
        shapes.update({f"tcn{i}_new": (b, cfg.video_dim, cfg.grid, cfg.grid) for i in range(len(self.dilations))})
        for k in self.stateful_blocks:
            side = self.blocks[k][3]
            shapes[f"cmst{k}_new"] = (b, cp, side, side)
        return shapes

    def weights_sha256(self) -> str:
        """SHA-256 over every buffer (name, dtype, shape, bytes) in registration order: identifies the weights."""
        h = hashlib.sha256()
        for name, buf in self.named_buffers():
            a = buf.detach().to("cpu").contiguous()
            h.update(f"{name}:{a.dtype}:{tuple(a.shape)};".encode())
            h.update(a.view(torch.uint8).numpy().data if a.numel() else b"")
        return h.hexdigest()

    def spec(self) -> dict[str, Any]:
        """What identifies the exported graph (stored in the ONNX file's metadata)."""
        return {
            "config": self.config.to_dict(),
            "batch": self.batch,
            "dtype": str(self.w_in.dtype).removeprefix("torch."),
            "layout": LAYOUT,
            "cells_padded": self.cells_padded,
            "weights_sha256": self.weights_sha256(),
        }

    @torch.no_grad()
    def modulation(self, rf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """rf: [B or 1, C, g, g] -> (shift, one_plus_scale, gate), each [B, Cp, g, g] (padded channels 0).

        The same arithmetic as `StreamingViST.set_rf`, laid out channels-first.
        """
        rf = check_rf(rf, self.config, streams=self.batch).to(self.w_mod)
        out = []
        for v in adaln_terms(rf, self.w_mod, self.b_mod):
            v = v.permute(0, 3, 1, 2).expand(self.batch, -1, -1, -1)
            out.append(_pad(v, self.cells_padded, (1,)))
        return out[0], out[1], out[2]

    # ---- the step -----------------------------------------------------------------------------------------------

    def forward(
        self,
        features: torch.Tensor,
        shift: torch.Tensor,
        one_plus_scale: torch.Tensor,
        gate: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """features [B, N, D], AdaLN terms [B, Cp, g, g], past taps -> (rates [B, C], *new entries); see module doc."""
        cfg = self.config
        b, g, ch, cp = self.batch, cfg.grid, cfg.video_dim, self.cells_padded
        n = len(self.dilations)
        buf = dict(self.named_buffers())
        x = (torch.matmul(self.w_in, features.transpose(1, 2)) + self.b_in).view(b, ch, g, g)
        tcn_new = []
        for i in range(n):
            tcn_new.append(x)
            d1, d2 = past[2 * i], past[2 * i + 1]
            h = F.conv2d(d2, buf[f"tcn{i}_w0"], padding=1, groups=ch)
            h = h + F.conv2d(d1, buf[f"tcn{i}_w1"], padding=1, groups=ch)
            h = h + F.conv2d(x, buf[f"tcn{i}_w2"], buf[f"tcn{i}_b"], padding=1, groups=ch)
            x = x + F.conv2d(F.relu(h), buf[f"tcn{i}_w_pw"], buf[f"tcn{i}_b_pw"])
        x = F.conv2d(x, self.w_out, self.b_out)  # [B, Cp, g, g]
        x = x + gate * F.conv2d(F.silu(shift + x * one_plus_scale), self.w_ada, self.b_ada)
        cmst_new = []
        stateful = iter(past[2 * n :])
        for k, (length, dense, windows, side) in enumerate(self.blocks):
            o = side - 2
            acc: torch.Tensor | None = None
            if dense:
                y = F.leaky_relu(F.conv2d(x, buf[f"cmst{k}_w_dense"], buf[f"cmst{k}_b_dense"]), 0.1)
                acc = y if dense == 1 else y[:, :cp]  # (a whole-tensor slice would still be a copy in the graph)
                for j in range(1, dense):
                    acc = acc + y[:, j * cp : (j + 1) * cp]
            if length > 1:
                cmst_new.append(x)
                frames = next(stateful)  # [L-1, B, Cp, H, W]
                for j, w in enumerate(windows):
                    # the w-1 past frames as (w-1)*B*Cp channels of one depthwise conv, summed over time
                    older = frames[length - w :].reshape(1, (w - 1) * b * cp, side, side)
                    y = F.conv2d(older, buf[f"cmst{k}_w_past{j}"], groups=(w - 1) * b * cp)
                    # the sum over time as a ones-row matmul: ONNX Runtime's ReduceSum over a leading axis is ~3x slower
                    y = torch.matmul(y.new_ones(1, w - 1), y.view(w - 1, b * cp * o * o)).view(b, cp, o, o)
                    y = y + F.conv2d(x, buf[f"cmst{k}_w_now{j}"], buf[f"cmst{k}_b_dw{j}"], groups=cp)
                    y = F.leaky_relu(y, 0.1)
                    acc = y if acc is None else acc + y
            assert acc is not None
            pooled = F.avg_pool2d(x, 3, stride=1)
            x = F.conv2d(acc, buf[f"cmst{k}_w_map"], buf[f"cmst{k}_b_out"]) + F.conv2d(pooled, buf[f"cmst{k}_w_res"])
        rates = torch.matmul(x.reshape(b, -1), self.w_read) + self.b_read
        return (rates, *tcn_new, *cmst_new)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Zero tensors of the input shapes (for tracing)."""
        return tuple(self.w_in.new_zeros(s) for s in self.input_shapes().values())


def _export(graph: StepGraph, path: str | os.PathLike[str], opset: int) -> Path:
    return export_module(
        graph,
        graph.example_inputs(),
        path,
        kind=KIND,
        spec=graph.spec(),
        input_names=graph.input_names,
        output_names=graph.output_names,
        opset=opset,
    )


def export_step_onnx(stream: StreamingViST, path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """Export `stream`'s step (its weights; not its state or RF) as a `temporal-step` ONNX file at `path`."""
    return _export(StepGraph(stream).eval(), path, opset)


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))


def _element_type(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}[dtype]


class OnnxStreamingViST:
    """`StreamingViST`'s API over the exported step graph, run by ONNX Runtime; this host owns the rings.

    Rings (host memory, channels-first, one contiguous block per bound tensor for any B):
    C3TCN layer i: `[d, 3, B, Ch, g, g]`, frame t at `[t % d, (t // d) % 3]`;
    CMST block k: `[2L, B, Cp, H, W]`, frame t at `t % L` and `t % L + L`, so frames t-L+1..t-1 are `[s+1 : s+L]`.
    Each step binds the past-tap views as inputs and the new-entry slots as outputs (IOBinding), so
    ONNX Runtime reads and writes the rings in place; the only copy is the CMST double-write.
    `get_state`/`set_state` use `StreamingViST`'s layout: a state moves between the two hosts.
    """

    def __init__(
        self,
        graph: StepGraph,
        rf: torch.Tensor,
        path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool = True,
    ) -> None:
        """Run the graph file at `path`, which must be `graph` exported (checked); prefer `from_model`/`open`."""
        self.config: ViSTConfig = graph.config
        self.batch = graph.batch
        self.path = Path(path)
        meta = read_meta(self.path, kind=KIND)
        _check_spec(self.path, meta.get("spec"), graph.spec())
        self.session = make_session(self.path, device=device, threads=threads)
        self._graph = graph
        self.dtype = graph.w_in.dtype
        self.io_binding = io_binding
        self._etype = _element_type(self.dtype)
        cfg, b, cp = self.config, self.batch, graph.cells_padded
        g, ch = cfg.grid, cfg.video_dim
        self._tcn = [torch.zeros(d, 3, b, ch, g, g, dtype=self.dtype) for d in graph.dilations]
        self._cmst = {
            k: torch.zeros(2 * graph.blocks[k][0], b, cp, graph.blocks[k][3], graph.blocks[k][3], dtype=self.dtype)
            for k in graph.stateful_blocks
        }
        self._in_shapes = graph.input_shapes()
        self._out_shapes = graph.output_shapes()
        self._tcn_names = [(f"tcn{i}_d1", f"tcn{i}_d2", f"tcn{i}_new") for i in range(len(self._tcn))]
        self._cmst_names = {k: (f"cmst{k}_past", f"cmst{k}_new") for k in self._cmst}
        # numpy views of the same memory, for the session.run path
        self._tcn_np = [r.numpy() for r in self._tcn]
        self._cmst_np = {k: r.numpy() for k, r in self._cmst.items()}
        self._io = self.session.io_binding()
        self._bound: tuple[torch.Tensor, ...] = ()
        self._mod: tuple[torch.Tensor, ...] = ()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None  # owns the file of from_model(path=None)
        self.t = 0
        self.set_rf(rf)

    # ---- construction -------------------------------------------------------------------------------------------

    @staticmethod
    def _graph_of(model: ViST, rf: torch.Tensor, batch: int | None) -> StepGraph:
        rf = check_rf(rf, model.config)
        n = int(batch if batch is not None else rf.shape[0])
        with torch.no_grad():
            return StepGraph(StreamingViST.from_model(model, rf, n).float()).eval()

    @classmethod
    def from_model(
        cls,
        model: ViST,
        rf: torch.Tensor,
        batch: int | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool = True,
        opset: int = 17,
    ) -> OnnxStreamingViST:
        """Export `model`'s step (float32) to `path` (default: a temporary directory) and run it."""
        graph = cls._graph_of(model, rf, batch)
        if path is None:
            tmp = tempfile.TemporaryDirectory(prefix="vist-rt-step-")
            path = Path(tmp.name) / "temporal-step.onnx"
        else:
            tmp = None
        _export(graph, path, opset)
        host = cls(graph, rf, path, device=device, threads=threads, io_binding=io_binding)
        host._tmp = tmp  # the temporary directory lives as long as the host
        return host

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        model: ViST,
        rf: torch.Tensor,
        batch: int | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        io_binding: bool = True,
    ) -> OnnxStreamingViST:
        """Run an existing step graph file; VistError (one line) unless it was exported from `model` for this batch."""
        return cls(cls._graph_of(model, rf, batch), rf, path, device=device, threads=threads, io_binding=io_binding)

    # ---- StreamingViST's API ------------------------------------------------------------------------------------

    @property
    def receptive_field(self) -> int:
        """Frames that influence one output."""
        return self.config.receptive_field

    def set_rf(self, rf: torch.Tensor) -> None:
        """Recompute the AdaLN shift/scale/gate for a new RF set ([B or 1, C, g, g]); the ring state is kept."""
        self._mod = self._graph.modulation(rf)
        if self.io_binding:
            for name, value in zip(("shift", "one_plus_scale", "gate"), self._mod):
                self._bind_in(name, value)

    def reset(self) -> None:
        """Return every stream to the zero state (as if no frame had been seen)."""
        for ring in (*self._tcn, *self._cmst.values()):
            ring.zero_()
        self.t = 0

    def _torch_layout(self) -> list[tuple[int, ...]]:
        """Shapes of StreamingViST's rings, in its order (layers, then blocks)."""
        cfg, b = self.config, self.batch
        g, ch, c = cfg.grid, cfg.video_dim, cfg.cells
        shapes: list[tuple[int, ...]] = [(d, b, 3, g, g, ch) for d in self._graph.dilations]
        shapes += [(b, 2 * length, side, side, c) for length, _, _, side in self._graph.blocks]
        return shapes

    def get_state(self) -> StreamState:
        """A copy of the current state, in `StreamingViST`'s ring layout (so either host can restore it)."""
        c = self.config.cells
        rings = [r.permute(0, 2, 1, 4, 5, 3).clone() for r in self._tcn]
        for k, shape in enumerate(self._torch_layout()[len(self._tcn) :]):
            ring = self._cmst.get(k)
            rings.append(
                torch.zeros(shape, dtype=self.dtype) if ring is None else ring[:, :, :c].permute(1, 0, 3, 4, 2).clone()
            )
        return StreamState(self.t, tuple(rings))

    def set_state(self, state: StreamState) -> None:
        """Restore a state taken with get_state() (of this host or of a StreamingViST of the same model and batch)."""
        shapes = self._torch_layout()
        if len(state.rings) != len(shapes) or any(
            tuple(r.shape) != s or r.dtype != self.dtype for r, s in zip(state.rings, shapes)
        ):
            raise VistError("state does not belong to a stream of this shape and dtype")
        if not isinstance(state.t, int) or state.t < 0:
            raise VistError(f"state step count must be an integer >= 0, got {state.t!r}")
        c, n = self.config.cells, len(self._tcn)
        for ring, saved in zip(self._tcn, state.rings[:n]):
            ring.copy_(saved.permute(0, 2, 1, 5, 3, 4))
        for k, ring in self._cmst.items():
            ring[:, :, c:].zero_()
            ring[:, :, :c].copy_(state.rings[n + k].permute(1, 0, 4, 2, 3))
        self.t = state.t

    # ---- the step -----------------------------------------------------------------------------------------------

    def _bind_in(self, name: str, value: torch.Tensor) -> None:
        self._io.bind_input(name, "cpu", 0, self._etype, self._in_shapes[name], value.data_ptr())

    def _bind_out(self, name: str, value: torch.Tensor) -> None:
        self._io.bind_output(name, "cpu", 0, self._etype, self._out_shapes[name], value.data_ptr())

    def step(self, features_t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """features_t: [B, grid*grid, D] for the newest frame -> rates [B, C] for that frame.

        Invalid input (wrong shape, NaN/inf) raises VistError and leaves the state untouched.
        The few torch ops of a step (input check, ring copies) run on one torch thread: torch's
        spinning worker threads would otherwise compete with ONNX Runtime's for the cores.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._step(features_t)
        finally:
            torch.set_num_threads(threads)

    def _step(self, features_t: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(features_t, np.ndarray):
            features_t = torch.from_numpy(features_t)
        check_features(features_t, self.config, streaming=True, batch=self.batch)
        x = features_t.detach().to(device="cpu", dtype=self.dtype).contiguous()
        t = self.t
        rates = torch.empty(self.batch, self.config.cells, dtype=self.dtype)
        if self.io_binding:
            self._bind_in("features", x)
            for ring, (n1, n2, nn_) in zip(self._tcn, self._tcn_names):
                d = ring.shape[0]
                phase, rot = t % d, (t // d) % 3
                self._bind_in(n1, ring[phase, (rot - 1) % 3])
                self._bind_in(n2, ring[phase, (rot - 2) % 3])
                self._bind_out(nn_, ring[phase, rot])
            for k, ring in self._cmst.items():
                length = ring.shape[0] // 2
                s = t % length
                past, new = self._cmst_names[k]
                self._bind_in(past, ring[s + 1 : s + length])
                self._bind_out(new, ring[s])
            self._bind_out("rates", rates)
            self.session.run_with_iobinding(self._io)
            self._bound = (x, rates)  # what the binding points to stays alive until the next step rebinds it
        else:
            feed = {
                "features": x.numpy(),
                **dict(zip(("shift", "one_plus_scale", "gate"), (m.numpy() for m in self._mod))),
            }
            for ring, (n1, n2, _) in zip(self._tcn_np, self._tcn_names):
                d = ring.shape[0]
                phase, rot = t % d, (t // d) % 3
                feed[n1], feed[n2] = ring[phase, (rot - 1) % 3], ring[phase, (rot - 2) % 3]
            for k, ring in self._cmst_np.items():
                length = ring.shape[0] // 2
                feed[self._cmst_names[k][0]] = ring[t % length + 1 : t % length + length]
            outs = self.session.run(None, feed)
            rates.numpy()[...] = outs[0]
            for ring, new in zip(self._tcn_np, outs[1 : 1 + len(self._tcn)]):
                d = ring.shape[0]
                ring[t % d, (t // d) % 3] = new
            for ring, new in zip(self._cmst_np.values(), outs[1 + len(self._tcn) :]):
                ring[t % (ring.shape[0] // 2)] = new
        for ring in self._cmst.values():  # the double write
            length = ring.shape[0] // 2
            ring[t % length + length].copy_(ring[t % length])
        self.t = t + 1
        return rates

    __call__ = step


def _check_spec(path: Path, have: object, want: dict[str, Any]) -> None:
    """VistError (one line) naming what differs between a file's spec and the model's."""
    have = have if isinstance(have, dict) else {}
    if have.get("config") != want["config"]:
        diff = _config_diff(have.get("config") or {}, want["config"])
        raise VistError(f"{path} is the step graph of another model config ({diff})")
    for key in ("layout", "batch", "dtype", "cells_padded"):
        if have.get(key) != want[key]:
            raise VistError(f"{path} was exported with {key}={have.get(key)!r}, this stream needs {want[key]!r}")
    if have.get("weights_sha256") != want["weights_sha256"]:
        got = str(have.get("weights_sha256"))[:12]
        raise VistError(
            f"{path} holds other weights than this model (weights_sha256 {got}... vs {want['weights_sha256'][:12]}...)"
        )
