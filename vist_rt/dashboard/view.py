"""What the dashboard draws, as a pure function of one snapshot of the run (no threads, no terminal).

`render(snap, width, height)` returns a rich renderable: header, timing table, cell mosaic and sparklines.
Tests render it into `Console(record=True, width=...)` and read the text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vist_rt.runtime.stats import STAGES

MIN_WIDTH, MIN_HEIGHT = 60, 16  # below this only a one-line status is drawn
SPARK = "▁▂▃▄▅▆▇█"
HEAT = ("grey27", "blue", "cyan", "green", "yellow", "bright_white")  # rate, low to high
OK, AMBER, RED = "green", "dark_orange", "red"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One moment of a run, everything the dashboard draws.

    status: `Runtime.status()`; meta: the (first) stream's meta message; history: its rates `[H, C]`, oldest
    first; stream_history: each stream's rates `[H, C]` (in the order of status["streams"]); picks: cells given
    sparklines; missed_recent / stale_recent: ticks missed / stale since the previous
    refresh; uptime_s: by the dashboard's clock; log: the last few log lines.
    """

    status: dict[str, Any]
    meta: dict[str, Any]
    history: np.ndarray
    picks: tuple[int, ...]
    stream_history: tuple[np.ndarray, ...] = ()
    missed_recent: int = 0
    stale_recent: int = 0
    uptime_s: float = 0.0
    log: tuple[str, ...] = ()
    keys: bool = True


def tick_work_p99(status: dict[str, Any]) -> float | None:
    """p99 of a tick's own work on the clock thread (temporal step + the rest of the tick, before and after
    the send), ms."""
    lat = status.get("latency_ms") or {}
    parts = [lat.get(k) for k in ("temporal", "overhead", "housekeeping")]
    return None if not any(parts) else sum(w["p99"] for w in parts if w)


def health(snap: Snapshot) -> str:
    """OK, AMBER or RED: does a live run hold its clock?

    RED: missing ticks now (since the last refresh), below 95 % of the rate, or a tick's work (p99) longer
    than a period. AMBER: ticks missed earlier, below 99 %, a tick's work over half a period, or stale ticks
    now (the features lag the clock). e2e is not judged: in a live run it includes the wait for the next tick.
    """
    s = snap.status
    if s["mode"] != "live" or s.get("paused") or s["ticks"] < 2:
        return OK
    ratio = s["rate_hz"] / s["target_hz"] if s["target_hz"] else 1.0
    period_ms = 1e3 / s["target_hz"] if s["target_hz"] else float("inf")
    work = tick_work_p99(s) or 0.0
    if snap.missed_recent > 0 or ratio < 0.95 or work > period_ms:
        return RED
    if s["missed"] > 0 or ratio < 0.99 or work > 0.5 * period_ms or snap.stale_recent > 0:
        return AMBER
    return OK


def model_line(meta: dict[str, Any]) -> str:
    """'demo model (...)' or the checkpoint's file name, with cell count and frame rate."""
    model = meta.get("model") or {}
    name = "demo model (simulated retina, cpu-small)" if model.get("demo") else str(model.get("checkpoint"))
    return f"{name}: {meta.get('n')} cells at {meta.get('fps', 0):g} Hz"


def header(snap: Snapshot) -> Panel:
    """Source and state, model and frame rate, features, backend/device/precision, endpoints."""
    s, meta = snap.status, snap.meta
    rt = s.get("runtime") or {}
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    state = s.get("source_state", "")
    state_style = OK if state in ("running", "ok", "none", "ended") else AMBER
    mode = s["mode"] + (" PAUSED" if s.get("paused") else "")
    grid.add_row("source", Text.assemble(str(s.get("source")), " (", (str(state), state_style), f") {mode}"))
    grid.add_row("model", model_line(meta))
    dinov2 = bool(meta.get("dinov2"))
    grid.add_row("features", Text(str(s.get("extractor")), style=None if dinov2 else AMBER))
    grid.add_row(
        "backend",
        f"{rt.get('backend', '?')} / {rt.get('device', meta.get('device', '?'))} / {rt.get('precision', 'fp32')}"
        + (f" ({rt['chosen']})" if rt.get("chosen") else "")
        + f"   temporal on {meta.get('device', 'cpu')}, torch threads {s.get('torch_threads')}"
        + (f", ViT threads {s['vit_threads']}" if s.get("vit_threads") else "")
        + ("   low latency (PM QoS)" if s.get("low_latency") else "")
        + "".join(
            f"   {what} CPU {s[key]}"
            for what, key in (("tick", "tick_cpu"), ("I/O", "io_cpu"))
            if s.get(key) is not None
        ),
    )
    out = f"pub {s.get('pub')}   control {s.get('control')}"
    if s.get("record"):
        out += f"   recording {s['record']}"
    grid.add_row("out", out)
    keys = "   keys: q quit, r reset, p pause/resume" if snap.keys else ""
    return Panel(grid, title=f"vist-rt  up {snap.uptime_s:.0f} s{keys}", title_align="left", border_style=health(snap))


