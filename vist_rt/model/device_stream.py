"""Streaming Vi-ST whose whole step is one CUDA graph replay (on GPU), with its rings on the device.

`StreamingViST` indexes its rings with the Python step count, so each step launches different
kernels on different addresses: it cannot be captured. Here the step count lives in a device
tensor and every ring access is an `index_select` / `index_copy_` with indices computed from it on
the device, so one step (gathers, the `StepGraph` arithmetic, ring writes, t += 1) is a fixed
sequence of kernels on fixed buffers: captured once, replayed per frame. On CPU the same code
runs eagerly (that is how it is tested without a GPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vist_rt.errors import VistError
from vist_rt.model.exact import exact_context, exact_fp32
from vist_rt.model.inputs import check_features, check_rf
from vist_rt.model.step_graph import StepGraph
from vist_rt.model.streaming import StreamingViST, check_row
from vist_rt.model.vist import ViST


class DeviceStreamingViST(nn.Module):
    """`StreamingViST`'s step/reset/set_rf on device-resident rings, optionally as one CUDA graph.

    Rings: C3TCN layer i `[3d, B, Ch, g, g]` (frame t at `(t % d) * 3 + (t // d) % 3`); CMST block k
    `[2L, B, Cp, H, W]` (frame t at `t % L` and `t % L + L`), the `StepGraph` layout.
    """

    def __init__(self, model: ViST, rf: torch.Tensor, batch: int | None = None, *, cuda_graph: bool = True) -> None:
        super().__init__()
        cfg = model.config
        self.config = cfg
        dev = model.stage1.conv_1x1.weight.device
        rf = check_rf(rf, cfg).to(dev)
        self.batch = int(batch if batch is not None else rf.shape[0])
        with torch.inference_mode(False), torch.no_grad():  # state stays writable outside inference mode
            self.graph_fn = StepGraph(StreamingViST.from_model(model, rf, self.batch)).eval()
            self._make_state(dev)
        self.cuda_graph: torch.cuda.CUDAGraph | None = None
        self.set_rf(rf)
        if cuda_graph and dev.type == "cuda":
            self._capture()

    def _make_state(self, dev: torch.device) -> None:
        """Static step inputs, rings, the device step counter and the rates buffer (made once)."""
        cfg, graph = self.config, self.graph_fn
        dtype = graph.w_in.dtype
        self.static_in = {name: torch.zeros(s, dtype=dtype, device=dev) for name, s in graph.input_shapes().items()}
        b, cp = self.batch, graph.cells_padded
        g, ch = cfg.grid, cfg.video_dim
        self.tcn = [torch.zeros(3 * d, b, ch, g, g, dtype=dtype, device=dev) for d in graph.dilations]
        self.cmst: dict[int, torch.Tensor] = {}
        for k in graph.stateful_blocks:
            length, _, _, side = graph.blocks[k]
            self.cmst[k] = torch.zeros(2 * length, b, cp, side, side, dtype=dtype, device=dev)
        self.t_dev = torch.zeros((), dtype=torch.int64, device=dev)
        self.t = 0
        self._arange = {k: torch.arange(1, graph.blocks[k][0], device=dev) for k in self.cmst}
        self.rates = torch.zeros(b, cfg.cells, dtype=dtype, device=dev)

    @classmethod
    def from_model(
        cls, model: ViST, rf: torch.Tensor, batch: int | None = None, *, cuda_graph: bool = True
    ) -> DeviceStreamingViST:
        """Streams of `model` (on its device) conditioned on rf: [B, C, g, g] or [C, g, g]."""
        return cls(model, rf, batch, cuda_graph=cuda_graph).eval()

    @property
    def receptive_field(self) -> int:
        """Frames that influence one output."""
        return self.config.receptive_field

    def set_rf(self, rf: torch.Tensor) -> None:
        """New RF set ([B or 1, C, g, g]): AdaLN terms recomputed once; the ring state is kept."""
        shift, scale, gate = self.graph_fn.modulation(rf)
        self.static_in["shift"].copy_(shift)
        self.static_in["one_plus_scale"].copy_(scale)
        self.static_in["gate"].copy_(gate)

    def reset(self, row: int | None = None) -> None:
        """Every stream (or stream `row` only) back to the zero state."""
        if row is not None:
            check_row(row, self.batch)
            for ring in (*self.tcn, *self.cmst.values()):
                ring[:, row].zero_()
            return
        for ring in (*self.tcn, *self.cmst.values()):
            ring.zero_()
        self.t_dev.zero_()
        self.t = 0

    def _step_body(self) -> None:
        """Gather taps from the rings, run the step graph, write the new frames back, advance t."""
        t = self.t_dev
        ins = self.static_in
        slots = []
        for i, (d, ring) in enumerate(zip(self.graph_fn.dilations, self.tcn)):
            base, rot = (t % d) * 3, (t // d) % 3
            slots.append((base + rot).view(1))
            torch.index_select(ring, 0, (base + (rot + 2) % 3).view(1), out=ins[f"tcn{i}_d1"].unsqueeze(0))
            torch.index_select(ring, 0, (base + (rot + 1) % 3).view(1), out=ins[f"tcn{i}_d2"].unsqueeze(0))
        where = {}
        for k, ring in self.cmst.items():
            length = self.graph_fn.blocks[k][0]
            s = t % length
            torch.index_select(ring, 0, s + self._arange[k], out=ins[f"cmst{k}_past"])
            where[k] = torch.stack([s, s + length])
        outs = self.graph_fn(*ins.values())
        self.rates.copy_(outs[0])
        n = len(self.tcn)
        for ring, slot, new in zip(self.tcn, slots, outs[1 : 1 + n]):
            ring.index_copy_(0, slot, new.unsqueeze(0))
        for (k, ring), new in zip(self.cmst.items(), outs[1 + n :]):
            ring.index_copy_(0, where[k], new.unsqueeze(0).expand(2, *new.shape))
        t.add_(1)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # signature of nn.Module._apply
        raise VistError("a DeviceStreamingViST cannot be moved or cast: build it from a model already there")

    def _capture(self) -> None:
        """Warm up on a side stream, then capture `_step_body` into a CUDA graph; state restored after."""
        with torch.cuda.device(self.t_dev.device), exact_fp32():  # kernels are chosen at capture: IEEE fp32 ones
            self._capture_here()

    def _capture_here(self) -> None:
        saved = [r.clone() for r in (*self.tcn, *self.cmst.values())]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                self._step_body()
        torch.cuda.current_stream().wait_stream(side)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.cuda_graph), torch.no_grad():
            self._step_body()
        for ring, value in zip((*self.tcn, *self.cmst.values()), saved):
            ring.copy_(value)
        self.t_dev.zero_()

    @torch.inference_mode()
    def step(self, features_t: torch.Tensor | np.ndarray) -> torch.Tensor:
        """features_t: [B, grid*grid, D] of the newest frame -> rates [B, C]; bad input leaves the state as it was."""
        if isinstance(features_t, np.ndarray):
            features_t = torch.from_numpy(features_t)
        check_features(features_t, self.config, streaming=True, batch=self.batch)
        self.static_in["features"].copy_(features_t, non_blocking=True)
        if self.cuda_graph is not None:
            self.cuda_graph.replay()
        else:
            with exact_context(self.t_dev.device)():
                self._step_body()
        self.t += 1
        return self.rates.clone()

    forward = step
