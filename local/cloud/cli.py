"""``python -m local.cloud [--topology FILE] [--data DIR]``: run the local cloud in the foreground.

It writes ``<data>/env`` (``export NAME=value`` lines a shell can source) once every endpoint
answers, and stops cleanly on Ctrl-C or SIGTERM, taking its site processes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from local.cloud.azurite import AzuriteNotInstalled
from local.cloud.server import Ports, serve
from local.cloud.topology import TopologyError

DEFAULT_TOPOLOGY = Path(__file__).parent / "topologies" / "default.json"
DEFAULT_DATA = Path(".data") / "cloud"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.cloud", description=__doc__.split("\n")[0])
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY, help="topology JSON file")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="data dir (CA, vault state, env file)"
    )
    parser.add_argument("--proxy-port", type=int, default=0, help="HTTPS proxy port (0: any free port)")
    parser.add_argument("--tls-port", type=int, default=0, help="TLS listener port behind the proxy")
    parser.add_argument("--identity-port", type=int, default=0, help="managed identity endpoint port")
    parser.add_argument("--admin-port", type=int, default=0, help="admin endpoint port")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ports = Ports(
        proxy=args.proxy_port, tls=args.tls_port, identity=args.identity_port, admin=args.admin_port
    )
    await serve(args.topology, args.data.resolve(), ports, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's own access log would repeat our request lines, with less in them.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        asyncio.run(_run(args))
    except TopologyError as exc:
        print(f"invalid topology: {exc}", file=sys.stderr)
        return 2
    except (OSError, AzuriteNotInstalled) as exc:
        print(f"cannot start the local cloud: {exc}", file=sys.stderr)
        return 1
    return 0
