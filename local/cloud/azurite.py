"""Azurite, Microsoft's storage emulator, as the blob service of every storage account of the topology.

``scripts/bootstrap.sh`` (``make setup``) installs the pinned version with npm into ``.venv/node``;
``azurite_package``/``node_binary`` find it (one place, one clear error when it is missing). One
Azurite blob service serves every account: HTTPS with the cloud's server certificate (which names
``*.blob.core.windows.net``) on 127.0.0.1 and a port of its own, data in ``<data>/azurite``, the
accounts and keys in ``AZURITE_ACCOUNTS``. The proxy tunnels ``CONNECT <account>.blob.core.windows.net``
to it; Azurite takes the account from the host name (its "production-style URL"), so clients use the
real endpoints, and checks Shared Key signatures itself.

It starts when first needed (the first tunnel to a blob host), so a cloud whose clients never touch
blobs never pays for it. Azurite reads its accounts only at start, so a regenerated key restarts it
(``reload``); the restart holds new tunnels until the new process listens, and ``reload`` returns
only then, so a client that uses the new key right after regenerateKey finds it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from local.cloud.certs import TlsFiles
from local.cloud.sites import die_with_parent
from local.ports import free_port

logger = logging.getLogger(__name__)

AZURITE_VERSION = (
    "3.35.0"  # the newest whose engines.node accepts Node.js 20; scripts/bootstrap.sh installs it
)
NODE_PREFIX = Path(__file__).resolve().parents[2] / ".venv" / "node"  # LOCAL_CLOUD_NODE_PREFIX overrides
LAUNCHER = Path(__file__).with_name("azurite_blob.js")
READY_LINE = b"successfully listens on"
START_TIMEOUT = 30.0
STOP_GRACE = 2.0  # then the proxy cuts the tunnels still open (idle keep-alive connections)
STOP_TIMEOUT = 5.0  # then SIGKILL


class AzuriteNotInstalled(RuntimeError):
    """Node.js or the pinned Azurite is missing; the message says to run ``make setup``."""


class BlobServiceError(RuntimeError):
    """Azurite did not start; the message has the end of its log."""


def azurite_package(prefix: Path | None = None) -> Path:
    """The directory of the pinned Azurite package under ``prefix`` (default: ``$LOCAL_CLOUD_NODE_PREFIX``
    or ``.venv/node``, where ``make setup`` installs it).

    Raises:
        AzuriteNotInstalled: not installed there, or another version.
    """
    if prefix is None:
        prefix = Path(os.environ.get("LOCAL_CLOUD_NODE_PREFIX") or NODE_PREFIX)
    package = prefix / "node_modules" / "azurite"
    try:
        version = json.loads((package / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        version = None
    if version != AZURITE_VERSION:
        found = f"found {version}" if version else "not installed"
        raise AzuriteNotInstalled(
            f"the local cloud's blob service needs Azurite {AZURITE_VERSION} in {prefix} ({found}): "
            "run make setup"
        )
    return package


def node_binary() -> str:
    """The ``node`` executable on PATH.

    Raises:
        AzuriteNotInstalled: no node on PATH.
    """
    node = shutil.which("node")
    if node is None:
        raise AzuriteNotInstalled(
            "the local cloud's blob service needs Node.js (node) on PATH: run make setup"
        )
    return node


def blob_command(node: str, tls: TlsFiles, location: Path, port: int) -> list[str]:
    """The command line of the Azurite blob service (through the launcher, see azurite_blob.js)."""
    return [
        node,
        str(LAUNCHER),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--cert",
        str(tls.server_cert),
        "--key",
        str(tls.server_key),
        "--location",
        str(location),
        "--disableTelemetry",  # else it sends usage data to applicationinsights.azure.com
        "--skipApiVersionCheck",  # the SDK sends x-ms-version values newer than Azurite knows
        "--silent",  # no access log: a SAS in a URL is a credential
    ]


class BlobService:
    """One Azurite process for every storage account; started on first use, restarted on new keys."""

    def __init__(
        self,
        *,
        node: str,
        package: Path,
        tls: TlsFiles,
        data_dir: Path,
        accounts: Callable[[], str],
        shared_key_disabled: Iterable[str],
        cut_tunnels: Callable[[], None] = lambda: None,
    ) -> None:
        """``accounts()`` gives ``AZURITE_ACCOUNTS`` at each start; ``cut_tunnels()`` ends the proxy's
        tunnels to Azurite (those a stopping Azurite waits for)."""
        self._node = node
        self._package = package
        self._tls = tls
        self.location = data_dir / "azurite"
        self.log_path = data_dir / "azurite.log"
        self._accounts = accounts
        self._disabled = ",".join(sorted(shared_key_disabled))
        self._cut_tunnels = cut_tunnels
        self._lock = asyncio.Lock()
        self._process: asyncio.subprocess.Process | None = None
        self._stopped = False
        self.port = 0
        self.starts = 0
        self.last_start_seconds: float | None = None
        self.last_restart_seconds: float | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.alive and self._process is not None else None

    async def ensure_running(self) -> int:
        """The port Azurite listens on; starts it (or waits for a restart) first when needed.

        Raises:
            BlobServiceError: it did not start.
        """
        if self.alive and not self._lock.locked():
            return self.port
        async with self._lock:
            if self._stopped:
                raise BlobServiceError("the local cloud is stopping")
            if not self.alive:
                await self._start()
            return self.port

    async def reload(self) -> None:
        """The keys changed: restart a running Azurite and return once the new one listens.

        An Azurite that never started (nobody used a blob endpoint yet) is left alone: it starts
        with the current keys when first needed.

        Raises:
            BlobServiceError: it did not start again.
        """
        async with self._lock:
            if self._process is None or self._stopped:
                return
            started = time.monotonic()
            await self._terminate()
            await self._start()
            self.last_restart_seconds = time.monotonic() - started
            logger.info("azurite restarted with new keys in %.2fs", self.last_restart_seconds)

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            await self._terminate()

    def _environment(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TZ") if name in os.environ}
        env["AZURITE_ACCOUNTS"] = self._accounts()
        env["LOCAL_CLOUD_AZURITE_PACKAGE"] = str(self._package)
        env["LOCAL_CLOUD_SHARED_KEY_DISABLED"] = self._disabled
        return env

    async def _start(self) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        last_error: BlobServiceError | None = None
        for _ in range(3):  # a port taken since it was chosen: try another
            if not self.port or last_error is not None:
                self.port = free_port()
            try:
                await self._spawn()
                return
            except BlobServiceError as exc:
                last_error = exc
                logger.warning("azurite did not start on port %s: %s", self.port, exc)
        assert last_error is not None
        raise last_error

    async def _spawn(self) -> None:
        started = time.monotonic()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *blob_command(self._node, self._tls, self.location, self.port),
                env=self._environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,  # it must not outlive a killed cloud
            )
        process = self._process
        deadline = started + START_TIMEOUT
        while True:
            output = self._log_since(offset)
            if READY_LINE in output:
                break
            if process.returncode is not None:
                raise BlobServiceError(f"azurite exited with {process.returncode}: {self._tail(output)}")
            if time.monotonic() > deadline:
                await self._terminate()
                raise BlobServiceError(
                    f"azurite did not listen within {START_TIMEOUT:.0f}s: {self._tail(output)}"
                )
            await asyncio.sleep(0.02)
        self.starts += 1
        self.last_start_seconds = time.monotonic() - started
        logger.info(
            "azurite blob service listening on 127.0.0.1:%s (pid %s, %.2fs)",
            self.port,
            process.pid,
            self.last_start_seconds,
        )

    def _log_since(self, offset: int) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return b""

    @staticmethod
    def _tail(output: bytes) -> str:
        lines = output.decode("utf-8", errors="replace").strip().splitlines()
        return " | ".join(lines[-5:]) or "(no output)"

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        # SIGTERM: Azurite stops accepting, finishes requests in flight, saves its metadata and
        # exits once every connection is closed; idle keep-alive tunnels would keep it waiting.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_GRACE)
        except TimeoutError:
            self._cut_tunnels()
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        logger.info("azurite stopped (exit %s)", process.returncode)
