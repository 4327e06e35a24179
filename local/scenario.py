"""The demo's world: which secrets exist, who consumes them, and how to watch rotations.

Shared by ``make demo`` (local/demo.py), ``make up`` (local/up.py), the end-to-end tests and the
benchmarks, so they all exercise the same thing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local.stack import (
    APPLICATION_SECRET,
    BLOB_CONSUMER_SECRET,
    BLOB_CONSUMER_SITE,
    CONSUMER_DATABASE,
    CONSUMER_LOGIN,
    CONSUMER_SECRET,
    CONSUMER_SITE,
    MYSQL,
    POSTGRESQL,
    SP_CONSUMER_SITE,
    LocalStack,
    Seeded,
)
from rotation import metadata
from rotation.site_health import http_status

ENDED = ("Completed", "Failed", "Terminated")


@dataclass(frozen=True)
class DemoSecrets:
    consumer: Seeded  # read by the consumer app; rotation restarts it
    approved: Seeded  # rotation-approval: required, changed by an admin login kept in the vault
    plain: Seeded  # in the second vault, changes itself
    mysql: Seeded  # a MySQL account (MariaDB here), changes itself
    application: Seeded  # an Entra application's client secret, read by sp-consumer-app
    alternating: Seeded  # two PostgreSQL logins taking turns, the value a libpq connection string
    storage: Seeded  # a storage account's key, as a connection string read by blob-consumer-app

    def all(self) -> tuple[Seeded, ...]:
        return (
            self.consumer,
            self.approved,
            self.plain,
            self.mysql,
            self.application,
            self.alternating,
            self.storage,
        )


def seed_consumer_secret(stack: LocalStack) -> Seeded:
    """The secret the consumer site reads at start, tagged to restart it after promotion."""
    site_id = str(stack.info["sites"][CONSUMER_SITE]["arm_id"])
    return stack.seed_login_secret(
        "spoke1-kv",
        CONSUMER_SECRET,
        login=CONSUMER_LOGIN,
        database=CONSUMER_DATABASE,
        tags={metadata.CONSUMERS: site_id},
    )


def seed_demo_secrets(stack: LocalStack) -> DemoSecrets:
    """Three PostgreSQL logins, one MySQL account, one application's client secret, two
    alternating PostgreSQL logins and a storage account key, all inside the near-expiry window."""
    consumer = seed_consumer_secret(stack)
    admin = stack.seed_admin_secret("spoke2-kv", "pg-admin")
    approved = stack.seed_login_secret(
        "spoke2-kv",
        "reporting-db-password",
        login="reporting_user",
        admin=f"secret:{admin.name}",
        # Longer than the 30-day near-expiry window: a new version inside it would be "near
        # expiry" at once, and the cloud's next expiry scan would rotate it again.
        tags={metadata.APPROVAL: "required", metadata.VALIDITY_DAYS: "90"},
    )
    plain = stack.seed_login_secret("spoke2-kv", "batch-db-password", login="batch_user")
    mysql = stack.seed_login_secret(
        "spoke1-kv", "orders-mysql-password", login="orders_app", kind=MYSQL, database="orders"
    )
    application = seed_application_secret(stack)
    alternating, _ = stack.seed_alternating_secret(
        "spoke2-kv",
        "inventory-db-connection",
        kind=POSTGRESQL,
        logins=("inventory_a", "inventory_b"),
        admin_secret=admin.name,
        value_format="connection-string",
        tags={metadata.VALIDITY_DAYS: "90"},
    )
    return DemoSecrets(
        consumer=consumer,
        approved=approved,
        plain=plain,
        mysql=mysql,
        application=application,
        alternating=alternating,
        storage=seed_storage_secret(stack),
    )


# The demo's overlap: the previous client secret stays valid this long after promotion (24 hours
# by default in production; seconds here, so that the demo sees it go).
DEMO_OVERLAP_HOURS = 0.002


def seed_application_secret(stack: LocalStack) -> Seeded:
    """orders-api-client's secret, read by sp-consumer-app, tagged to restart it after promotion;
    the operator has recorded which credential it is, so the rotation retires it after the overlap."""
    site_id = str(stack.info["sites"][SP_CONSUMER_SITE]["arm_id"])
    return stack.seed_app_secret(
        "spoke1-kv",
        APPLICATION_SECRET,
        overlap_hours=DEMO_OVERLAP_HOURS,
        record_credential=True,
        tags={metadata.CONSUMERS: site_id},
    )


def seed_storage_secret(stack: LocalStack) -> Seeded:
    """ordersstore01's key1 as a connection string, read by blob-consumer-app, tagged to restart it
    after promotion (the operator wrote it by hand: the first rotation finds which key it is)."""
    site_id = str(stack.info["sites"][BLOB_CONSUMER_SITE]["arm_id"])
    return stack.seed_storage_secret(
        "spoke1-kv",
        BLOB_CONSUMER_SECRET,
        key_name="key1",
        tags={metadata.CONSUMERS: site_id, metadata.VALIDITY_DAYS: "90"},
    )


def start_consumer(stack: LocalStack, site: str = CONSUMER_SITE, *, timeout: float = 60) -> dict[str, Any]:
    """(Re)start a consumer site through ARM, as an operator does, so that it reads its secret
    afresh, and wait until it is healthy."""
    site_id = str(stack.info["sites"][site]["arm_id"])
    subscription, resource_group = site_id.split("/")[2], site_id.split("/")[4]
    client = stack.web_client(subscription)
    # A restart also starts a stopped site; a start would leave a running process on an old secret.
    client.web_apps.restart(resource_group, site)
    # ARM's state is the configured state, Running at once: wait for the app's health check
    # through its front end (https://<site>.azurewebsites.net), as the hub does.
    url = f"https://{client.web_apps.get(resource_group, site).default_host_name}/health"
    deadline = time.monotonic() + timeout
    while http_status(url, 10) != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{site} did not pass its health check within {timeout:g}s")
        time.sleep(0.5)
    return consumer_health(stack, site)


def consumer_health(stack: LocalStack, site: str = CONSUMER_SITE) -> dict[str, Any]:
    """What a consumer app says at /health: whether its credential works, and its version."""
    url = str(stack.info["sites"][site]["url"]) + "/health"
    try:
        with _opener.open(url, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    except OSError as exc:
        body = {"ok": False, "error": type(exc).__name__}
    return body


# Talks to 127.0.0.1 only: never through the cloud's proxy.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def hub_call(
    stack: LocalStack,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """Call the hub's HTTP API; returns (status, parsed JSON body). ``headers``: e.g. a signed-in
    session (``stack.signed_in()``)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (hub_url is http://127.0.0.1:<port>)
        stack.hub_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with _opener.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def rotations(stack: LocalStack) -> list[dict[str, Any]]:
    status, body = hub_call(stack, "GET", "/api/rotations")
    if status != 200:
        raise RuntimeError(f"GET /api/rotations answered {status}: {body}")
    return list(body["rotations"])


def rotation(stack: LocalStack, rotation_id: str) -> dict[str, Any]:
    status, body = hub_call(stack, "GET", f"/api/rotations/{rotation_id}")
    if status != 200:
        raise RuntimeError(f"GET /api/rotations/{rotation_id} answered {status}: {body}")
    return dict(body)


def wait_for(
    stack: LocalStack,
    rotation_id: str,
    *,
    until: tuple[str, ...] = ENDED,
    step: str | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    """Poll one rotation until its runtime status is in ``until`` (or it reaches ``step``)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = hub_call(stack, "GET", f"/api/rotations/{rotation_id}")
        if status == 200:
            reached_step = step is not None and (body.get("status") or {}).get("step") == step
            if body["runtimeStatus"] in until or reached_step:
                return dict(body)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"rotation {rotation_id} did not reach {step or until} within {timeout:g}s: {body}"
            )
        time.sleep(0.3)