def timing(snap: Snapshot) -> Panel:
    """Per-stage and end-to-end p50/p99/max; clock rate vs target; stale, missed, dropped, published."""
    s = snap.status
    lat = s.get("latency_ms") or {}
    period_ms = 1e3 / s["target_hz"] if s.get("target_hz") else float("inf")
    table = Table(box=None, pad_edge=False, expand=False)
    table.add_column("stage (ms)")
    for col in ("p50", "p99", "max"):
        table.add_column(col, justify="right")
    for stage in STAGES:
        w = lat.get(stage)
        if not w:
            table.add_row(stage, "-", "-", "-", style="dim")
            continue
        style = None
        if stage == "temporal":  # the clock thread's main cost, judged with the rest of the tick's work
            work = tick_work_p99(s) or 0.0
            style = RED if work > period_ms else AMBER if work > 0.5 * period_ms else OK
        table.add_row(stage, f"{w['p50']:.2f}", f"{w['p99']:.2f}", f"{w['max']:.2f}", style=style)
    colour = health(snap)
    counts = Text.assemble(
        ("clock ", "bold"),
        (f"{s['rate_hz']:.2f} / {s['target_hz']:.2f} Hz", colour),
        f"   ticks {s['ticks']}   ",
        (f"stale {s['stale']}", AMBER if snap.stale_recent else None),
        "   ",
        (f"missed {s['missed']}", RED if snap.missed_recent else AMBER if s["missed"] else None),
        f"   dropped {s['dropped']}   published {s['messages']}",
    )
    parts: list[RenderableType] = [table, counts]
    if s.get("source_errors"):
        parts.append(Text(f"source errors {s['source_errors']}", style=AMBER))
    return Panel(Group(*parts), title="timing", title_align="left", border_style=colour)


def _level(value: float, top: float) -> int:
    """0..len(HEAT)-1: where `value` sits between 0 and `top`."""
    if not top > 0 or not np.isfinite(value):
        return 0
    return int(np.clip(value / top, 0.0, 1.0) * (len(HEAT) - 1) + 0.5)


def mosaic(snap: Snapshot, cols: int, rows: int) -> Panel:
    """Every cell's current rate at its receptive-field centre on a `cols` x `rows` map of the model's input."""
    centres = snap.meta.get("rf_centres") or []
    hist = np.nan_to_num(snap.history, nan=0.0, posinf=0.0, neginf=0.0)
    now = hist[-1] if len(hist) else np.zeros(len(centres), np.float32)
    top = float(np.percentile(hist, 99)) if hist.size else 0.0
    chars = [[(" ", None)] * cols for _ in range(rows)]
    best = np.full((rows, cols), -1.0)
    for c, xy in enumerate(centres):
        if xy is None or c >= len(now):
            continue
        x, y = min(cols - 1, int(xy[0] * cols)), min(rows - 1, int(xy[1] * rows))
        if now[c] > best[y, x]:  # two cells on one spot: the more active one shows
            best[y, x] = now[c]
            chars[y][x] = ("●", HEAT[_level(float(now[c]), top)])
    text = Text()
    for r, line in enumerate(chars):
        for ch, style in line:
            text.append(ch, style=style)
        if r < rows - 1:
            text.append("\n")
    legend = Text.assemble("0 ", *((("■", h)) for h in HEAT), f" {top:.1f} {snap.meta.get('units', '')}")
    return Panel(Group(text, legend), title="cells at their RF centres", title_align="left")


