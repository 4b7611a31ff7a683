"""vist_rt.net: the default endpoints, `split_tcp`, `is_ip` and the loopback check that guards every bind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vist_rt import net
from vist_rt.errors import VistError
from vist_rt.net import DEFAULT_CONTROL, DEFAULT_FRAMES, DEFAULT_PUB, is_ip, is_loopback, split_tcp


def test_defaults_are_loopback_and_distinct() -> None:
    defaults = (DEFAULT_PUB, DEFAULT_CONTROL, DEFAULT_FRAMES)
    assert all(is_loopback(ep) for ep in defaults) and len({split_tcp(ep)[1] for ep in defaults}) == 3


def test_one_definition_of_the_default_endpoints() -> None:
    """Every module takes the defaults from vist_rt.net: no other module spells out a default endpoint."""
    root = Path(net.__file__).parent
    pattern = re.compile(r"""^\s*[A-Z_]+\s*=\s*["']tcp://127\.0\.0\.1:555\d["']""", re.M)
    defined = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if pattern.search(p.read_text("utf-8"))]
    assert defined == ["net.py"]


@pytest.mark.parametrize(
    ("endpoint", "want"),
    [
        ("tcp://127.0.0.1:5556", ("127.0.0.1", "5556")),
        ("tcp://[::1]:0", ("::1", "0")),
        ("tcp://*:*", ("*", "*")),
        ("tcp://localhost:65535", ("localhost", "65535")),
        ("tcp://eth0:1", ("eth0", "1")),
    ],
)
def test_split_tcp(endpoint: str, want: tuple[str, str]) -> None:
    assert split_tcp(endpoint) == want


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("tcp://:5556", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:70000", "port must be 0-65535"),
        ("tcp://127.0.0.1:-1", "port must be"),
        ("tcp://127.0.0.1:abc", "port must be"),
        ("ipc:///tmp/x", "expected tcp://HOST:PORT"),
    ],
)
def test_split_tcp_refuses(endpoint: str, match: str) -> None:
    with pytest.raises(VistError, match=match) as info:
        split_tcp(endpoint)
    assert "\n" not in str(info.value)


def test_is_ip() -> None:
    for host in ("127.0.0.1", "0.0.0.0", "192.168.1.10", "::1", "::", "fe80::1"):
        assert is_ip(host), host
    for host in ("localhost", "*", "eth0", "", "[::1]", "127.0.0.1:5556", "999.1.1.1"):
        assert not is_ip(host), host


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:5556",
        "tcp://127.0.0.2:1",
        "tcp://127.255.255.254:*",
        "tcp://localhost:*",
        "tcp://LOCALHOST:0",
        "tcp://[::1]:0",
        "ipc:///tmp/x",
        "ipc://@abstract",
        "inproc://vist",
    ],
)
def test_loopback(endpoint: str) -> None:
    assert is_loopback(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://0.0.0.0:*",
        "tcp://*:*",
        "tcp://*:0",
        "tcp://[::]:*",
        "tcp://eth0:*",
        "tcp://192.168.1.10:5556",
        "tcp://example.org:5556",
        "tcp://localhost.example.org:1",
        "pgm://eth0;239.192.1.1:5555",
        "udp://127.0.0.1:1",
    ],
)
def test_not_loopback(endpoint: str) -> None:
    assert not is_loopback(endpoint)


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("127.0.0.1:5556", "expected tcp://HOST:PORT or ipc://PATH"),
        ("", "expected tcp://HOST:PORT or ipc://PATH"),
        ("garbage", "expected tcp://HOST:PORT or ipc://PATH"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:99999", "port must be 0-65535"),
    ],
)
def test_loopback_check_refuses_garbage(endpoint: str, match: str) -> None:
    with pytest.raises(VistError, match=match) as info:
        is_loopback(endpoint)
    assert "\n" not in str(info.value)
