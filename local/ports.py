"""Free TCP ports on 127.0.0.1, for the local servers the tools and tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).

    Another process may take it before the caller binds it; servers that start on it report
    the failure, and their launchers pick another port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