def sparkline(values: np.ndarray, width: int, top: float | None = None) -> str:
    """The last `width` values as block characters scaled to [0, top] (top: their maximum by default)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64)[-width:], nan=0.0, posinf=0.0, neginf=0.0)
    if v.size == 0:
        return ""
    top = float(v.max()) if top is None else top
    if not (top > 0 and np.isfinite(top)):
        return SPARK[0] * v.size
    idx = np.clip((v / top) * (len(SPARK) - 1) + 0.5, 0, len(SPARK) - 1).astype(int)
    return "".join(SPARK[i] for i in idx)


def traces(snap: Snapshot, width: int) -> Panel:
    """Sparklines of the picked cells and of the population mean rate."""
    ids = snap.meta.get("cell_ids") or []
    hist = snap.history
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    spark_w = max(8, width - 24)
    rows: list[tuple[str, np.ndarray]] = [("population", hist.mean(axis=1) if hist.size else np.zeros(0))]
    rows += [(str(ids[c]) if c < len(ids) else f"cell {c}", hist[:, c] if hist.size else np.zeros(0))
             for c in snap.picks]  # fmt: skip
    for label, values in rows:
        now = f"{values[-1]:.2f}" if len(values) else "-"
        table.add_row(label[:12], Text(sparkline(values, spark_w), style="cyan"), now)
    shown = min(len(hist), spark_w)
    return Panel(table, title=f"rates, last {shown} ticks ({snap.meta.get('units', '')})", title_align="left")


def streams(snap: Snapshot, width: int) -> Panel:
    """One row per stream of a several-stream run: its name, source state, messages, stale, dropped, source
    errors, whether it is paused or stopped, and its population rate's sparkline."""
    table = Table(box=None, pad_edge=False)
    for col in ("stream", "source", "msgs", "stale", "dropped", "errors", "rate"):
        table.add_column(col, justify="right" if col in ("msgs", "stale", "dropped", "errors") else "left",
                         no_wrap=True)  # fmt: skip
    spark_w = max(8, width - 60)
    for i, st in enumerate(snap.status.get("streams") or []):
        hist = snap.stream_history[i] if i < len(snap.stream_history) else np.zeros((0, 0))
        mean = hist.mean(axis=1) if hist.size else np.zeros(0)
        state = "stopped" if st.get("stopped") else "PAUSED" if st.get("paused") else str(st.get("source_state"))
        style = OK if state in ("running", "ok", "ended") else RED if state == "stopped" else AMBER
        counts = (str(st[k]) for k in ("ticks", "stale", "dropped", "source_errors"))
        table.add_row(str(st.get("name")), Text(state, style=style), *counts,
                      Text(sparkline(mean, spark_w), style="cyan"))  # fmt: skip
    return Panel(table, title="streams (population rate)", title_align="left")


def render(snap: Snapshot, width: int, height: int) -> RenderableType:
    """The whole screen for a terminal of `width` x `height` characters."""
    s = snap.status
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        line = (f"[{s['mode']}] tick {s['ticks']} {s['rate_hz']:.1f}/{s['target_hz']:.1f} Hz "
                f"stale {s['stale']} missed {s['missed']}")  # fmt: skip
        return Text(f"terminal too small ({width}x{height}; the dashboard needs {MIN_WIDTH}x{MIN_HEIGHT})\n{line}")
    left_w = max(30, width // 2)
    map_rows = max(4, min(16, height - 24))
    body = Table.grid(expand=True)
    body.add_column(ratio=1)
    body.add_column(ratio=1)
    body.add_row(timing(snap), mosaic(snap, max(10, left_w - 6), map_rows))
    parts: list[RenderableType] = [header(snap), body]
    if len(s.get("streams") or []) > 1:
        parts.append(streams(snap, width - 4))
    parts.append(traces(snap, width - 4))
    if snap.log:
        parts.append(Text("\n".join(snap.log[-3:]), style="dim"))
    return Group(*parts)
