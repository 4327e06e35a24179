"""Assembling the host: configuration, the app's functions, the store, the engine and the HTTP routes."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from local.host.admin_api import AdminApi
from local.host.app_config import load_local_settings, read_host_json
from local.host.auth import Authorizer, load_or_create_keys
from local.host.client_binding import RPC_PATH, WEBHOOK_PATH, ClientUrls
from local.host.clock import HostClock
from local.host.durable_http_api import DurableHttpApi
from local.host.easy_auth import SIGNAL, EasyAuth, load_principals
from local.host.engine import DurableEngine
from local.host.event_grid import EventGridWebhook
from local.host.function_index import load_app
from local.host.http_triggers import HttpTriggerRouter
from local.host.instance_ops import InstanceOperations
from local.host.invoker import Invoker
from local.host.replay_workers import ReplayWorkers, worker_process_count
from local.host.store import Store
from local.host.timer_triggers import TimerTriggers

logger = logging.getLogger(__name__)

DATABASE_FILE = "durable.sqlite"
# The Functions host's default limit for HTTP request bodies (100 MB).
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class HostOptions:
    script_root: Path
    data_dir: Path
    port: int = 7071
    auth_keys: bool = False
    time_scale: float = 1.0
    max_activities: int | None = None
    # Worker processes replaying orchestrators; None: FUNCTIONS_WORKER_PROCESS_COUNT, else 1.
    workers: int | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # A principals file: App Service authentication in front of the app (local/host/easy_auth.py).
    easy_auth: Path | None = None
    # The local cloud's token signing key: its tokens for the hub's audience sign callers in too.
    easy_auth_token_key: Path | None = None


class LocalHost:
    """One running host; ``start()`` returns once it listens, ``stop()`` shuts everything down."""

    def __init__(self, options: HostOptions) -> None:
        self.options = options
        self.base_url = f"http://127.0.0.1:{options.port}"
        self._runner: web.AppRunner | None = None
        self._engine: DurableEngine | None = None
        self._timers: TimerTriggers | None = None
        self._store: Store | None = None
        self._sync_executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Load and index the app, recover the store, then listen; raises on any configuration error."""
        options = self.options
        script_root = options.script_root.resolve()
        added = load_local_settings(script_root, os.environ)
        if added:
            logger.info("loaded %d settings from local.settings.json", len(added))
        host_json = read_host_json(script_root)
        options.data_dir.mkdir(parents=True, exist_ok=True)
        easy_auth = self._easy_auth()
        index = load_app(script_root)
        logger.info("indexed %s", index.summary())

        keys = load_or_create_keys(options.data_dir) if options.auth_keys else None
        authorizer = Authorizer(keys)
        urls = ClientUrls(
            origin=self.base_url,
            hub_name=host_json.hub_name,
            system_key=keys.durabletask_extension if keys else None,
        )
        clock = HostClock(time_scale=options.time_scale)
        self._store = store = Store(options.data_dir / DATABASE_FILE)
        self._sync_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="function")
        invoker = Invoker(sync_executor=self._sync_executor, client_binding=urls.binding_json)
        max_activities = options.max_activities or host_json.max_concurrent_activities
        worker_count = worker_process_count(os.environ, options.workers)
        self._engine = engine = DurableEngine(
            store,
            index,
            clock,
            invoker=invoker,
            max_activities=max_activities,
            workers=ReplayWorkers(script_root, worker_count) if worker_count > 1 else None,
            versioning=host_json.versioning,
        )
        operations = InstanceOperations(store, index, clock, engine, versioning=host_json.versioning)
        self._timers = timers = TimerTriggers(index.timers, invoker=invoker, clock=clock, environ=os.environ)
        durable_api = DurableHttpApi(operations, urls, clock, authorizer)
        http_router = HttpTriggerRouter(index.http, invoker=invoker, authorizer=authorizer)
        event_grid = EventGridWebhook(index.event_grid, invoker=invoker, authorizer=authorizer)
        admin = AdminApi(
            index=index,
            clock=clock,
            timers=timers,
            invoker=invoker,
            authorizer=authorizer,
            hub_name=host_json.hub_name,
        )

        app = web.Application(
            client_max_size=options.max_body_bytes,
            middlewares=[easy_auth.middleware] if easy_auth else [],
        )
        if easy_auth:
            app.add_routes(easy_auth.routes())
        app.add_routes(admin.routes())
        app.router.add_route("*", "/runtime/webhooks/eventgrid", event_grid.handle)
        app.router.add_route("*", WEBHOOK_PATH + "/{tail:.*}", durable_api.handle_webhook)
        app.router.add_route("*", RPC_PATH + "{tail:.*}", durable_api.handle_rpc)
        prefix = host_json.route_prefix
        app.router.add_route("*", (f"/{prefix}/" if prefix else "/") + "{tail:.*}", http_router.handle)

        await engine.start()
        # No access log: query strings may carry keys and reasons, bodies never get logged at all.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", options.port, reuse_address=True)
        await site.start()
        await timers.start()
        logger.info(
            "host listening on %s (task hub %s, orchestration versions: %s, %d worker processes, "
            "%d activity slots, time scale %g, auth %s, easy auth %s)",
            self.base_url,
            host_json.hub_name,
            host_json.versioning.describe(),
            worker_count,
            max_activities,
            options.time_scale,
            "keys" if keys else "none",
            f"{len(easy_auth.principals)} principals" if easy_auth else "off",
        )

    def _easy_auth(self) -> EasyAuth | None:
        """App Service authentication in front of the app, and its signal to the app, or neither.

        The signal is the platform's to give: one left in local.settings.json or the environment
        without the module in front would make the app trust headers any caller can write."""
        if self.options.easy_auth is None:
            if os.environ.pop(SIGNAL, None) is not None:
                logger.warning("%s removed: without --easy-auth nothing authenticates callers", SIGNAL)
            return None
        easy_auth = EasyAuth(
            load_principals(self.options.easy_auth),
            self.options.data_dir,
            token_key=self.options.easy_auth_token_key,
        )
        os.environ[SIGNAL] = "True"
        return easy_auth

    async def stop(self) -> None:
        if self._timers is not None:
            await self._timers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._engine is not None:
            await self._engine.stop()
        if self._sync_executor is not None:
            self._sync_executor.shutdown(wait=False, cancel_futures=True)
        await _close_durable_client_session()
        if self._store is not None:
            self._store.checkpoint()
            self._store.close()
        logger.info("host stopped")


async def _close_durable_client_session() -> None:
    """The durable client keeps one module-level aiohttp session; close it so shutdown is quiet."""
    try:
        from azure.durable_functions.models.utils import http_utils
    except ImportError:
        return
    close = getattr(http_utils, "_close_session", None)
    if close is not None:
        await close()
