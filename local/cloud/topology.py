"""The local cloud's topology: subscriptions, resource groups, vaults, identities, roles, sites, events.

A topology is a JSON file in the repo (``local/cloud/topologies/default.json`` is the one
``make demo`` uses). ``${VAR}`` placeholders in site commands, site environments and event
subscription endpoints are resolved from the local cloud's environment when it starts, so a test
can pass the port it picked for its webhook (``HUB_URL``) without editing the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.cloud import rbac

# Key Vault's own rule for vault names; a name that Azure would refuse is refused here too.
_VAULT_NAME = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
_SITE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,58}[a-zA-Z0-9]$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SECRET_EVENT_TYPES = (
    "Microsoft.KeyVault.SecretNewVersionCreated",
    "Microsoft.KeyVault.SecretNearExpiry",
    "Microsoft.KeyVault.SecretExpired",
)


class TopologyError(ValueError):
    """The topology file is malformed; the message names the offending entry."""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace every ``${VAR}`` with ``env[VAR]``.

    Raises:
        TopologyError: a placeholder names a variable that is not set (a silent empty string
            would produce a URL or command that fails much later and far from its cause).
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise TopologyError(f"${{{name}}} is used in the topology but {name} is not set")
        return env[name]

    return _PLACEHOLDER.sub(one, text)


@dataclass(frozen=True)
class Vault:
    name: str
    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str
    soft_delete_retention_days: int = 90
    purge_protection: bool = False

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    @property
    def host(self) -> str:
        return f"{self.name.lower()}.vault.azure.net"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def recovery_level(self) -> str:
        # The names Key Vault reports in every secret's attributes.recoveryLevel.
        base = "Recoverable" if self.soft_delete_retention_days >= 90 else "CustomizedRecoverable"
        return base if self.purge_protection else f"{base}+Purgeable"


@dataclass(frozen=True)
class Identity:
    name: str
    client_id: str
    principal_id: str
    subscription_id: str
    resource_group: str

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )


@dataclass(frozen=True)
class RoleAssignment:
    identity: str
    role_id: str
    scope: str


@dataclass(frozen=True)
class Site:
    name: str
    subscription_id: str
    resource_group: str
    location: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    identities: tuple[str, ...]
    health_check_path: str | None = None
    initial_state: str = "Running"

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )


@dataclass(frozen=True)
class EventSubscription:
    name: str
    vault: str
    endpoint: str
    included_event_types: tuple[str, ...] = SECRET_EVENT_TYPES
    subject_begins_with: str = ""
    subject_ends_with: str = ""
    max_delivery_attempts: int = 30
    event_time_to_live_minutes: int = 1440
    dead_letter: bool = True

    def accepts(self, event_type: str, subject: str) -> bool:
        return (
            event_type.lower() in (t.lower() for t in self.included_event_types)
            and subject.startswith(self.subject_begins_with)
            and subject.endswith(self.subject_ends_with)
        )


@dataclass(frozen=True)
class EventGridSettings:
    scan_interval_seconds: float = 60.0
    near_expiry_window_seconds: float = 30 * 24 * 3600.0
    # Every wait of Azure's retry schedule is multiplied by this; tests use 0.001 or so.
    retry_schedule_scale: float = 1.0
    delivery_timeout_seconds: float = 30.0
    duplicates: bool = False


@dataclass(frozen=True)
class Topology:
    tenant_id: str
    subscriptions: Mapping[str, str]  # id -> display name
    resource_groups: frozenset[tuple[str, str]]  # (subscription id, lower-case name)
    vaults: Mapping[str, Vault]  # lower-case vault name -> vault
    identities: Mapping[str, Identity]  # name -> identity
    role_assignments: tuple[RoleAssignment, ...]
    sites: Mapping[str, Site]  # lower-case site name -> site
    event_subscriptions: tuple[EventSubscription, ...]
    client_identity: str
    eventgrid: EventGridSettings = field(default_factory=EventGridSettings)
    token_lifetime_seconds: int = 24 * 3600

    def identity_by_client_id(self, client_id: str) -> Identity | None:
        return next((i for i in self.identities.values() if i.client_id == client_id.lower()), None)

    def vault_by_host(self, host: str) -> Vault | None:
        name, _, domain = host.lower().partition(".")
        return self.vaults.get(name) if domain == "vault.azure.net" else None


def _require(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise TopologyError(f"{where}: '{key}' is required")
    return obj[key]


def _guid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _GUID.match(value.lower()):
        raise TopologyError(f"{where}: {value!r} is not a GUID")
    return value.lower()


def _command(value: Any, env: Mapping[str, str], where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise TopologyError(f"{where}: 'command' must be a non-empty list of strings")
    return tuple(substitute(a, env) for a in value)


def _resolve_scope(scope: str, vaults: Mapping[str, Vault], sites: Mapping[str, Site], where: str) -> str:
    """Accept an ARM id or the shorthand ``vault:NAME`` / ``site:NAME``."""
    kind, _, name = scope.partition(":")
    if kind == "vault" and name:
        if name.lower() not in vaults:
            raise TopologyError(f"{where}: unknown vault {name!r}")
        return vaults[name.lower()].arm_id
    if kind == "site" and name:
        if name.lower() not in sites:
            raise TopologyError(f"{where}: unknown site {name!r}")
        return sites[name.lower()].arm_id
    if not scope.startswith("/subscriptions/"):
        raise TopologyError(f"{where}: scope {scope!r} is neither an ARM id nor vault:NAME / site:NAME")
    return scope


def parse(doc: Mapping[str, Any], env: Mapping[str, str]) -> Topology:
    """Build a Topology from its JSON document, resolving ``${VAR}`` from ``env``.

    Raises:
        TopologyError: with the path of the first bad entry.
    """
    tenant_id = _guid(_require(doc, "tenant_id", "topology"), "tenant_id")
    location = str(doc.get("location", "eastus"))
    subscriptions: dict[str, str] = {}
    resource_groups: set[tuple[str, str]] = set()
    vaults: dict[str, Vault] = {}
    sites: dict[str, Site] = {}
    raw_sites: list[tuple[str, str, dict[str, Any]]] = []
    for s_index, sub in enumerate(_require(doc, "subscriptions", "topology")):
        where = f"subscriptions[{s_index}]"
        sub_id = _guid(_require(sub, "id", where), f"{where}.id")
        subscriptions[sub_id] = str(sub.get("name", sub_id))
        for g_index, group in enumerate(sub.get("resource_groups", [])):
            g_where = f"{where}.resource_groups[{g_index}]"
            rg = str(_require(group, "name", g_where))
            resource_groups.add((sub_id, rg.lower()))
            for v_index, raw in enumerate(group.get("vaults", [])):
                v_where = f"{g_where}.vaults[{v_index}]"
                name = str(_require(raw, "name", v_where))
                if not _VAULT_NAME.match(name):
                    raise TopologyError(f"{v_where}: {name!r} is not a valid vault name")
                if name.lower() in vaults:
                    raise TopologyError(f"{v_where}: vault {name!r} is declared twice")
                vaults[name.lower()] = Vault(
                    name=name.lower(),
                    subscription_id=sub_id,
                    resource_group=rg,
                    location=str(raw.get("location", location)),
                    tenant_id=tenant_id,
                    soft_delete_retention_days=int(raw.get("soft_delete_retention_days", 90)),
                    purge_protection=bool(raw.get("purge_protection", False)),
                )
            for x_index, raw in enumerate(group.get("sites", [])):
                raw_sites.append((sub_id, rg, {**raw, "_where": f"{g_where}.sites[{x_index}]"}))
    if not subscriptions:
        raise TopologyError("topology: at least one subscription is required")
    first_sub = next(iter(subscriptions))
    first_rg = next((rg for sub, rg in sorted(resource_groups) if sub == first_sub), "identities")

    identities: dict[str, Identity] = {}
    for i_index, raw in enumerate(_require(doc, "identities", "topology")):
        where = f"identities[{i_index}]"
        name = str(_require(raw, "name", where))
        identities[name] = Identity(
            name=name,
            client_id=_guid(_require(raw, "client_id", where), f"{where}.client_id"),
            principal_id=_guid(_require(raw, "principal_id", where), f"{where}.principal_id"),
            subscription_id=_guid(raw.get("subscription_id", first_sub), f"{where}.subscription_id"),
            resource_group=str(raw.get("resource_group", first_rg)),
        )

    for sub_id, rg, raw in raw_sites:
        where = raw["_where"]
        name = str(_require(raw, "name", where))
        if not _SITE_NAME.match(name):
            raise TopologyError(f"{where}: {name!r} is not a valid site name")
        site_identities = tuple(str(i) for i in raw.get("identities", []))
        for ident in site_identities:
            if ident not in identities:
                raise TopologyError(f"{where}: unknown identity {ident!r}")
        state = str(raw.get("state", "Running"))
        if state not in ("Running", "Stopped"):
            raise TopologyError(f"{where}: state must be Running or Stopped")
        sites[name.lower()] = Site(
            name=name,
            subscription_id=sub_id,
            resource_group=rg,
            location=str(raw.get("location", location)),
            command=_command(_require(raw, "command", where), env, where),
            env={str(k): substitute(str(v), env) for k, v in raw.get("env", {}).items()},
            identities=site_identities,
            health_check_path=raw.get("health_check_path"),
            initial_state=state,
        )

    assignments: list[RoleAssignment] = []
    for a_index, raw in enumerate(doc.get("role_assignments", [])):
        where = f"role_assignments[{a_index}]"
        ident = str(_require(raw, "identity", where))
        if ident not in identities:
            raise TopologyError(f"{where}: unknown identity {ident!r}")
        role_id = rbac.role_id(str(_require(raw, "role", where)))
        if role_id is None:
            raise TopologyError(f"{where}: unknown role {raw['role']!r}")
        scope = _resolve_scope(str(_require(raw, "scope", where)), vaults, sites, where)
        assignments.append(RoleAssignment(identity=ident, role_id=role_id, scope=scope))

    subscriptions_list = tuple(
        event_subscription_from_doc(raw, env, vaults, f"event_subscriptions[{e_index}]")
        for e_index, raw in enumerate(doc.get("event_subscriptions", []))
    )

    client_identity = str(doc.get("client_identity", next(iter(identities), "")))
    if client_identity not in identities:
        raise TopologyError(f"client_identity: unknown identity {client_identity!r}")
    eg = doc.get("eventgrid", {})
    return Topology(
        tenant_id=tenant_id,
        subscriptions=subscriptions,
        resource_groups=frozenset(resource_groups),
        vaults=vaults,
        identities=identities,
        role_assignments=tuple(assignments),
        sites=sites,
        event_subscriptions=subscriptions_list,
        client_identity=client_identity,
        eventgrid=EventGridSettings(
            scan_interval_seconds=float(eg.get("scan_interval_seconds", 60.0)),
            near_expiry_window_seconds=float(eg.get("near_expiry_window_seconds", 30 * 24 * 3600.0)),
            retry_schedule_scale=float(eg.get("retry_schedule_scale", 1.0)),
            delivery_timeout_seconds=float(eg.get("delivery_timeout_seconds", 30.0)),
            duplicates=bool(eg.get("duplicates", False)),
        ),
        token_lifetime_seconds=int(doc.get("token_lifetime_seconds", 24 * 3600)),
    )


def event_subscription_from_doc(
    raw: Mapping[str, Any], env: Mapping[str, str], vaults: Mapping[str, Vault], where: str
) -> EventSubscription:
    """One event subscription, from the topology or from the admin endpoint.

    Raises:
        TopologyError: a missing field, an unknown vault or event type, or limits Azure refuses.
    """
    name = str(_require(raw, "name", where))
    vault = str(_require(raw, "vault", where)).lower()
    if vault not in vaults:
        raise TopologyError(f"{where}: unknown vault {vault!r}")
    endpoint = substitute(str(_require(raw, "endpoint", where)), env)
    if not endpoint.startswith(("http://", "https://")):
        raise TopologyError(f"{where}: endpoint {endpoint!r} is not an http(s) URL")
    types = tuple(str(t) for t in raw.get("included_event_types", SECRET_EVENT_TYPES))
    for event_type in types:
        if event_type not in SECRET_EVENT_TYPES:
            raise TopologyError(f"{where}: event type {event_type!r} is not emitted by the local cloud")
    attempts = int(raw.get("max_delivery_attempts", 30))
    ttl = int(raw.get("event_time_to_live_minutes", 1440))
    # The limits Event Grid itself enforces on a subscription's retry policy.
    if not 1 <= attempts <= 30:
        raise TopologyError(f"{where}: max_delivery_attempts must be between 1 and 30")
    if not 1 <= ttl <= 1440:
        raise TopologyError(f"{where}: event_time_to_live_minutes must be between 1 and 1440")
    return EventSubscription(
        name=name,
        vault=vault,
        endpoint=endpoint,
        included_event_types=types,
        subject_begins_with=str(raw.get("subject_begins_with", "")),
        subject_ends_with=str(raw.get("subject_ends_with", "")),
        max_delivery_attempts=attempts,
        event_time_to_live_minutes=ttl,
        dead_letter=bool(raw.get("dead_letter", True)),
    )


def load(path: Path, env: Mapping[str, str] | None = None) -> Topology:
    """Read and parse a topology file; ``env`` defaults to this process's environment.

    Raises:
        TopologyError: the file is not JSON or does not describe a valid topology.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path}: not valid JSON: {exc}") from exc
    return parse(doc, dict(os.environ) if env is None else env)
