"""Free TCP ports on 127.0.0.1, for the local servers the tools and tests start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports below this are left to well-known services.
_LOWEST = 15000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range.

    Servers here restart on the port they had (a host restarted mid-test, a database server
    after a kill). A port from the ephemeral range can meanwhile become the source port of
    any outgoing connection (a client of the database, of the local cloud), and then the
    restart cannot bind it; ports below that range are never handed out that way. Another
    process may still take the port before the caller binds it; servers that start on it
    report the failure, and their launchers pick another port.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(_LOWEST, low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        if _bindable(port):
            return port
    return _kernel_chosen()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _kernel_chosen() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
