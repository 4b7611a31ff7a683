"""Train and evaluate the CPU preset on members of the simulated retina family (docs/science/family.md).

    python tools/retina_family.py DIR --members 100,101,102 [--recipe recipe.toml] [--frames 800]
                                      [--set subunits=1.0 --set adaptation=2.0] [--no-flashes]
                                      [--train movie1,movie2 --test none] [--seed 0]

Per member: simulate 3 movies x FRAMES frames (10 trials), train (`cpu-small`; by default on movie1, best
epoch by movie2; `--train movie1,movie2 --test none`: on both, no epoch chosen on held-out data), evaluate
on movie3 (the streaming model; the LN baseline fitted on the same training movies); DIR/family.json gets
the member's settings, mean CC, mean noise-normalised CC, the LN baseline's, and the training time. A member
already in family.json is skipped; one DIR holds one protocol (movies, seed, flashes).
`--set FIELD=VALUE` overrides one of the members' RetinaSettings fields (a number), e.g. a stronger nonlinearity.
`--no-flashes`: the movies without their full-field flashes (`vist-rt simulate --no-flashes`); one DIR holds one kind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from vist_rt.bench.stats import write_json
from vist_rt.data.simulate import family_member, write_simulation
from vist_rt.train.evaluate import evaluate_checkpoint
from vist_rt.train.schedule import PRESETS
from vist_rt.train.trainer import recipe_from_toml, train

SETTABLE = ("subunits", "adaptation", "adaptation_s", "fano")  # the number fields of RetinaSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--members", required=True, help="comma-separated member indices (0-99 tuning, 100+ held out)")
    ap.add_argument("--recipe", help="recipe TOML over cpu-small")
    ap.add_argument("--frames", type=int, default=800)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a RetinaSettings field")
    ap.add_argument("--no-flashes", dest="flashes", action="store_false", help="movies without full-field flashes")
    ap.add_argument("--train", default="movie1", help="training movies, comma-separated (of movie1, movie2)")
    ap.add_argument("--test", default="movie2", help="movie for the epoch choice, or none (default movie2)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    args = ap.parse_args()
    movies = args.train.split(",")
    test = None if args.test == "none" else args.test
    if (
        not set(movies) <= {"movie1", "movie2"}
        or len(set(movies)) != len(movies)
        or test not in (None, "movie1", "movie2")
    ):
        ap.error("--train takes movie1 and/or movie2, --test movie1, movie2 or none: movie3 is the evaluation's")
    overrides: dict[str, float] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in SETTABLE:
            ap.error(f"--set {item}: FIELD is one of {', '.join(SETTABLE)}")
        try:
            overrides[key] = float(value)
        except ValueError:
            ap.error(f"--set {item}: VALUE must be a number")
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_toml(args.recipe, base=PRESETS["cpu-small"]) if args.recipe else PRESETS["cpu-small"]
    path = out / "family.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    if done and done.get("flashes", True) != args.flashes:
        ap.error(f"{path} holds members {'with' if done.get('flashes', True) else 'without'} flashes: use another DIR")
    protocol = {"train": movies, "test": test, "seed": args.seed}
    if done and done.get("protocol", {"train": ["movie1"], "test": "movie2", "seed": 0}) != protocol:
        ap.error(f"{path} holds members of another protocol (training movies, test movie or seed): use another DIR")
    rows = done.get("members", [])
    for index in (int(v) for v in args.members.split(",")):
        if any(r["member"] == index for r in rows):
            continue
        kw = family_member(index)
        kw["settings"] = dataclasses.replace(kw["settings"], **overrides)  # checked by RetinaSettings
        data = out / f"member{index}.h5"
        write_simulation(
            data, n_movies=3, n_frames=args.frames, n_trials=10, flashes=args.flashes, overwrite=True, **kw
        )
        start = time.perf_counter()
        res = train(data, movies, out / f"member{index}.safetensors",
                    test_movie=test, recipe=recipe, seed=args.seed, force=True, log=lambda _line: None)  # fmt: skip
        seconds = time.perf_counter() - start
        result, _ = evaluate_checkpoint(res.best, data, "movie3")
        v, ln = result["vist"], result["ln"]
        row = {"member": index, "cells": kw["n_cells"], "size": list(kw["size"]),
               "settings": kw["settings"].to_dict(), "train_seconds": round(seconds, 1),
               "cc": v["cc_mean"], "cc_norm": v["cc_norm_mean"], "ln_cc": ln["cc_mean"],
               "ln_cc_norm": ln["cc_norm_mean"], "noise_ceiling": result["noise_ceiling_mean"],
               "truth_cc_norm": result["truth"]["cc_norm_mean"]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row))
        norm = [r["cc_norm"] for r in rows]
        write_json(path, {"recipe": recipe.__dict__, "frames": args.frames, "flashes": args.flashes,
                          "protocol": protocol, "members": rows,
                          "cc_norm_mean": float(np.mean(norm)), "cc_norm_sd": float(np.std(norm))})  # fmt: skip


if __name__ == "__main__":
    main()
