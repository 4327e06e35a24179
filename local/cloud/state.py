"""What every endpoint of one running local cloud shares, handed to the aiohttp apps by key."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from aiohttp import web

from local.cloud import rbac
from local.cloud.applications import ApplicationStore
from local.cloud.azurite import BlobService
from local.cloud.eventgrid_delivery import EventDelivery
from local.cloud.faults import FaultInjector
from local.cloud.kv_backup import BackupCodec
from local.cloud.kv_references import Reference
from local.cloud.kv_store import KeyVaultStore, NoSuchSecret
from local.cloud.sites import SiteManager
from local.cloud.storage import StorageKeyStore
from local.cloud.tokens import TokenIssuer
from local.cloud.topology import EntraSettings, Topology, Vault

KEPT_PER_TOPIC = 1000


@dataclass
class TopicInbox:
    """What each Event Grid custom topic accepted (the newest ``KEPT_PER_TOPIC``, oldest first), in memory."""

    events: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)

    def add(self, topic: str, received: dict[str, Any]) -> None:
        self.events.setdefault(topic, deque(maxlen=KEPT_PER_TOPIC)).append(received)

    def of(self, topic: str) -> list[dict[str, Any]]:
        return list(self.events.get(topic, ()))

    def clear(self, topic: str) -> None:
        self.events.pop(topic, None)


@dataclass
class CloudState:
    topology: Topology
    data_dir: Path
    issuer: TokenIssuer
    store: KeyVaultStore
    backups: BackupCodec
    faults: FaultInjector
    events: EventDelivery
    sites: SiteManager
    client_identity_header: str
    applications: ApplicationStore
    entra: EntraSettings = field(default_factory=EntraSettings)  # changed by the admin API
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    storage: StorageKeyStore | None = None  # the storage accounts' keys
    blob: BlobService | None = None  # Azurite; None when no account allows Shared Key
    topic_inbox: TopicInbox = field(default_factory=TopicInbox)  # what the custom topics received

    @cached_property
    def grants(self) -> list[rbac.Grant]:
        principal_of = {i.name: i.principal_id for i in self.topology.identities.values()}
        service_principal_of = {a.name: a.service_principal_id for a in self.topology.applications.values()}
        return [
            rbac.Grant(
                principal=(service_principal_of if a.kind == "application" else principal_of)[a.identity],
                role_id=a.role_id,
                scope=a.scope,
            )
            for a in self.topology.role_assignments
        ]

    def identity_name(self, principal_id: str) -> str:
        """The name of a managed identity or application (by its service principal) for logs."""
        for identity in self.topology.identities.values():
            if identity.principal_id == principal_id:
                return identity.name
        app = self.topology.application_by_principal_id(principal_id)
        return app.name if app is not None else principal_id

    def read_referenced_secret(self, reference: Reference, identities: tuple[str, ...]) -> str | None:
        """A Key Vault reference of a site's settings, read as App Service does with the site's
        identity (the first that may read it): the value, or None when it cannot be resolved."""
        vault = self.topology.vaults.get(reference.vault)
        if vault is None:
            return None
        try:
            version = self.store.get(vault.name, reference.secret, reference.version)
        except NoSuchSecret:
            return None
        if not version.enabled:
            return None
        action = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
        for name in identities:
            principal = self.topology.identities[name].principal_id
            if rbac.is_allowed(self.grants, principal, vault.arm_id, action, data=True):
                return version.value
        return None

    def publish(self, vault: Vault, event: dict[str, Any]) -> int:
        return self.events.publish(vault.arm_id, vault.name, event)


STATE: web.AppKey[CloudState] = web.AppKey("local_cloud_state", CloudState)
