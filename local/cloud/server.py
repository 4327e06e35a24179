"""Starts every listener of one local cloud, writes the client environment, runs until told to stop.

Listeners, all on 127.0.0.1 (port 0 = chosen by the OS, the chosen ports are written out):
the CONNECT proxy, the TLS listener behind it (Key Vault by vault host, ARM for
management.azure.com, Microsoft Graph for graph.microsoft.com, Entra ID's token service for
login.microsoftonline.com, Event Grid custom topics by topic host, App Service's front end for
the sites' default host names), the managed identity endpoint and the admin endpoints. Azurite (the blob
endpoints of the storage accounts) starts when a client first connects to one. ``<data>/env`` is
written last, atomically, so its appearance means "ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from local.cloud import admin, arm, entra, eventgrid_topics, graph, identity, keyvault, site_frontend
from local.cloud.applications import ApplicationStore
from local.cloud.azurite import BlobService, BlobServiceError, azurite_package, node_binary
from local.cloud.certs import ensure_tls_files, server_context
from local.cloud.eventgrid_delivery import EventDelivery
from local.cloud.eventgrid_events import scan_for_expiry
from local.cloud.faults import FaultInjector
from local.cloud.kv_backup import BackupCodec
from local.cloud.kv_store import KeyVaultStore
from local.cloud.proxy import ConnectProxy, UpstreamUnavailable, host_policy
from local.cloud.requestlog import log_requests
from local.cloud.sites import SiteManager
from local.cloud.state import STATE, CloudState
from local.cloud.storage import StorageKeyStore
from local.cloud.tokens import TokenIssuer
from local.cloud.topology import Topology, load

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    proxy: int = 0
    tls: int = 0
    identity: int = 0
    admin: int = 0


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _persistent_secret(path: Path) -> str:
    """A value kept in the data dir, so a restarted cloud hands out the same client environment."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = secrets.token_urlsafe(24)
    _write_atomically(path, value)
    path.chmod(0o600)
    return value


async def _dispatch_tls(request: web.Request) -> web.StreamResponse:
    """One TLS listener serves every Azure host; the Host header says which service is meant."""
    host = request.host.split(":")[0].lower()
    if host == "management.azure.com":
        return await arm.handle(request)
    if host == "graph.microsoft.com":
        return await graph.handle(request)
    if host == entra.HOST:
        return await entra.handle(request)
    if request.app[STATE].topology.topic_by_host(host) is not None:
        return await eventgrid_topics.handle(request)
    if request.app[STATE].topology.site_by_host(host) is not None:
        return await site_frontend.handle(request)
    return await keyvault.handle(request)


async def _start_app(app: web.Application, sock: socket.socket, **site_args: Any) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, **site_args).start()
    return runner


async def scan_once(state: CloudState) -> list[dict[str, Any]]:
    """Raise due NearExpiry/Expired events and purge deleted secrets past their retention."""
    due = scan_for_expiry(
        state.store, dict(state.topology.vaults), state.events.settings.near_expiry_window_seconds
    )
    for vault_name, secret_name in state.store.purge_due(int(time.time())):
        logger.info("purged deleted secret %s in %s (retention over)", secret_name, vault_name)
    for vault, event in due:
        state.publish(vault, event)
    return [event for _, event in due]


