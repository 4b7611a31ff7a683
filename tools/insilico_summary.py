"""Summarise the per-cell reports of tools/insilico_demo.sh: summary.json and a figure of predicted and true
rates on the optimized clips against the natural movie's best window, for every cell."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def main(work: Path, out: Path) -> None:
    reports = {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob("*/report.json"))}
    if not reports:
        raise SystemExit(f"no */report.json under {work}")
    keys = ("pred_stimulus", "pred_natural_max", "true_stimulus", "true_natural_max", "steps", "stopped",
            "retina_is_the_checkpoints")  # fmt: skip
    rows = [{"cell": cell, **{k: r.get(k) for k in keys}} for cell, r in reports.items()]
    pred = np.array([[r["pred_stimulus"], r["pred_natural_max"]] for r in rows])
    true = np.array([[r["true_stimulus"], r["true_natural_max"]] for r in rows])
    summary = {
        "cells": len(rows),
        "pred_at_least_2x_natural": int((pred[:, 0] >= 2 * pred[:, 1]).sum()),
        "true_above_natural": int((true[:, 0] > true[:, 1]).sum()),
        "pred_ratio_median": float(np.median(pred[:, 0] / pred[:, 1])),
        "true_ratio_median": float(np.median(true[:, 0] / true[:, 1])),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (name, vals) in zip(axes, (("predicted (Vi-ST)", pred), ("known retina (simulator)", true))):
        x = np.arange(len(rows))
        ax.bar(x - 0.2, vals[:, 1], 0.4, color="0.6", label="natural movie, best 10-frame window")
        ax.bar(x + 0.2, vals[:, 0], 0.4, color="C3", label="optimized clip, last 10 frames")
        ax.set_xticks(x, [r["cell"][-2:] for r in rows], fontsize=7)
        ax.set_xlabel("cell (sim0..)")
        ax.set_ylabel("rate (spikes/s)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cells.png", dpi=110)
    first = sorted(reports)[0]
    shutil.copy(work / first / "figure.png", out / f"{first}-figure.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
