"""`vist-rt simulate ...` and `vist-rt convert onken ...`: make dataset files."""

from __future__ import annotations

import argparse

from vist_rt.cli.options import float_in, int_at_least
from vist_rt.errors import VistError


def _size(text: str) -> tuple[int, int]:
    """'120x160' -> (120, 160) (H x W)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 120x160), got {text!r}") from None
    return h, w


def _pair(text: str) -> tuple[float, float]:
    """'0.03,0.08' -> (0.03, 0.08)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI, got {text!r}") from None
    return lo, hi


def _fps(text: str) -> float:
    """A frame rate in Hz within the simulator's range (0.1 to 1000)."""
    from vist_rt.data.simulate import FPS_RANGE  # (here: the simulator is not imported to parse flags)

    return float_in(*FPS_RANGE)(text)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `simulate` and `convert`."""
    p = sub.add_parser(
        "simulate",
        help="write a simulated retina's responses as a dataset file, or (--respond) its rates to any frames",
    )
    p.add_argument("out", nargs="?", help="output dataset (.h5); with --respond: where to write the rates (.npy)")
    p.add_argument("--respond", nargs=2, metavar=("DATA.h5", "STIMULUS.npy"),
                   help="the ground-truth rates [T, C] (spikes/s) of the simulated retina that made DATA.h5 to the "
                   "uint8 frames [T, H, W(, 3)] in STIMULUS.npy (its frame size)")  # fmt: skip
    p.add_argument("--cells", type=int, default=16, help="number of cells (default 16)")
    p.add_argument("--movies", type=int, default=2, help="number of movies (default 2)")
    p.add_argument("--frames", type=int, default=300, help="frames per movie (default 300)")
    p.add_argument("--trials", type=int, default=10, help="repeated trials per movie (default 10)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed, >= 0 (default 0)")
    p.add_argument("--size", type=_size, default=(120, 160), help="frame size HxW (default 120x160)")
    p.add_argument("--fps", type=_fps, default=30.0, help="frame rate = bin rate, 0.1 to 1000 Hz (default 30)")
    p.add_argument("--no-flashes", dest="flashes", action="store_false",
                   help="movies without the brief full-field flashes (every other frame the same)")  # fmt: skip
    r = p.add_argument_group("kind of retina (defaults: the demo's LNP retina)")
    r.add_argument("--cell-size", type=_pair, metavar="LO,HI", default=(0.035, 0.06),
                   help="centre sigma as fractions of the frame's short side (0.035,0.06)")  # fmt: skip
    r.add_argument("--rate", type=_pair, metavar="LO,HI", default=(5.0, 15.0),
                   help="peak-rate scale r_max, spikes/s (5,15)")  # fmt: skip
    r.add_argument("--subunits", type=float_in(0.0, 1.0), default=0.0,
                   help="weight of the nonlinear centre (rectified subunits), 0 to 1 (0: linear)")  # fmt: skip
    r.add_argument("--adaptation", type=float_in(0.0, 100.0), default=0.0,
                   help="strength of contrast adaptation, >= 0 (0: none)")  # fmt: skip
    r.add_argument("--adaptation-s", type=float_in(0.01, 60.0), default=0.5,
                   help="time constant of contrast adaptation, s (0.5)")  # fmt: skip
    r.add_argument("--fano", type=float_in(1.0, 100.0), default=1.0,
                   help="spike-count variance / mean, >= 1 (1: Poisson)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    p.set_defaults(func=run_simulate)

    conv = sub.add_parser("convert", help="convert published recordings to a dataset file")
    kinds = conv.add_subparsers(dest="convert", metavar="SOURCE", required=True)
    o = kinds.add_parser("onken", help="Onken et al. 2017 salamander data (Dryad doi 10.5061/dryad.4ch10)")
    o.add_argument("dryad_dir", help="folder with Stimuli/ and NeuralData/")
    o.add_argument("out", help="output dataset (.h5)")
    o.add_argument("--movie", required=True, help="recording/movie name, e.g. Movie1Exp1 (NeuralData/<movie>*.mat)")
    o.add_argument("--fps", type=float, required=True, help="movie frame rate, Hz (not in the archive's notes)")
    o.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    o.add_argument("--frame-size", type=_size, default=(360, 360), help="raw frame size HxW (default 360x360)")
    o.add_argument("--cell-prefix", default="", help="prefix of the cell ids (default none: n001, n002, ...)")
    o.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    o.set_defaults(func=run_convert)


def run_respond(args: argparse.Namespace) -> int:
    """`simulate --respond DATA STIMULUS [OUT.npy]`: the known retina's rates to the frames; a summary line."""
    from vist_rt.data.simulate import known_retina
    from vist_rt.errors import VistError
    from vist_rt.files import check_output_file, read_npy, write_npy

    data, stimulus = args.respond
    if args.out is not None:
        check_output_file(args.out, overwrite=args.force)
    retina = known_retina(data)
    frames = read_npy(stimulus, "stimulus", "[T, H, W(, 3)] uint8")
    if frames.dtype != "uint8":
        raise VistError(f"stimulus {stimulus} must be uint8 frames, got {frames.dtype}")
    rates = retina.rates(frames)
    if args.out is not None:
        write_npy(args.out, rates)
    top = int(rates.mean(axis=0).argmax())
    print(
        f"{retina.n_cells} simulated cells x {rates.shape[0]} frames: mean rate {float(rates.mean()):.2f} spikes/s, "
        f"highest {retina.cell_ids[top]} {float(rates[:, top].mean()):.2f}"
        + (f"; rates [T, C] written to {args.out}" if args.out is not None else "")
    )
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate, write, print a summary (incl. the mean noise ceiling)."""
    import numpy as np

    from vist_rt.data.simulate import RetinaSettings, noise_ceiling, truth_cc, write_simulation
    from vist_rt.errors import VistError

    settings = RetinaSettings(cell_size=args.cell_size, rate=args.rate, subunits=args.subunits,
                              adaptation=args.adaptation, adaptation_s=args.adaptation_s, fano=args.fano)  # fmt: skip
    if args.respond:
        if settings != RetinaSettings() or not args.flashes:
            raise VistError("--respond uses the retina that made DATA.h5 on STIMULUS: give no retina or movie "
                            "settings with it")  # fmt: skip
        return run_respond(args)
    if args.out is None:
        raise VistError("simulate needs OUT (the dataset to write), or --respond DATA.h5 STIMULUS.npy")

    sim = write_simulation(args.out, args.cells, args.movies, args.frames, args.trials, args.seed, args.size, args.fps,
                           settings=settings, flashes=args.flashes, overwrite=args.force)  # fmt: skip
    h, w = sim.retina.size
    print(
        f"wrote {args.out}: {sim.retina.n_cells} cells ({int((sim.retina.polarity > 0).sum())} ON), "
        f"{len(sim.movies)} movies x {args.frames} frames ({h}x{w}) at {sim.fps:g} Hz, {args.trials} trials, "
        f"seed {args.seed}{'' if args.flashes else ', no flashes'}"
    )
    ccs = truth_cc(sim)
    for name, m in sim.movies.items():
        ceiling = f"{float(noise_ceiling(m.spikes).mean()):.3f}" if args.trials >= 2 else "n/a (1 trial)"
        print(
            f"  {name}: mean rate {float(m.rates.mean()):.2f} spikes/s, mean noise ceiling CC {ceiling}, "
            f"mean CC(truth, trial average) {float(np.mean(ccs[name])):.3f}"
        )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert published data (`onken`) and print a summary."""
    if args.convert != "onken":  # pragma: no cover - argparse only offers onken
        raise VistError(f"unknown source {args.convert!r}")
    from vist_rt.data.dataset import open_dataset
    from vist_rt.data.onken import convert_onken

    path = convert_onken(
        args.dryad_dir, args.out, movie=args.movie, fps=args.fps, frame_shape=args.frame_size,
        n_frames=args.frames, cell_prefix=args.cell_prefix, overwrite=args.force,
    )  # fmt: skip
    with open_dataset(path) as ds:
        m = ds.movie(args.movie)
        spikes = m.spikes
        trials = 0 if spikes is None else spikes.shape[0]
        print(f"wrote {path}: movie {args.movie}, {m.T} frames at {ds.fps:g} Hz, {ds.n_cells} cells, {trials} trials")
    return 0
