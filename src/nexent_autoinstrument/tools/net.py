"""Ports and reachability, for the demo, the doctor and the tests."""

from __future__ import annotations

import socket

from ..net import accepts_connections as reachable  # (what the tools and the tests ask)

__all__ = ["DOCKER_BRIDGE", "container_reachable_hosts", "free_port", "interface_address", "reachable"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The interface of Docker's default bridge on Linux: ``host.docker.internal:host-gateway`` is its address.
DOCKER_BRIDGE = "docker0"


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name``, if it has one (Linux)."""
    try:
        import fcntl
    except ImportError:  # (not a POSIX system)
        return None
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def container_reachable_hosts(bridge: str = DOCKER_BRIDGE) -> str:
    """What a service should listen on for the monitoring stack's Prometheus to scrape it: loopback,
    and on Linux the Docker bridge's address, where ``host.docker.internal`` leads from a container
    (Docker Desktop forwards it to loopback). A comma-separated ``HOST`` for the example service."""
    address = interface_address(bridge)
    return "127.0.0.1" if address is None or address.startswith("127.") else f"127.0.0.1,{address}"
