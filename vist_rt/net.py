"""ZeroMQ endpoints: the default ones and the loopback check guarding every bind."""

from __future__ import annotations

import ipaddress

from vist_rt.errors import VistError

DEFAULT_PUB = "tcp://127.0.0.1:5556"  # rates and meta (PUB)
DEFAULT_CONTROL = "tcp://127.0.0.1:5557"  # control requests (REP)
DEFAULT_FRAMES = "tcp://127.0.0.1:5558"  # a rig's frames (PULL)
LOCAL_SCHEMES = ("ipc", "inproc")


def split_tcp(endpoint: str) -> tuple[str, str]:
    """`tcp://host:port` -> (host, port) with IPv6 brackets removed; VistError if it is not of that form."""
    if not endpoint.startswith("tcp://"):
        raise VistError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT (PORT a number, 0 or *)")
    rest = endpoint[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise VistError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT (PORT a number, 0 or *)")
    if port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
        raise VistError(f"bad endpoint {endpoint!r}: port must be 0-65535 or *")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 address (no brackets), False for a host or interface name, '*' or ''."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(endpoint: str) -> bool:
    """True for ipc:// and inproc:// endpoints and tcp:// on 127.0.0.0/8, ::1 or localhost.

    False for other tcp:// hosts (a wildcard, an interface or host name) and other schemes; VistError for a
    string that is no endpoint at all."""
    scheme, sep, _ = endpoint.partition("://")
    if not sep:
        raise VistError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT or ipc://PATH")
    if scheme in LOCAL_SCHEMES:
        return True
    if scheme != "tcp":
        return False
    host, _ = split_tcp(endpoint)
    if host.lower() == "localhost":
        return True
    return is_ip(host) and ipaddress.ip_address(host).is_loopback
