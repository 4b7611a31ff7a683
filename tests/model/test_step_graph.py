"""The exported streaming step: StepGraph (PyTorch) and OnnxStreamingViST (ONNX Runtime) equal the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, randomize
from vist_rt.errors import VistError
from vist_rt.export.onnx import read_meta
from vist_rt.model import StreamingViST, ViST, ViSTConfig
from vist_rt.model.step_graph import KIND, OnnxStreamingViST, StepGraph, export_step_onnx

pytest.importorskip("onnxruntime")

TOL = 1e-4


def stream_all(stream, feats: torch.Tensor) -> torch.Tensor:
    """feats: [B, T, N, D] -> [B, C, T] by stepping frame by frame."""
    return torch.stack([stream.step(feats[:, t]) for t in range(feats.shape[1])], dim=-1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def model() -> ViST:
    torch.manual_seed(3)
    return randomize(ViST(TINY), 3)


@pytest.fixture(scope="module")
def rf2() -> torch.Tensor:
    return torch.rand(2, TINY.cells, TINY.grid, TINY.grid, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def onnx_b2(model: ViST, rf2: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The step graph of `model` for B=2, exported once for the module."""
    return export_step_onnx(StreamingViST.from_model(model, rf2), tmp_path_factory.mktemp("step") / "step.onnx")


