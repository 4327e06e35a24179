"""App Service sites as real local processes: start, stop, restart, and whether they run.

Each site runs its topology command with the client environment (proxy, CA bundle, identity
endpoint), its own ``IDENTITY_HEADER`` (so it can get tokens only for its own identities), its
identity's ``AZURE_CLIENT_ID``, a ``PORT`` kept across restarts, and the site's extra variables.
A site process dies with the local cloud (Linux parent-death signal), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from local.cloud.kv_references import ReferenceCache, SecretReader
from local.cloud.topology import Identity, Site
from local.ports import free_port

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when its parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class SiteRuntime:
    site: Site
    port: int
    identity_header: str
    log_path: Path
    desired: str  # "Running" or "Stopped": what the last start/stop asked for
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Its app settings (the topology's ``env`` until ARM replaces them) and the Key Vault
    # references among them, resolved and cached as App Service does (kv_references.py).
    settings: dict[str, str] = field(default_factory=dict)
    references: ReferenceCache = field(default_factory=ReferenceCache)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.alive and self.process is not None else None


class SiteManager:
    def __init__(
        self,
        sites: Mapping[str, Site],
        identities: Mapping[str, Identity],
        client_env: Mapping[str, str],
        data_dir: Path,
    ) -> None:
        self._identities = identities
        self._client_env = dict(client_env)
        log_dir = data_dir / "sites"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.runtimes: dict[str, SiteRuntime] = {
            key: SiteRuntime(
                site=site,
                port=free_port(),
                identity_header=secrets.token_urlsafe(24),
                log_path=log_dir / f"{site.name}.log",
                desired=site.initial_state,
                settings=dict(site.env),
            )
            for key, site in sites.items()
        }
        self._session: aiohttp.ClientSession | None = None
        # Reads a referenced secret as the site (set by the server, which holds the vaults).
        self.read_secret: SecretReader = lambda _reference, _identities: None

    def identity_headers(self) -> dict[str, tuple[str, ...]]:
        """IDENTITY_HEADER value -> names of the identities that site may get tokens for."""
        return {rt.identity_header: rt.site.identities for rt in self.runtimes.values()}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for runtime in self.runtimes.values():
            if runtime.desired == "Running":
                async with runtime.lock:
                    await self._spawn(runtime)

    async def stop(self) -> None:
        for runtime in self.runtimes.values():
            async with runtime.lock:
                await self._terminate(runtime)
        if self._session is not None:
            await self._session.close()

    def _environment(self, runtime: SiteRuntime) -> dict[str, str]:
        site = runtime.site
        env = {**os.environ, **self._client_env}
        env["IDENTITY_HEADER"] = runtime.identity_header
        env.pop("AZURE_CLIENT_ID", None)
        if site.identities:
            env["AZURE_CLIENT_ID"] = self._identities[site.identities[0]].client_id
        env["PORT"] = str(runtime.port)
        # The variables App Service itself sets, so a site can tell who it is.
        env["WEBSITE_SITE_NAME"] = site.name
        env["WEBSITE_HOSTNAME"] = site.host
        env["WEBSITE_RESOURCE_GROUP"] = site.resource_group
        env["WEBSITE_OWNER_NAME"] = f"{site.subscription_id}+{site.resource_group}-{site.location}webspace"
        env.update(runtime.references.resolve(runtime.settings, site.identities, self.read_secret))
        return env

    async def _spawn(self, runtime: SiteRuntime) -> None:
        if runtime.alive:
            return
        log = runtime.log_path.open("ab")
        try:
            runtime.process = await asyncio.create_subprocess_exec(
                *runtime.site.command,
                env=self._environment(runtime),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group, so stop reaches its children too
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            logger.warning("site %s failed to start: %s", runtime.site.name, exc)
            runtime.process = None
            return
        finally:
            log.close()
        runtime.started_at = time.time()
        logger.info("site %s started pid=%s port=%s", runtime.site.name, runtime.process.pid, runtime.port)

    async def _terminate(self, runtime: SiteRuntime) -> None:
        process = runtime.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        logger.info("site %s stopped (exit %s)", runtime.site.name, process.returncode)

    async def healthy(self, runtime: SiteRuntime) -> bool:
        """Alive and, when the site has a health check path, that path answers 200."""
        if not runtime.alive:
            return False
        path = runtime.site.health_check_path
        if not path:
            return True
        assert self._session is not None
        try:
            async with self._session.get(
                f"http://127.0.0.1:{runtime.port}{path}", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session the health checks and the sites' front end (site_frontend.py) share."""
        assert self._session is not None, "the site manager has not started"
        return self._session

    @staticmethod
    def state(runtime: SiteRuntime) -> str:
        """What ARM reports as ``properties.state``: the state the site is configured to be in, as
        Azure reports it, whether or not the app answers (its front end says that)."""
        return runtime.desired

    async def answers(self, runtime: SiteRuntime) -> bool:
        """Alive and answering HTTP at all (any status): the app has started listening."""
        if not runtime.alive:
            return False
        try:
            async with self.session.get(
                f"http://127.0.0.1:{runtime.port}/", timeout=aiohttp.ClientTimeout(total=2)
            ):
                return True
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def wait_started(self, runtime: SiteRuntime, timeout: float) -> bool:
        """Wait until the restarted app listens (what a synchronous restart waits for: the app
        restarted, not its health check passing), or its process died, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.answers(runtime):
                return True
            if not runtime.alive:
                return False
            await asyncio.sleep(0.1)
        return False

    async def do_start(self, runtime: SiteRuntime) -> None:
        async with runtime.lock:
            runtime.desired = "Running"
            await self._spawn(runtime)

    async def do_stop(self, runtime: SiteRuntime) -> None:
        async with runtime.lock:
            runtime.desired = "Stopped"
            await self._terminate(runtime)

    async def update_settings(self, runtime: SiteRuntime, settings: Mapping[str, str]) -> None:
        """Replace the app settings, as ARM's PUT .../config/appsettings does: the site restarts
        (if it runs) and fetches every Key Vault reference afresh."""
        async with runtime.lock:
            runtime.settings = dict(settings)
            runtime.references.clear()
            if runtime.desired == "Running":
                await self._terminate(runtime)
                runtime.restarts += 1
                await self._spawn(runtime)

    async def do_restart(self, runtime: SiteRuntime) -> None:
        async with runtime.lock:
            runtime.desired = "Running"
            await self._terminate(runtime)
            runtime.restarts += 1
            await self._spawn(runtime)
