"""The native temporal backend: exact against the offline model, its kernel cache, its errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.model.test_streaming import TOL, offline, stream_all
from vist_rt.errors import VistError
from vist_rt.model import NativeStreamingViST, StreamingViST, ViSTConfig
from vist_rt.model import native as native_mod

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("native-cache")


def test_native_equals_offline_over_three_receptive_fields(make_model, tiny, cache: Path) -> None:
    # tiny: 8 video channels and 5 cells, so both are padded to 16 inside; two streams, two RF sets
    model = make_model(seed=3)
    gen = torch.Generator().manual_seed(0)
    t = 3 * tiny.receptive_field + 11
    feats = torch.randn(2, t, tiny.tokens, tiny.feature_dim, generator=gen)
    rf = torch.rand(2, tiny.cells, tiny.grid, tiny.grid, generator=gen)
    want = offline(model, feats, rf)
    assert want.std() > 0.3
    stream = NativeStreamingViST.from_model(model, rf, cache_dir=cache)
    got = stream_all(stream, feats)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= TOL


def test_blocks_without_a_dense_branch_and_wide_channels(make_model, cache: Path) -> None:
    # windows without w = 1 (no dense branch), 20 channels (a partial 16-lane block), a grid whose rows
    # end in 8 + 4 + 2 + 1-wide column blocks
    cfg = ViSTConfig(feature_dim=24, video_layers=3, video_dim=20, cells=17, grid=11, windows=((2, 5), (1, 3), (4,)))
    model = make_model(cfg, seed=4)
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 2 * cfg.receptive_field, cfg.tokens, cfg.feature_dim, generator=gen)
    rf = torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=gen)
    got = stream_all(NativeStreamingViST.from_model(model, rf, cache_dir=cache), feats)
    assert (got - offline(model, feats, rf)).abs().max() <= TOL


@pytest.mark.slow
def test_native_equals_the_torch_stream_at_the_published_configuration(make_model, cache: Path) -> None:
    cfg = ViSTConfig()
    model = make_model(cfg, seed=5)
    gen = torch.Generator().manual_seed(2)
    rf = (torch.rand(cfg.cells, cfg.grid, cfg.grid, generator=gen) > 0.9).float()
    ref, nat = StreamingViST.from_model(model, rf), NativeStreamingViST.from_model(model, rf, cache_dir=cache)
    worst = 0.0
    for _ in range(70):  # past the largest dilation's ring (3 x 32 frames)... in phases, not all of it
        x = torch.randn(1, cfg.tokens, cfg.feature_dim, generator=gen)
        a, b = ref.step(x), nat.step(x)
        worst = max(worst, float((a - b).abs().max() / max(1.0, float(a.abs().max()))))
    assert worst <= TOL


def test_reset_state_and_bad_input(make_model, tiny, cache: Path) -> None:
    model = make_model(seed=6)
    gen = torch.Generator().manual_seed(3)
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid, generator=gen)
    feats = torch.randn(1, 60, tiny.tokens, tiny.feature_dim, generator=gen)
    stream = NativeStreamingViST.from_model(model, rf, cache_dir=cache)
    first = stream_all(stream, feats)
    snap = stream.get_state()
    more = stream_all(stream, feats[:, :20])
    stream.reset()
    assert stream.t == 0
    assert torch.equal(stream_all(stream, feats), first)  # reset really restarts, bit for bit
    stream.set_state(snap)
    assert torch.equal(stream_all(stream, feats[:, :20]), more)  # a restored state continues identically
    # bad input: one clear error, the state untouched
    before = stream.get_state()
    bad = feats[:, 0].clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(VistError, match="NaN"):
        stream.step(bad)
    with pytest.raises(VistError, match=r"shape \[1, 100, 12\]"):
        stream.step(torch.zeros(1, 99, tiny.feature_dim))
    after = stream.get_state()
    assert after.t == before.t and all(torch.equal(a, b) for a, b in zip(after.rings, before.rings))
    with pytest.raises(VistError, match="does not belong"):
        stream.set_state(StreamingViST.from_model(model, rf).get_state())  # the torch layout is not this one


def test_kernels_compile_once_and_are_cached_by_source(tmp_path: Path, monkeypatch) -> None:
    lib = native_mod.load_kernels(tmp_path)
    built = list(tmp_path.glob("vist_native-*.so"))
    assert len(built) == 1 and Path(lib._name) == built[0]
    assert not list(tmp_path.glob(".build-*"))  # the temporary file was renamed into place
    # a new process (simulated: nothing loaded) finds the cached file and does not compile
    monkeypatch.setattr(native_mod, "_loaded", {})
    monkeypatch.setattr(native_mod, "_compile", lambda *a: pytest.fail("compiled again"))
    assert Path(native_mod.load_kernels(tmp_path)._name) == built[0]
    # another source is another key, hence a rebuild
    changed = tmp_path / "native_kernels.c"
    changed.write_text(native_mod.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native_mod, "SOURCE", changed)
    assert native_mod.kernel_key(native_mod.find_compiler()) not in built[0].name
    with pytest.raises(pytest.fail.Exception, match="compiled again"):
        native_mod.load_kernels(tmp_path)


def test_compiler_problems_are_one_line(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(VistError, match=r"needs a C compiler.*'no-such-cc'.*--temporal torch"):
        native_mod.load_kernels(tmp_path, compiler="no-such-cc")
    monkeypatch.setenv("CC", "no-such-cc-either")
    with pytest.raises(VistError, match="'no-such-cc-either' was not found"):
        native_mod.load_kernels(tmp_path)
    failing = tmp_path / "badcc"
    failing.write_text("#!/bin/sh\necho 'badcc: error: something is wrong' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(VistError, match=r"compiling the native kernels .* failed: badcc: error: something is wrong"):
        native_mod.load_kernels(tmp_path / "c", compiler=str(failing))
    assert not list((tmp_path / "c").glob("*"))  # nothing half-written left behind


def test_a_damaged_library_in_the_cache_is_refused(tmp_path: Path) -> None:
    path = tmp_path / f"vist_native-{native_mod.kernel_key(native_mod.find_compiler())}.so"
    path.write_bytes(b"not a shared library")  # e.g. a disk that filled up under an older version
    with pytest.raises(VistError, match=r"cannot load the compiled kernels .*delete the file to rebuild it"):
        native_mod.load_kernels(tmp_path)


def test_native_needs_the_cpu(make_model, tiny, cache: Path) -> None:
    model = make_model()
    rf = torch.rand(tiny.cells, tiny.grid, tiny.grid)
    model.to("meta")
    with pytest.raises(VistError, match="runs on the CPU"):
        NativeStreamingViST.from_model(model, rf, cache_dir=cache)


def test_bench_runs_on_native(cache: Path, monkeypatch) -> None:
    from vist_rt.bench.temporal import run_temporal_bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    cfg = ViSTConfig(feature_dim=8, video_layers=2, video_dim=4, cells=3, grid=6, windows=((1, 3), (1, 2)))
    kw = {"steps": 3, "windows": 1, "window_frames": 4, "warmup": 1, "matmul_size": 64}
    a = run_temporal_bench(cfg, backend="native", **kw)
    b = run_temporal_bench(cfg, **kw)
    assert a["backend"] == "native" and a["step_ms"]["n"] == 3
    assert a["native"]["library"].startswith("vist_native-") and "-march=native" in a["native"]["flags"]
    assert b["native"] is None
    assert a["last_rates_sum"] == pytest.approx(b["last_rates_sum"], rel=1e-4, abs=1e-5)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps (Linux)")
def test_kernels_share_torchs_openmp_runtime(make_model, tiny, cache: Path) -> None:
    """One OpenMP pool: the kernels' threads are torch's, not a second pool fighting it for the cores."""
    stream = NativeStreamingViST.from_model(make_model(), torch.rand(tiny.cells, tiny.grid, tiny.grid), cache_dir=cache)
    stream.step(torch.zeros(1, tiny.tokens, tiny.feature_dim))
    maps = Path("/proc/self/maps").read_text().splitlines()
    runtimes = {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}
    assert len(runtimes) == 1, runtimes


def test_set_rf_numpy_float64_and_flat_memory(make_model, tiny, cache: Path) -> None:
    import numpy as np

    from vist_rt.bench.soak import rss_bytes

    model = make_model(seed=8)
    rf1, rf2 = torch.rand(2, 1, tiny.cells, tiny.grid, tiny.grid, generator=torch.Generator().manual_seed(4))
    feats = torch.randn(1, 30, tiny.tokens, tiny.feature_dim, generator=torch.Generator().manual_seed(5))
    stream = NativeStreamingViST.from_model(model, rf1, cache_dir=cache)
    with pytest.raises(VistError, match="rf holds 3 streams, this stream has 1"):
        stream.set_rf(torch.rand(3, tiny.cells, tiny.grid, tiny.grid))
    stream.set_rf(rf2)  # a new condition: equal to a stream built with it
    assert (stream_all(stream, feats) - offline(model, feats, rf2)).abs().max() <= TOL
    stream.reset()
    as_numpy = feats[0, 0:1].double().numpy()  # float64 numpy, as a rig's pipeline might hand it over
    assert isinstance(as_numpy, np.ndarray)
    out = stream.step(as_numpy)
    assert out.dtype == torch.float32 and out.shape == (1, tiny.cells) and not out.requires_grad
    if Path("/proc/self/statm").exists():
        x = feats[:, 0]
        for _ in range(300):
            stream.step(x)
        before = rss_bytes()
        for _ in range(3000):
            stream.step(x)
        assert rss_bytes() - before < 8 * 2**20  # no per-step growth


def test_features_that_overflow_the_projection_are_refused(make_model, tiny, cache: Path) -> None:
    model = make_model(seed=9)
    with torch.no_grad():
        model.stage1.conv_1x1.weight.fill_(10.0)
    stream = NativeStreamingViST.from_model(model, torch.rand(tiny.cells, tiny.grid, tiny.grid), cache_dir=cache)
    stream.step(torch.randn(1, tiny.tokens, tiny.feature_dim))
    before = stream.get_state()
    huge = torch.zeros(1, tiny.tokens, tiny.feature_dim)
    huge[0, 7, 2] = 3e38  # finite, but x 10 is not
    with pytest.raises(VistError, match="overflow float32 in the input projection"):
        stream.step(huge)
    after = stream.get_state()
    assert after.t == before.t and all(torch.equal(a, b) for a, b in zip(after.rings, before.rings))


def test_kernel_threads_follow_torch_at_each_step(make_model, tiny, cache: Path, monkeypatch) -> None:
    """A run sets torch's threads after building the model: the kernels must use the setting of the moment."""
    stream = NativeStreamingViST.from_model(make_model(), torch.rand(tiny.cells, tiny.grid, tiny.grid), cache_dir=cache)
    seen: list[int] = []

    class Spy:
        def __init__(self, lib) -> None:
            self.lib = lib

        def __getattr__(self, name: str):
            fn = getattr(self.lib, name)
            return lambda *args: (seen.append(args[-1]), fn(*args))[1]

    monkeypatch.setattr(stream, "_lib", Spy(stream._lib))
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            seen.clear()
            stream.step(torch.zeros(1, tiny.tokens, tiny.feature_dim))
            assert seen and set(seen) == {n}
            assert stream.describe()["threads"] == n
    finally:
        torch.set_num_threads(before)
    fixed = NativeStreamingViST(make_model(), torch.rand(tiny.cells, tiny.grid, tiny.grid), cache_dir=cache, threads=1)
    assert fixed.describe()["threads"] == 1
