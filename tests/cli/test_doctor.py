"""`vist-rt doctor`: every check reported, with the reason and install hint when something is missing."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from vist_rt.cli import doctor, main


def test_reports_every_check_as_json(tmp_path: Path, capsys) -> None:
    assert main(["doctor", "--cameras", "1", "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "d.json").read_text())
    names = ("vist-rt", "torch", "cuda", "backend torch", "backend onnxruntime", "backend tensorrt", "temporal native",
             "low latency", "real-time priority", "cpu pinning", "timm", "onnx", "pylsl", "scipy", "matplotlib",
             "demo model", "cameras",
             "port pub", "port control")  # fmt: skip
    for name in names:
        assert name in report and report[name]["status"] in ("ok", "missing", "info"), name
        assert report[name]["detail"]
    assert report["backend torch"]["status"] == "ok" and "cpu: fp32" in report["backend torch"]["detail"]
    assert "vist-rt[tensorrt]" in out or report["backend tensorrt"]["status"] == "ok"  # hint printed, not eaten


def test_native_without_a_compiler_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler")
    (name, r), *_ = doctor.check_native()
    assert name == "temporal native" and r["status"] == "missing"
    assert "needs a C compiler" in r["detail"] and "--temporal torch" in r["detail"]


def test_low_latency_says_whether_the_request_can_be_made(tmp_path: Path, monkeypatch) -> None:
    from vist_rt.runtime import lowlatency

    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(tmp_path / "absent"))
    (name, r), *_ = doctor.check_low_latency()
    assert name == "low latency" and r["status"] == "missing" and "does not exist" in r["detail"]
    (tmp_path / "dev").write_bytes(b"")
    monkeypatch.setattr(lowlatency, "PM_QOS_DEVICE", str(tmp_path / "dev"))
    (name, r), *_ = doctor.check_low_latency()
    assert r["status"] == "ok" and "can hold" in r["detail"] and (tmp_path / "dev").read_bytes() == bytes(4)


def test_rt_priority_says_whether_it_can_be_had(monkeypatch) -> None:
    import os

    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    (name, r), *_ = doctor.check_rt_priority()
    assert name == "real-time priority" and r["status"] == "missing" and "CAP_SYS_NICE" in r["detail"]


def test_missing_extra_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pylsl", None)  # import fails as if absent
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None)
    r = doctor._module("pylsl", "pylsl", "lsl", "the --lsl outlet")
    assert r["status"] == "missing" and 'pip install "vist-rt[lsl]"' in r["detail"]


def test_busy_port_is_reported(monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        monkeypatch.setattr("vist_rt.runtime.config.DEFAULT_PUB", f"tcp://127.0.0.1:{port}")
        rows = dict(doctor.check_ports())
    assert rows["port pub"]["status"] == "missing" and "--pub" in rows["port pub"]["detail"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /dev/video* probe is Linux's")
def test_no_camera_devices_says_why(monkeypatch) -> None:
    monkeypatch.setattr(doctor.glob, "glob", lambda pattern: [])
    ((name, r),) = doctor.check_cameras(2)
    assert name == "cameras" and r["status"] == "missing" and "/dev/video" in r["detail"]


def test_a_check_that_breaks_does_not_hide_the_others(monkeypatch) -> None:
    def broken() -> list:
        raise RuntimeError("libGL.so.1: cannot open shared object file")

    monkeypatch.setattr(doctor, "check_ports", broken)
    rows = dict(doctor.collect(cameras=0))
    assert rows["ports"]["status"] == "missing" and "libGL" in rows["ports"]["detail"]
    assert rows["torch"]["status"] == "ok" and rows["cameras"]["status"] == "info"
    assert rows["timm"]["status"] == "ok"
