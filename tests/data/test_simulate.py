"""The simulated retina: reproducible, in the dataset format, ON/OFF polarity, noise ceiling, CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
import pytest

from vist_rt.cli import data as data_cli
from vist_rt.data.dataset import open_dataset
from vist_rt.data.simulate import make_retina, noise_ceiling, pearson, simulate, truth_cc, write_simulation
from vist_rt.errors import VistError

SMALL = {"n_cells": 6, "n_movies": 2, "n_frames": 60, "n_trials": 3, "size": (48, 64)}


def _contents(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out.update({f"@{k}": np.asarray(v) for k, v in f.attrs.items()})
    return out


def test_reproducible_from_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_simulation(tmp_path / f"{name}.h5", seed=seed, **SMALL)
    a, b, c = (_contents(tmp_path / f"{name}.h5") for name in "abc")
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in ("movies/movie1/stimulus", "movies/movie1/spikes", "movies/movie2/truth", "cells/rf"):
        assert not np.array_equal(a[key], c[key]), key
    assert not np.array_equal(a["movies/movie1/stimulus"], a["movies/movie2/stimulus"])  # movies differ


def test_file_follows_the_format(tmp_path: Path) -> None:
    sim = write_simulation(tmp_path / "s.h5", seed=0, **SMALL)
    with open_dataset(tmp_path / "s.h5") as ds:  # validates
        assert ds.movies == ["movie1", "movie2"] and ds.fps == 30.0 and ds.units == "spikes/s"
        assert ds.cell_ids == list(sim.retina.cell_ids) and len(set(ds.cell_ids)) == 6
        assert ds.rf.shape == (6, 48, 64) and ds.rf.dtype == np.float32
        assert set(np.unique(ds.rf)) <= {0.0, 1.0} and (ds.rf.sum(axis=(1, 2)) > 0).all()
        m = ds.movie("movie1")
        assert m.stimulus.shape == (60, 48, 64) and m.stimulus.dtype == np.uint8
        assert m.rates.shape == (60, 6) and m.rates.dtype == np.float32
        assert m.spikes.shape == (3, 60, 6) and m.spikes.dtype == np.uint16
        np.testing.assert_allclose(m.rates, m.spikes.mean(0) * 30.0, rtol=1e-6)
        truth = m.extra("truth")
        assert truth is not None and truth.shape == (60, 6) and (truth > 0).all()
        np.testing.assert_array_equal(truth, sim.movies["movie1"].truth)
    polarity = sim.retina.polarity
    assert 2 <= (polarity > 0).sum() <= 4  # about half ON


def test_on_and_off_cells_respond_to_a_flash_in_their_centre() -> None:
    retina = make_retina(8, seed=1, size=(60, 80))
    h, w = retina.size
    yy, xx = np.mgrid[0:h, 0:w]
    assert (retina.polarity > 0).any() and (retina.polarity < 0).any()
    for c in range(retina.n_cells):
        cy, cx = retina.center[c]
        spot = (yy - cy) ** 2 + (xx - cx) ** 2 <= retina.sigma_center[c] ** 2
        stim = np.full((40, h, w), 128, np.uint8)
        stim[20:, spot] = 255  # bright spot from frame 20 on
        r = retina.rates(stim)[:, c]
        before, after = r[10:20].mean(), r[20:26].mean()
        np.testing.assert_allclose(r[:20], r[0])  # steady before the step (no start-up transient)
        if retina.polarity[c] > 0:
            assert after > 1.5 * before, (c, before, after)
        else:
            assert after < 0.8 * before, (c, before, after)


def test_noise_ceiling_grows_with_trials_and_matches_truth() -> None:
    few = simulate(n_cells=8, n_movies=1, n_frames=240, n_trials=4, seed=2, size=(48, 64))
    many = simulate(n_cells=8, n_movies=1, n_frames=240, n_trials=40, seed=2, size=(48, 64))
    c_few = noise_ceiling(few.movies["movie1"].spikes).mean()
    c_many = noise_ceiling(many.movies["movie1"].spikes).mean()
    assert c_many > c_few
    np.testing.assert_array_equal(few.movies["movie1"].truth, many.movies["movie1"].truth)  # same cells/movie
    cc_many = truth_cc(many)["movie1"]
    assert cc_many.mean() > 0.5
    assert cc_many.mean() > truth_cc(few)["movie1"].mean()
    assert abs(c_many - cc_many.mean()) < 0.1  # the ceiling estimates CC(truth, trial average)


def test_noise_ceiling_formula() -> None:
    rng = np.random.default_rng(0)
    same = np.repeat(rng.poisson(2.0, (1, 50, 3)), 4, axis=0)
    np.testing.assert_allclose(noise_ceiling(same), 1.0)
    noise = rng.poisson(2.0, (6, 500, 2))  # independent trials: no signal
    assert noise_ceiling(noise).max() < 0.35
    assert noise_ceiling(np.zeros((4, 10, 2))).tolist() == [0.0, 0.0]  # silent cells
    a = rng.random((20, 2))
    np.testing.assert_allclose(pearson(a, 2 * a + 1), 1.0)
    with pytest.raises(VistError, match="R >= 2"):
        noise_ceiling(np.zeros((1, 10, 2)))


def test_bad_arguments() -> None:
    with pytest.raises(VistError, match="cells must be an integer >= 1"):
        simulate(n_cells=0)
    with pytest.raises(VistError, match="size must be at least 16x16"):
        simulate(size=(8, 8))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vist-rt")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.h5"
    args = _parser().parse_args(
        ["simulate", str(out), "--cells", "4", "--movies", "1", "--frames", "30", "--trials", "4", "--seed", "5",
         "--size", "40x48", "--fps", "25"]
    )  # fmt: skip
    assert args.func is data_cli.run_simulate
    assert data_cli.run_simulate(args) == 0
    text = capsys.readouterr().out
    assert "4 cells" in text and "noise ceiling" in text and "25 Hz" in text
    with open_dataset(out) as ds:
        assert ds.fps == 25.0 and ds.movie("movie1").stimulus.shape == (30, 40, 48)
    with pytest.raises(SystemExit):
        _parser().parse_args(["simulate", str(out), "--size", "big"])


def test_subunits_make_the_centre_respond_to_a_fine_grating_of_either_phase() -> None:
    from vist_rt.data.simulate import RetinaSettings

    size = (96, 96)
    big = (0.08, 0.1)  # centres of 8-10 px sigma: a 12 px grating averages out over them, not over subunits
    linear = make_retina(6, seed=5, size=size, settings=RetinaSettings(cell_size=big))
    nonlinear = make_retina(6, seed=5, size=size, settings=RetinaSettings(cell_size=big, subunits=1.0))
    np.testing.assert_array_equal(linear.center, nonlinear.center)  # the same cells, another centre
    xx = np.arange(size[1])[None, :].repeat(size[0], 0)
    grey = np.full((30, *size), 128, np.uint8)
    phases = []
    for shift in (0, 6):  # a square grating of period 12 px, much finer than a centre, in two phases
        bars = np.where(((xx + shift) // 6) % 2 == 0, 228, 28).astype(np.uint8)
        phases.append(np.concatenate([grey[:10], np.repeat(bars[None], 20, 0)]))
    a, b = (linear.spatial_drive(p[-1:])[0] for p in phases)
    np.testing.assert_allclose(a, -b, atol=1e-5)  # linear: the two phases drive it oppositely ...
    base, ra, rb = (linear.rates(p)[-1] for p in (grey, *phases))
    assert ((ra - base) * (rb - base) <= 0).all()  # ... one up, the other down (or both unmoved)
    base, ra, rb = (nonlinear.rates(p)[-1] for p in (grey, *phases))
    assert (ra > 1.1 * base).all() and (rb > 1.1 * base).all()  # rectified subunits: both excite every cell


def test_contrast_adaptation_compresses_the_response_to_high_contrast() -> None:
    from vist_rt.data.simulate import RetinaSettings

    size = (48, 64)
    plain = make_retina(6, seed=6, size=size)
    adapting = make_retina(6, seed=6, size=size, settings=RetinaSettings(adaptation=3.0, adaptation_s=0.3))
    z = np.concatenate([np.full((60, 6), 0.2), np.full((60, 6), 3.0)]).astype(np.float32)
    np.testing.assert_array_equal(plain.adapted(z), z)  # no adaptation: the identity
    out = adapting.adapted(z)
    assert (out[59] / z[59] > 1.0).all() and (out[-1] / z[-1] < 1.0).all()  # gain up at low, down at high contrast
    assert (out[65] / z[65] > out[-1] / z[-1]).all()  # and it takes time to adapt
    rng = np.random.default_rng(0)
    low = (128 + rng.normal(0, 10, (200, *size))).clip(0, 255).astype(np.uint8)
    high = (128 + rng.normal(0, 60, (200, *size))).clip(0, 255).astype(np.uint8)

    def spread(retina: object) -> np.ndarray:
        return retina.generator(high).std(0) / retina.generator(low).std(0)  # type: ignore[attr-defined]

    np.testing.assert_allclose(spread(plain), spread(adapting))  # the linear drive is the same ...
    z_plain = [plain.adapted(plain.generator(s) * plain.scale) for s in (low, high)]
    z_adapt = [adapting.adapted(adapting.generator(s) * adapting.scale) for s in (low, high)]
    ratio_plain = z_plain[1][50:].std(0) / z_plain[0][50:].std(0)
    ratio_adapt = z_adapt[1][50:].std(0) / z_adapt[0][50:].std(0)
    assert (ratio_adapt < 0.8 * ratio_plain).all()  # ... adaptation compresses high against low contrast


def test_fano_factor_of_the_counts() -> None:
    from vist_rt.data.simulate import RetinaSettings

    def fano(f: float) -> float:
        sim = simulate(n_cells=4, n_movies=1, n_frames=200, n_trials=60, seed=3, size=(32, 32),
                       settings=RetinaSettings(fano=f, rate=(40.0, 60.0)))  # fmt: skip
        spikes = sim.movies["movie1"].spikes.astype(np.float64)
        mean, var = spikes.mean(0), spikes.var(0, ddof=1)
        keep = mean > 0.5
        return float(var[keep].sum() / mean[keep].sum())

    assert fano(1.0) == pytest.approx(1.0, abs=0.1)
    assert fano(3.0) == pytest.approx(3.0, rel=0.15)


def test_a_retina_of_other_settings_is_rebuilt_from_its_file(tmp_path: Path) -> None:
    from vist_rt.data.simulate import RetinaSettings, known_retina, respond

    settings = RetinaSettings(cell_size=(0.02, 0.1), rate=(2.0, 30.0), subunits=0.5, adaptation=1.0, fano=2.0)
    sim = write_simulation(tmp_path / "s.h5", seed=2, settings=settings, **SMALL)
    assert known_retina(tmp_path / "s.h5").settings == settings
    with h5py.File(tmp_path / "s.h5") as f:
        stim, truth = f["movies/movie2/stimulus"][()], f["movies/movie2/truth"][()]
    np.testing.assert_array_equal(respond(tmp_path / "s.h5", stim), truth)
    np.testing.assert_array_equal(truth, sim.movies["movie2"].truth)
    with open_dataset(tmp_path / "s.h5") as ds:
        assert "retina" in ds.attrs["simulation"]
    write_simulation(tmp_path / "d.h5", seed=2, **SMALL)
    with open_dataset(tmp_path / "d.h5") as ds:  # the default retina's settings attribute is as it always was
        assert "retina" not in ds.attrs["simulation"]


def test_movies_without_flashes_same_retina(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vist_rt.cli import main
    from vist_rt.data.simulate import _movie_seed, known_retina, respond, simulation_params
    from vist_rt.movie import SyntheticMovie

    flags = ["--cells", "5", "--movies", "1", "--frames", "400", "--trials", "2", "--size", "40x48", "--seed", "3"]
    assert main(["simulate", str(tmp_path / "f.h5"), *flags]) == 0
    assert main(["simulate", str(tmp_path / "n.h5"), *flags, "--no-flashes"]) == 0
    assert "no flashes" in capsys.readouterr().out
    with open_dataset(tmp_path / "f.h5") as f, open_dataset(tmp_path / "n.h5") as n:
        assert "movie" not in simulation_params(f.attrs["simulation"])  # the default's attribute is as it was
        assert simulation_params(n.attrs["simulation"])["movie"] == {"flashes": False}
        a, b = np.asarray(f.movie("movie1").stimulus), np.asarray(n.movie("movie1").stimulus)
        truth = np.asarray(n.movie("movie1").extra("truth"))
    flash = SyntheticMovie(_movie_seed(3, 0), (40, 48)).schedule(400).flash
    assert flash.any()
    np.testing.assert_array_equal((a != b).any(axis=(1, 2)), flash)  # the flash frames, and only they, differ
    rf, rn = known_retina(tmp_path / "f.h5"), known_retina(tmp_path / "n.h5")
    np.testing.assert_array_equal(rn.scale, rf.scale)  # the same cells, calibrated the same
    np.testing.assert_array_equal(respond(tmp_path / "n.h5", b), truth)
    np.save(tmp_path / "stim.npy", b)
    code = main(["simulate", "--respond", str(tmp_path / "n.h5"), str(tmp_path / "stim.npy"), str(tmp_path / "r.npy"),
                 "--no-flashes"])  # fmt: skip
    assert code == 2 and "give no retina or movie settings" in capsys.readouterr().err
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--subunits", "1.5"], "--subunits: expected a finite number in [0, 1]"),
        (["--cell-size", "0.2,0.1"], "cell size must satisfy"),
        (["--rate", "5"], "expected two numbers LO,HI"),
        (["--fano", "0.5"], "--fano: expected a finite number in [1, 100]"),
    ],
)
def test_bad_retina_settings_are_one_line(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    from vist_rt.cli import main

    code = None
    try:
        code = main(["simulate", str(tmp_path / "x.h5"), *flags])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_family_members_are_reproducible_and_varied() -> None:
    from vist_rt.data.simulate import FAMILY_SIZES, RetinaSettings, family_member

    members = [family_member(i) for i in (0, 1, 2, 3, 100, 101, 102, 103)]
    assert family_member(101) == members[5]  # the same index, the same retina
    assert len({(m["size"], m["n_cells"], m["settings"]) for m in members}) == len(members)
    for m in members:
        s = m["settings"]
        assert isinstance(s, RetinaSettings) and m["size"] in FAMILY_SIZES and 8 <= m["n_cells"] <= 40
        assert 0 <= s.subunits <= 0.7 and 0 <= s.adaptation <= 2 and 1 <= s.fano <= 2
    with pytest.raises(VistError, match="integer >= 0"):
        family_member(-1)
