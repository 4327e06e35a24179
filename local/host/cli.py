"""``python -m local.host``: run the local Functions host in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from local.host.app_config import ConfigError
from local.host.function_index import AppLoadError
from local.host.server import DEFAULT_MAX_BODY_BYTES, HostOptions, LocalHost

logger = logging.getLogger("local.host")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535 (the port goes into client URLs)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def parse_args(argv: Sequence[str] | None = None) -> HostOptions:
    parser = argparse.ArgumentParser(
        prog="python -m local.host",
        description="Run a Python v2 Function App locally: HTTP, Event Grid and timer triggers, "
        "and Durable Functions through the real azure-functions-durable SDK.",
    )
    parser.add_argument(
        "--script-root", type=Path, default=REPO_ROOT, help="folder with function_app.py and host.json"
    )
    parser.add_argument(
        "--port", type=_port, default=7071, help="port on 127.0.0.1 (default 7071, as func start)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="state folder (default <script-root>/.data/host)"
    )
    parser.add_argument(
        "--auth", choices=["none", "keys"], default="none", help="enforce function keys (keys)"
    )
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="host clock speed: 3600 makes one real second an hour of orchestration time",
    )
    parser.add_argument(
        "--max-activities",
        type=_positive_int,
        default=None,
        help="concurrent activities (default: host.json maxConcurrentActivityFunctions)",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes replaying orchestrations of different instances in parallel, 1 to 10 "
        "(default: FUNCTIONS_WORKER_PROCESS_COUNT, else 1)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (413 above it)",
    )
    parser.add_argument(
        "--easy-auth",
        type=Path,
        default=None,
        metavar="PRINCIPALS_JSON",
        help="App Service authentication in front of the app, signing in the principals of this file "
        "(see local/host/easy_auth.py)",
    )
    parser.add_argument(
        "--easy-auth-token-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --easy-auth: the local cloud's token-signing.key; its tokens for "
        "api://keyvault-rotation-hub sign callers in (Authorization: Bearer)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    script_root = args.script_root.resolve()
    return HostOptions(
        script_root=script_root,
        data_dir=(args.data or script_root / ".data" / "host").resolve(),
        port=args.port,
        auth_keys=args.auth == "keys",
        time_scale=args.time_scale,
        max_activities=args.max_activities,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        easy_auth=args.easy_auth.resolve() if args.easy_auth else None,
        easy_auth_token_key=args.easy_auth_token_key.resolve() if args.easy_auth_token_key else None,
    )


async def serve(options: HostOptions) -> None:
    host = LocalHost(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await host.start()
        await stop.wait()
        logger.info("stopping on signal")
    finally:
        await host.stop()


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        asyncio.run(serve(options))
    except (AppLoadError, ConfigError, ValueError, OSError) as exc:
        logger.error("host failed to start: %s", exc)
        return 1
    return 0
