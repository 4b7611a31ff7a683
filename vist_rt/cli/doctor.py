"""`vist-rt doctor`: what this machine offers vist-rt (backends, devices, cameras, extras), and why not."""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import socket
import sys
from collections.abc import Callable
from typing import Any

from vist_rt.errors import first_line

OK, NO, INFO = "ok", "missing", "info"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `doctor`."""
    p = sub.add_parser("doctor", help="what backends, devices, cameras and extras are available here, and why not")
    p.add_argument("--cameras", type=int, default=4, metavar="N", help="probe camera indices 0..N-1 (default 4)")
    p.add_argument("--json", metavar="PATH", help="also write the checks to PATH")
    p.set_defaults(func=run_doctor)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _module(name: str, dist: str, extra: str, why: str) -> dict[str, Any]:
    """An optional module: importable (and its version), or why not with the install hint."""
    try:
        importlib.import_module(name)
    except ImportError as exc:
        hint = f'pip install "vist-rt[{extra}]"' if extra else "a core dependency: reinstall vist-rt"
        try:
            missing = importlib.util.find_spec(name) is None
        except ValueError:  # a module set to None in sys.modules: as good as absent
            missing = True
        detail = f"not installed: {hint} ({why})" if missing else f"installed but fails to import: {exc}"
        return {"status": NO, "detail": detail}
    except (OSError, RuntimeError) as exc:  # e.g. pylsl without its liblsl
        return {"status": NO, "detail": f"installed but fails to load: {first_line(exc)}"}
    return {"status": OK, "detail": f"{dist} {_version(dist) or '?'} ({why})"}


def check_torch() -> list[tuple[str, dict[str, Any]]]:
    """torch, its CUDA build, and the devices it sees."""
    import torch

    rows = [("torch", {"status": OK, "detail": f"{torch.__version__}, {torch.get_num_threads()} CPU threads"})]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(("cuda", {"status": OK, "detail": f"CUDA {torch.version.cuda}: {names}"}))
    elif torch.version.cuda is None:
        rows.append(("cuda", {"status": NO, "detail": "this torch is a CPU-only build (install a CUDA build)"}))
    else:
        rows.append(("cuda", {"status": NO, "detail": f"torch built for CUDA {torch.version.cuda}, but no "
                                                       "CUDA device or driver is visible"}))  # fmt: skip
    return rows


def check_backends() -> list[tuple[str, dict[str, Any]]]:
    """Feature backends: usable here (with the precisions they run), or the reason."""
    from vist_rt.features.backends import RUNS, available

    rows = []
    for name, reason in available().items():
        runs = ", ".join(f"{dev}: {'/'.join(p)}" for (b, dev), p in RUNS.items() if b == name)
        detail = f"runs {runs}" if reason is None else reason
        rows.append((f"backend {name}", {"status": OK if reason is None else NO, "detail": detail}))
    return rows


def check_cpu_path() -> list[tuple[str, dict[str, Any]]]:
    """The CPU's matrix extensions and the ViT path `--precision auto` picks on it."""
    from vist_rt.cpu import this_cpu
    from vist_rt.features.backends import resolve

    cpu = this_cpu()
    choice = resolve("auto", "cpu", "auto", cpu)
    has = ", ".join(cpu.extensions) if cpu.known else "flags unreadable"
    path = f"{choice.backend} {choice.precision} ({choice.why})"
    detail = f"{cpu.model}: {has or 'no matrix extensions'}; ViT path of --precision auto: {path}"
    return [("cpu", {"status": OK if choice.precision != "fp32" else INFO, "detail": detail})]


def check_cameras(n: int) -> list[tuple[str, dict[str, Any]]]:
    """Camera indices 0..n-1 that open and give a frame (video devices listed first, where the OS has them)."""
    import cv2

    if n <= 0:
        return [("cameras", {"status": INFO, "detail": "not probed (--cameras 0)"})]
    devices = sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []
    if sys.platform.startswith("linux") and not devices:
        return [("cameras", {"status": NO, "detail": "no /dev/video* devices (none connected, or not passed into "
                                                     "this container)"})]  # fmt: skip
    found = []
    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    for i in range(n):
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                ok, frame = cap.read()
                found.append(f"camera:{i} {frame.shape[1]}x{frame.shape[0]}" if ok else f"camera:{i} (no frame)")
        finally:
            cap.release()
    if not found:
        return [("cameras", {"status": NO, "detail": f"none of indices 0..{n - 1} opens ({', '.join(devices)})"})]
    return [("cameras", {"status": OK, "detail": ", ".join(found)})]


def check_ports() -> list[tuple[str, dict[str, Any]]]:
    """The default endpoints of `vist-rt run` are free on loopback."""
    from vist_rt.runtime.config import DEFAULT_CONTROL, DEFAULT_PUB

    rows = []
    for label, endpoint in (("pub", DEFAULT_PUB), ("control", DEFAULT_CONTROL)):
        port = int(endpoint.rsplit(":", 1)[1])
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT is not "in use"
            try:
                s.bind(("127.0.0.1", port))
                rows.append((f"port {label}", {"status": OK, "detail": f"{endpoint} free"}))
            except OSError:
                rows.append((f"port {label}", {"status": NO, "detail": f"{endpoint} in use: pass --{label} "
                                                                        "ENDPOINT"}))  # fmt: skip
    return rows