def test_step_graph_in_torch_equals_streaming_step_for_step(model: ViST, rf2: torch.Tensor) -> None:
    stream = StreamingViST.from_model(model, rf2)
    graph = StepGraph(stream).eval()
    cp = graph.cells_padded
    b = 2
    tcn = [torch.zeros(d, 3, b, TINY.video_dim, TINY.grid, TINY.grid) for d in graph.dilations]
    cmst = {k: torch.zeros(2 * graph.blocks[k][0], b, cp, graph.blocks[k][3], graph.blocks[k][3]) for k in range(4)}
    mod = graph.modulation(rf2)
    for mine, theirs in zip(mod, (stream.shift, stream.one_plus_scale, stream.gate)):
        assert torch.equal(mine[:, : TINY.cells], theirs.permute(0, 3, 1, 2))
        assert float(mine[:, TINY.cells :].abs().max()) == 0
    feats = torch.randn(b, 70, TINY.tokens, TINY.feature_dim, generator=torch.Generator().manual_seed(1))
    for t in range(feats.shape[1]):
        past = []
        for ring in tcn:
            d = ring.shape[0]
            past += [ring[t % d, (t // d - 1) % 3], ring[t % d, (t // d - 2) % 3]]
        past += [ring[t % (len(ring) // 2) + 1 : t % (len(ring) // 2) + len(ring) // 2] for ring in cmst.values()]
        with torch.no_grad():
            rates, *new = graph(feats[:, t], *mod, *past)
        assert rates.shape == (b, TINY.cells)
        assert (rates - stream.step(feats[:, t])).abs().max() <= 1e-5
        for ring, value in zip(tcn, new):
            d = ring.shape[0]
            ring[t % d, (t // d) % 3] = value
        for ring, value in zip(cmst.values(), new[len(tcn) :]):
            ring[t % (len(ring) // 2)] = ring[t % (len(ring) // 2) + len(ring) // 2] = value


def test_golden_onnxruntime_equals_offline_over_three_receptive_fields(
    model: ViST, rf2: torch.Tensor, onnx_b2: Path
) -> None:
    t = 3 * TINY.receptive_field + 11  # 560 >= 549 frames
    feats = torch.randn(2, t, TINY.tokens, TINY.feature_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(feats, rf2)  # a different RF set per stream
    assert want.std() > 0.3, "outputs should be unit-scale for the tolerance to mean something"
    host = OnnxStreamingViST.open(onnx_b2, model, rf2)
    got = stream_all(host, feats)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    assert (got - want).abs().max() <= TOL
    ref = stream_all(StreamingViST.from_model(model, rf2), feats)
    assert rel_err(got, ref) <= 1e-4


def test_session_run_path_equals_io_binding(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    feats = torch.randn(2, 70, TINY.tokens, TINY.feature_dim)
    a = stream_all(OnnxStreamingViST.open(onnx_b2, model, rf2), feats)
    b = stream_all(OnnxStreamingViST.open(onnx_b2, model, rf2, io_binding=False), feats)
    assert torch.equal(a, b)


def test_from_model_exports_and_runs(model: ViST, tmp_path: Path) -> None:
    rf = torch.rand(TINY.cells, TINY.grid, TINY.grid)
    feats = torch.randn(1, 40, TINY.tokens, TINY.feature_dim)
    host = OnnxStreamingViST.from_model(model, rf, path=tmp_path / "a.onnx", threads=1)
    assert (tmp_path / "a.onnx").is_file() and host.batch == 1
    assert host.receptive_field == TINY.receptive_field
    with torch.no_grad():
        assert (stream_all(host, feats) - model(feats, rf)).abs().max() <= TOL
    out = host.step(np.random.default_rng(0).standard_normal((1, TINY.tokens, TINY.feature_dim), dtype=np.float32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, TINY.cells)
    assert host.t == 41


def test_reset_really_restarts(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    a = torch.randn(2, 250, TINY.tokens, TINY.feature_dim)
    b = torch.randn(2, 40, TINY.tokens, TINY.feature_dim)
    host = OnnxStreamingViST.open(onnx_b2, model, rf2)
    fresh = stream_all(host, b)
    stream_all(host, a)
    host.reset()
    assert host.t == 0
    assert torch.equal(stream_all(host, b), fresh)


def test_set_rf_equals_a_fresh_stream(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    other = torch.rand(1, TINY.cells, TINY.grid, TINY.grid)
    feats = torch.randn(2, 30, TINY.tokens, TINY.feature_dim)
    host = OnnxStreamingViST.open(onnx_b2, model, rf2)
    host.set_rf(other)
    with torch.no_grad():
        assert (stream_all(host, feats) - model(feats, other)).abs().max() <= TOL
    with pytest.raises(VistError, match="rf holds 3 streams"):
        host.set_rf(torch.rand(3, TINY.cells, TINY.grid, TINY.grid))


def test_state_round_trip_and_moves_between_hosts(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    feats = torch.randn(2, 130, TINY.tokens, TINY.feature_dim)
    host = OnnxStreamingViST.open(onnx_b2, model, rf2)
    stream_all(host, feats[:, :80])
    snap = host.get_state()
    first = stream_all(host, feats[:, 80:])
    host.set_state(snap)
    assert host.t == 80
    assert torch.equal(stream_all(host, feats[:, 80:]), first)
    # the state is in StreamingViST's layout: the PyTorch stream goes on from it, and back
    stream = StreamingViST.from_model(model, rf2)
    stream.set_state(snap)
    assert rel_err(stream_all(stream, feats[:, 80:]), first) <= 1e-5
    host.set_state(stream.get_state())
    assert host.t == 130
    with pytest.raises(VistError, match="integer >= 0"):
        host.set_state(type(snap)(-1, snap.rings))
    with pytest.raises(VistError, match="shape and dtype"):
        host.set_state(type(snap)(0, tuple(r.double() for r in snap.rings)))


def test_bad_input_is_rejected_and_leaves_state_untouched(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    feats = torch.randn(2, 50, TINY.tokens, TINY.feature_dim)
    host = OnnxStreamingViST.open(onnx_b2, model, rf2)
    stream_all(host, feats[:, :30])
    before = host.get_state()
    nan = feats[:, 30].clone()
    nan[1, 5, 1] = float("nan")
    with pytest.raises(VistError, match="NaN"):
        host.step(nan)
    with pytest.raises(VistError, match=r"\[2, 100, 12\].*got \[2, 99, 12\]"):
        host.step(feats[:, 30, :99])
    with pytest.raises(VistError, match=r"got \[1, 100, 12\]"):
        host.step(feats[:1, 30])
    with pytest.raises(VistError, match=r"must be a torch\.Tensor"):
        host.step([1.0])  # type: ignore[arg-type]
    after = host.get_state()
    assert after.t == before.t == 30
    assert all(torch.equal(x, y) for x, y in zip(before.rings, after.rings))
    with torch.no_grad():
        assert (stream_all(host, feats[:, 30:]) - model(feats, rf2)[..., 30:]).abs().max() <= TOL


def test_file_of_another_model_is_refused(model: ViST, rf2: torch.Tensor, onnx_b2: Path, tmp_path: Path) -> None:
    torch.manual_seed(4)
    other_weights = randomize(ViST(TINY), 4)
    with pytest.raises(VistError, match="other weights than this model"):
        OnnxStreamingViST.open(onnx_b2, other_weights, rf2)
    other_cfg = ViST(ViSTConfig(feature_dim=12, video_dim=16, cells=5, grid=10)).eval()
    with pytest.raises(VistError, match=r"another model config \(video_dim 8 vs 16\)"):
        OnnxStreamingViST.open(onnx_b2, other_cfg, rf2)
    with pytest.raises(VistError, match="batch=2, this stream needs 1"):
        OnnxStreamingViST.open(onnx_b2, model, rf2[:1])
    foreign = tmp_path / "foreign.onnx"
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    io = [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("x", "y")]
    onnx.save(h.make_model(h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g", io[:1], io[1:])), foreign)
    with pytest.raises(VistError, match="not written by vist-rt"):
        OnnxStreamingViST.open(foreign, model, rf2)
    with pytest.raises(VistError, match="not found"):
        OnnxStreamingViST.open(tmp_path / "missing.onnx", model, rf2)


def test_exported_graph_names_shapes_and_opset(model: ViST, rf2: torch.Tensor, onnx_b2: Path) -> None:
    meta = read_meta(onnx_b2, kind=KIND)
    assert meta["opset"] >= 17
    graph = StepGraph(StreamingViST.from_model(model, rf2))
    spec = meta["spec"]
    assert spec["config"] == TINY.to_dict() and spec["batch"] == 2 and spec["dtype"] == "float32"
    assert spec["weights_sha256"] == graph.weights_sha256() and len(spec["weights_sha256"]) == 64
    ch, g, cp = TINY.video_dim, TINY.grid, spec["cells_padded"]
    assert cp == 16
    want_in = {"features": [2, 100, 12], "shift": [2, cp, g, g], "one_plus_scale": [2, cp, g, g]}
    want_in["gate"] = [2, cp, g, g]
    for i in range(TINY.video_layers):
        want_in[f"tcn{i}_d1"] = want_in[f"tcn{i}_d2"] = [2, ch, g, g]
    for k, length in enumerate((25, 21, 9, 5)):
        want_in[f"cmst{k}_past"] = [length - 1, 2, cp, g - 2 * k, g - 2 * k]
    want_out = {"rates": [2, TINY.cells], **{f"tcn{i}_new": [2, ch, g, g] for i in range(TINY.video_layers)}}
    want_out.update({f"cmst{k}_new": [2, cp, g - 2 * k, g - 2 * k] for k in range(4)})
    assert meta["inputs"] == want_in and list(meta["inputs"]) == list(want_in)
    assert meta["outputs"] == want_out and list(meta["outputs"]) == list(want_out)
    assert {k: list(v) for k, v in graph.input_shapes().items()} == want_in
    assert {k: list(v) for k, v in graph.output_shapes().items()} == want_out


def test_bench_runs_on_onnxruntime() -> None:
    from vist_rt.bench.temporal import run_temporal_bench

    cfg = ViSTConfig(feature_dim=8, video_layers=2, video_dim=4, cells=3, grid=6, windows=((1, 3), (1, 2)))
    kw = {"steps": 3, "windows": 1, "window_frames": 4, "warmup": 1, "matmul_size": 64}
    a = run_temporal_bench(cfg, backend="onnxruntime", **kw)
    b = run_temporal_bench(cfg, **kw)
    assert a["backend"] == "onnxruntime" and b["backend"] == "torch"
    assert a["step_ms"]["n"] == 3 and "onnxruntime" in a["machine"]
    assert a["last_rates_sum"] == pytest.approx(b["last_rates_sum"], rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="backend must be one of"):
        run_temporal_bench(cfg, backend="tvm", **kw)
