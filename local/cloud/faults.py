"""Injected faults: what the next N calls of an operation on a vault or site run into.

A fault is consumed by each authenticated call it matches (Key Vault's unauthenticated
challenge round trip does not count, so "the next 2 calls" means 2 real operations).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("throttle", "unavailable", "latency", "drop")

# The operation names a caller uses, by service; "*" matches every operation of the target.
KEYVAULT_OPERATIONS = (
    "set_secret",
    "get_secret",
    "list_secrets",
    "list_versions",
    "update_secret",
    "delete_secret",
    "get_deleted_secret",
    "list_deleted_secrets",
    "recover_deleted_secret",
    "purge_deleted_secret",
    "backup_secret",
    "restore_secret",
)
SITE_OPERATIONS = (
    "get_site",
    "get_site_config",
    "restart",
    "stop",
    "start",
    "list_app_settings",
    "update_app_settings",
)
VAULT_ARM_OPERATIONS = ("get_vault",)  # ARM's GET of a vault resource, target: the vault
STORAGE_OPERATIONS = ("get_storage_account", "list_keys", "regenerate_key")  # ARM, target: the account
# ARM's permissions API; the target is the resource's name (vault, site, account).
PERMISSION_OPERATIONS = ("list_permissions",)
IDENTITY_OPERATIONS = ("get_token",)  # also the Entra token endpoint (target "entra")
EVENTGRID_OPERATIONS = ("publish_events",)  # a custom topic's POST /api/events, target: the topic
GRAPH_OPERATIONS = (
    "get_application",
    "add_password",
    "remove_password",
    "list_owners",
    "add_owner",
    "remove_owner",
)


class ConnectionDropped(Exception):
    """Raised by a handler after aborting its connection for a "drop" fault; logged, never answered."""


def drop_connection(transport: asyncio.Transport | None) -> ConnectionDropped:
    """Reset the client's connection (as a failing load balancer would) and return what to raise."""
    if transport is not None:
        transport.abort()
    return ConnectionDropped()


class FaultSpecError(ValueError):
    """The fault request is not understood; the message says which field."""


@dataclass
class Fault:
    id: int
    target: (
        str  # vault, site, storage account, topic or application name, "identity", "graph", "entra", or "*"
    )
    operation: str  # an operation name above, or "*"
    kind: str
    remaining: int
    retry_after_seconds: int = 1
    latency_ms: int = 0

    def matches(self, target: str, operation: str) -> bool:
        return self.target in ("*", target.lower()) and self.operation in ("*", operation)


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        """Register a fault from its JSON form.

        Raises:
            FaultSpecError: unknown kind or operation, or a count below 1.
        """
        kind = str(spec.get("kind", ""))
        if kind not in KINDS:
            raise FaultSpecError(f"kind must be one of {', '.join(KINDS)}")
        operation = str(spec.get("operation", "*"))
        known = (
            *KEYVAULT_OPERATIONS,
            *SITE_OPERATIONS,
            *STORAGE_OPERATIONS,
            *VAULT_ARM_OPERATIONS,
            *PERMISSION_OPERATIONS,
            *IDENTITY_OPERATIONS,
            *GRAPH_OPERATIONS,
            *EVENTGRID_OPERATIONS,
            "*",
        )
        if operation not in known:
            raise FaultSpecError(f"operation {operation!r} is unknown; one of {', '.join(known)}")
        count = int(spec.get("count", 1))
        if count < 1:
            raise FaultSpecError("count must be at least 1")
        fault = Fault(
            id=next(self._ids),
            target=str(spec.get("target", "*")).lower(),
            operation=operation,
            kind=kind,
            remaining=count,
            retry_after_seconds=int(spec.get("retry_after_seconds", 1)),
            latency_ms=int(spec.get("latency_ms", 0)),
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def listing(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self._faults]

    def take(self, target: str, operation: str, *aliases: str) -> list[Fault]:
        """Consume one use of each fault matching this call; latency first, then the failure.

        ``aliases`` are other names the call's target answers to (Graph: "graph" and the
        application's name); a fault matching several of them is still used once.
        """
        hits = [f for f in self._faults if any(f.matches(t, operation) for t in (target, *aliases))]
        for fault in hits:
            fault.remaining -= 1
        self._faults = [f for f in self._faults if f.remaining > 0]
        return sorted(hits, key=lambda f: f.kind != "latency")


async def apply_latency(faults: list[Fault]) -> list[Fault]:
    """Sleep for every latency fault and return the failing faults left to answer with."""
    for fault in faults:
        if fault.kind == "latency":
            await asyncio.sleep(fault.latency_ms / 1000)
    return [f for f in faults if f.kind != "latency"]