def check_demo() -> list[tuple[str, dict[str, Any]]]:
    """The shipped demo model (what `vist-rt run` uses without --checkpoint)."""
    from vist_rt.demo import DEMO_CHECKPOINT
    from vist_rt.errors import VistError
    from vist_rt.model import load_checkpoint

    if not DEMO_CHECKPOINT.is_file():
        return [("demo model", {"status": NO, "detail": f"missing ({DEMO_CHECKPOINT}): tools/make_demo_model.sh"})]
    try:
        ckpt = load_checkpoint(DEMO_CHECKPOINT)
    except VistError as exc:
        return [("demo model", {"status": NO, "detail": str(exc)})]
    sim = (ckpt.meta.get("provenance") or {}).get("simulation") or {}
    size_mb = DEMO_CHECKPOINT.stat().st_size / 1e6
    detail = (f"{ckpt.config.cells} cells at {ckpt.fps:g} Hz, {size_mb:.1f} MB, trained on the simulated retina "
              f"(seed {sim.get('seed', '?')}), raw pixel patches (not DINOv2)")  # fmt: skip
    return [("demo model", {"status": OK, "detail": detail})]


def check_native() -> list[tuple[str, dict[str, Any]]]:
    """`--temporal native`: a C compiler to build its kernels, and whether they are built already."""
    from vist_rt.errors import VistError
    from vist_rt.model import native

    try:
        cc = native.find_compiler()
        built = (native.default_cache_dir() / f"vist_native-{native.kernel_key(cc)}.so").is_file()
    except VistError as exc:
        return [("temporal native", {"status": NO, "detail": str(exc)})]
    state = "built" if built else "compiled on first use"
    return [
        (
            "temporal native",
            {"status": OK, "detail": f"C compiler {cc}; kernels {state} ({native.default_cache_dir()})"},
        )
    ]


def check_low_latency() -> list[tuple[str, dict[str, Any]]]:
    """`--low-latency`: whether this user can make the PM QoS request (tried for an instant)."""
    from vist_rt.errors import VistError
    from vist_rt.runtime import lowlatency

    now = lowlatency.current_limit_us()
    held = "unknown" if now is None else "none" if now == lowlatency.NO_REQUEST_US else f"{now} us"
    try:
        with lowlatency.CpuLatencyRequest(0):
            pass
    except VistError as exc:
        return [("low latency", {"status": NO, "detail": str(exc)})]
    detail = f"--low-latency can hold {lowlatency.PM_QOS_DEVICE} at 0 us (limit in force now: {held})"
    return [("low latency", {"status": OK, "detail": detail})]


def check_rt_priority() -> list[tuple[str, dict[str, Any]]]:
    """`--rt-priority`: whether this user may run a thread under SCHED_FIFO (tried for an instant)."""
    from vist_rt.errors import VistError
    from vist_rt.runtime import lowlatency

    try:
        with lowlatency.ClockPriority(lowlatency.RT_PRIORITIES[0]):
            pass
    except VistError as exc:
        return [("real-time priority", {"status": NO, "detail": str(exc)})]
    high = lowlatency.RT_PRIORITIES[1]
    return [("real-time priority", {"status": OK, "detail": f"--rt-priority 1..{high} can be had (SCHED_FIFO)"})]


def check_cpu_pinning() -> list[tuple[str, dict[str, Any]]]:
    """`--tick-cpu` / `--io-cpu`: the CPUs this process may use, and those the kernel keeps for pinned work."""
    from vist_rt.runtime import affinity

    if not affinity.supported():
        return [("cpu pinning", {"status": NO, "detail": "--tick-cpu / --io-cpu need Linux"})]
    isolated = affinity.isolated_cpus()
    detail = f"--tick-cpu / --io-cpu: CPUs {affinity.format_cpus(affinity.available_cpus())} available; isolated " + (
        f"(isolcpus): {affinity.format_cpus(isolated)}" if isolated else "none (isolcpus= keeps a CPU for the tick)"
    )
    return [("cpu pinning", {"status": OK, "detail": detail})]


def collect(cameras: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """Every check, in display order."""
    rows: list[tuple[str, dict[str, Any]]] = [
        ("vist-rt", {"status": INFO, "detail": f"{_version('vist-rt') or '?'} on Python {platform.python_version()}, "
                                               f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"}),
    ]  # fmt: skip
    modules = [("timm", "", "DINOv2 definitions"), ("onnx", "onnx", "exporting ONNX graphs"),
               ("pylsl", "lsl", "the --lsl outlet"), ("scipy", "train", "SD-KL, the Onken converter"),
               ("matplotlib", "train", "eval --plots")]  # fmt: skip
    checks: list[tuple[str, Callable[[], list[tuple[str, dict[str, Any]]]]]] = [
        ("torch", check_torch),
        ("backends", check_backends),
        ("cpu", check_cpu_path),
        ("temporal native", check_native),
        ("low latency", check_low_latency),
        ("real-time priority", check_rt_priority),
        ("cpu pinning", check_cpu_pinning),
        *((m, lambda m=m, e=e, why=why: [(m, _module(m, m, e, why))]) for m, e, why in modules),
        ("demo model", check_demo),
        ("cameras", lambda: check_cameras(cameras)),
        ("ports", check_ports),
    ]
    for name, check in checks:
        try:
            rows += check()
        except Exception as exc:  # one broken check (a library that fails to load) must not hide the others
            rows.append((name, {"status": NO, "detail": f"check failed: {type(exc).__name__}: {exc}"}))
    return rows


def run_doctor(args: argparse.Namespace) -> int:
    """Print the checks as a table (and JSON with --json); always exit 0: it reports, it does not judge."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rows = collect(args.cameras)
    table = Table(title="vist-rt doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colour = {OK: "green", NO: "dark_orange", INFO: "cyan"}
    for name, r in rows:
        table.add_row(name, Text(r["status"], style=colour[r["status"]]), Text(r["detail"]))  # no markup: [extras]
    Console().print(table)
    if args.json:
        from vist_rt.bench.stats import write_json

        write_json(args.json, {name: r for name, r in rows})
    return 0