async def _scan_loop(state: CloudState, wake: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.wait_for(wake.wait(), timeout=state.events.settings.scan_interval_seconds)
        except TimeoutError:
            pass
        else:
            # The interval changed: start waiting anew with it (the admin "scan" runs one at once).
            wake.clear()
            continue
        try:
            await scan_once(state)
        except Exception:
            logger.exception("expiry scan failed")


async def serve(topology_path: Path, data_dir: Path, ports: Ports, stop: asyncio.Event) -> None:
    """Run the local cloud until ``stop`` is set.

    Raises:
        TopologyError: the topology file is invalid.
        AzuriteNotInstalled: the topology has storage accounts but Node.js or Azurite is missing.
        OSError: a requested port is taken.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env_file = data_dir / "env"
    env_file.unlink(missing_ok=True)  # a stale file would tell a waiting launcher we are ready
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    topology: Topology = load(topology_path, env)
    tls = ensure_tls_files(
        data_dir, tuple(sorted({"*." + t.host.split(".", 1)[1] for t in topology.topics.values()}))
    )
    storage = StorageKeyStore(data_dir / "storage-keys.json", topology.storage_accounts)
    # Found now, so a missing Azurite is reported at start ("run make setup"), not at first use.
    azurite = (node_binary(), azurite_package()) if topology.storage_accounts else None

    proxy_sock, tls_sock = _bind(ports.proxy), _bind(ports.tls)
    identity_sock, admin_sock = _bind(ports.identity), _bind(ports.admin)
    port_of = {
        name: s.getsockname()[1]
        for name, s in (
            ("proxy", proxy_sock),
            ("tls", tls_sock),
            ("identity", identity_sock),
            ("admin", admin_sock),
        )
    }
    admin_url = f"http://127.0.0.1:{port_of['admin']}"
    identity_header = _persistent_secret(data_dir / "identity-header")
    client_identity = topology.identities[topology.client_identity]
    shared_env = {
        "HTTPS_PROXY": f"http://127.0.0.1:{port_of['proxy']}",
        "NO_PROXY": "localhost,127.0.0.1",
        "REQUESTS_CA_BUNDLE": str(tls.ca_cert),
        "SSL_CERT_FILE": str(tls.ca_cert),
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{port_of['identity']}/msi/token",
    }
    client_env = {
        **shared_env,
        "IDENTITY_HEADER": identity_header,
        "AZURE_CLIENT_ID": client_identity.client_id,
        "LOCAL_CLOUD_ADMIN_URL": admin_url,
    }

    store = KeyVaultStore(data_dir / "vaults.sqlite3")
    events = EventDelivery(data_dir, topology.eventgrid, admin_url)
    for subscription in topology.event_subscriptions:
        events.add_lazy(subscription)
    site_manager = SiteManager(topology.sites, topology.identities, shared_env, data_dir)
    state = CloudState(
        topology=topology,
        data_dir=data_dir,
        issuer=TokenIssuer(data_dir, topology.tenant_id),
        store=store,
        backups=BackupCodec(data_dir),
        faults=FaultInjector(),
        events=events,
        sites=site_manager,
        client_identity_header=identity_header,
        applications=ApplicationStore(data_dir, topology),
        entra=topology.entra,
        env=env,
        storage=storage,
    )
    site_manager.read_secret = state.read_referenced_secret

    tls_app = web.Application(middlewares=[log_requests], client_max_size=1024 * 1024)
    tls_app.router.add_route("*", "/{tail:.*}", _dispatch_tls)
    identity_app = identity.make_app()
    identity_app.middlewares.append(log_requests)
    admin_app = admin.make_app()
    admin_app.middlewares.append(log_requests)
    wake = asyncio.Event()

    async def scan_now() -> list[dict[str, Any]]:
        return await scan_once(state)

    admin_app[admin.SCAN_NOW] = scan_now
    admin_app[admin.WAKE_SCANNER] = wake.set
    for app in (tls_app, identity_app, admin_app):
        app[STATE] = state

    runners: list[web.AppRunner] = []
    proxy_server: asyncio.Server | None = None
    blob: BlobService | None = None

    async def blob_upstream() -> int:
        if blob is None:
            raise UpstreamUnavailable("the topology has no storage accounts")
        try:
            return await blob.ensure_running()
        except BlobServiceError as exc:
            raise UpstreamUnavailable(str(exc)) from exc

    proxy = ConnectProxy(
        host_policy(
            frozenset(v.host for v in topology.vaults.values()),
            frozenset(a.blob_host for a in topology.storage_accounts.values()),
            frozenset(t.host for t in topology.topics.values()),
            frozenset(s.host for s in topology.sites.values()),
        ),
        port_of["tls"],
        blob_upstream,
    )
    if azurite is not None:
        blob = BlobService(
            node=azurite[0],
            package=azurite[1],
            tls=tls,
            data_dir=data_dir,
            accounts=storage.azurite_accounts,
            shared_key_disabled=[
                a.name for a in topology.storage_accounts.values() if not a.allow_shared_key_access
            ],
            cut_tunnels=proxy.close_blob_tunnels,
        )
        state.blob = blob
    scanner: asyncio.Task[None] | None = None
    try:
        await events.start()
        runners.append(await _start_app(tls_app, tls_sock, ssl_context=server_context(tls)))
        runners.append(await _start_app(identity_app, identity_sock))
        runners.append(await _start_app(admin_app, admin_sock))
        proxy_server = await asyncio.start_server(proxy.handle, sock=proxy_sock)
        await site_manager.start()
        scanner = asyncio.ensure_future(_scan_loop(state, wake))

        state.info = {
            "pid": os.getpid(),
            "ports": port_of,
            "admin_url": admin_url,
            "env_file": str(env_file),
            "ca_bundle": str(tls.ca_cert),
            "client_env": client_env,
            "vaults": {v.name: {"url": v.url, "arm_id": v.arm_id} for v in topology.vaults.values()},
            "sites": {
                rt.site.name: {
                    "arm_id": rt.site.arm_id,
                    "port": rt.port,
                    "url": f"http://127.0.0.1:{rt.port}",
                }
                for rt in site_manager.runtimes.values()
            },
            "identities": {
                i.name: {"client_id": i.client_id, "principal_id": i.principal_id}
                for i in topology.identities.values()
            },
            "applications": {
                a.name: {
                    "app_id": a.app_id,
                    "object_id": a.object_id,
                    "service_principal_id": a.service_principal_id,
                }
                for a in topology.applications.values()
            },
            "storage_accounts": {
                a.name: {
                    "arm_id": a.arm_id,
                    "blob_endpoint": a.blob_endpoint,
                    "allow_shared_key_access": a.allow_shared_key_access,
                }
                for a in topology.storage_accounts.values()
            },
            "eventgrid_topics": {
                t.name: {"arm_id": t.arm_id, "endpoint": t.endpoint} for t in topology.topics.values()
            },
            "azurite": None if blob is None else {"log": str(blob.log_path), "location": str(blob.location)},
            "tenant_id": topology.tenant_id,
        }
        _write_atomically(data_dir / "cloud.json", json.dumps(state.info, indent=2))
        _write_atomically(env_file, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in client_env.items()))
        logger.info(
            "local cloud ready: proxy %s, admin %s, env %s", shared_env["HTTPS_PROXY"], admin_url, env_file
        )
        await stop.wait()
    finally:
        logger.info("local cloud stopping")
        if scanner is not None:
            scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanner
        await site_manager.stop()
        await events.stop()
        if proxy_server is not None:
            proxy_server.close()
            proxy.close_all()
        if blob is not None:
            await blob.stop()
        for runner in reversed(runners):
            await runner.cleanup()
        store.close()
        env_file.unlink(missing_ok=True)
