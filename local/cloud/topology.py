"""The local cloud's topology: subscriptions, resource groups, vaults, storage accounts, identities, roles,
sites, events, Entra applications and the Microsoft Graph application permissions of principals.

A topology is a JSON file in the repo (``local/cloud/topologies/default.json`` is the one
``make demo`` uses). ``${VAR}`` placeholders in site commands, site environments, event
subscription endpoints and application password secrets are resolved from the local cloud's
environment when it starts, so a test can pass the port it picked for its webhook (``HUB_URL``)
without editing the file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.cloud import rbac

# Key Vault's own rule for vault names; a name that Azure would refuse is refused here too.
_VAULT_NAME = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
# Azure's rule for storage account names (they are also DNS labels: <name>.blob.core.windows.net).
_STORAGE_NAME = re.compile(r"^[a-z0-9]{3,24}$")
# Event Grid's rule for custom topic names: 3-50 letters, digits and dashes.
_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9-]{3,50}$")
# The input schema of a custom topic (the local cloud serves CloudEvents 1.0 only) and one of the two
# delivery schemas of an event subscription (ARM's ``eventDeliverySchema`` values).
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
EVENT_GRID_SCHEMA = "EventGridSchema"
DELIVERY_SCHEMAS = (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA)
_SITE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,58}[a-zA-Z0-9]$")
# App Service's domain of default host names: <site>.azurewebsites.net.
SITE_DOMAIN = "azurewebsites.net"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# signInAudience values Microsoft Graph knows; the last two allow personal Microsoft accounts, for
# which Entra ID limits an application to two password credentials.
SIGN_IN_AUDIENCES = (
    "AzureADMyOrg",
    "AzureADMultipleOrgs",
    "AzureADandPersonalMicrosoftAccount",
    "PersonalMicrosoftAccount",
)
PERSONAL_ACCOUNT_AUDIENCES = frozenset({"AzureADandPersonalMicrosoftAccount", "PersonalMicrosoftAccount"})
# Microsoft Graph application permissions (app roles) the local Graph understands.
GRAPH_APP_ROLES = ("Application.Read.All", "Application.ReadWrite.OwnedBy", "Application.ReadWrite.All")

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
class StorageAccount:
    name: str
    subscription_id: str
    resource_group: str
    location: str
    allow_shared_key_access: bool = True
    kind: str = "StorageV2"
    sku: str = "Standard_LRS"

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{self.name}"
        )

    @property
    def blob_host(self) -> str:
        return f"{self.name}.blob.core.windows.net"

    @property
    def blob_endpoint(self) -> str:
        return f"https://{self.blob_host}/"


@dataclass(frozen=True)
class EventGridTopic:
    """An Event Grid custom topic (CloudEvents 1.0 input schema, Entra ID authentication only)."""

    name: str  # lower case
    subscription_id: str
    resource_group: str
    location: str

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.EventGrid/topics/{self.name}"
        )

    @property
    def host(self) -> str:
        # Azure's endpoint: https://<topic>.<region>-1.eventgrid.azure.net/api/events
        return f"{self.name}.{self.location.lower()}-1.eventgrid.azure.net"

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}/api/events"


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
    identity: str  # the identity's or application's name (see ``kind``)
    role_id: str
    scope: str
    kind: str = "identity"  # "identity" (a managed identity) or "application" (its service principal)


@dataclass(frozen=True)
class PasswordSeed:
    """A password credential an application has when the local cloud first sees it.

    ``secret`` None: the local cloud generates one at seeding (and keeps it in the data dir for
    the admin API); ``start``/``end`` are unix seconds, resolved when the topology is loaded.
    """

    key_id: str
    display_name: str | None
    secret: str | None
    start: float
    end: float


@dataclass(frozen=True)
class Application:
    name: str
    app_id: str  # the client id
    object_id: str  # the application object's id in Graph
    service_principal_id: str  # the object id of its service principal: a token's oid
    display_name: str
    sign_in_audience: str
    owners: tuple[str, ...]  # principal (object) ids
    password_credentials: tuple[PasswordSeed, ...]
    password_max_lifetime_days: float | None = None
    policy_id: str = ""  # the id of the app management policy that sets the limit above

    @property
    def password_limit(self) -> int | None:
        """Entra ID's limit on password credentials for apps that allow personal accounts."""
        return 2 if self.sign_in_audience in PERSONAL_ACCOUNT_AUDIENCES else None


@dataclass(frozen=True)
class GraphAppRole:
    principal_id: str
    role: str


@dataclass(frozen=True)
class EntraSettings:
    # A password credential added less than this many seconds ago is refused (AADSTS7000215),
    # as Entra ID does until the new credential has replicated.
    propagation_delay_seconds: float = 0.0


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

    @property
    def host(self) -> str:
        """Its default host name, where App Service's front end answers for it."""
        return f"{self.name.lower()}.{SITE_DOMAIN}"


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
    event_delivery_schema: str = EVENT_GRID_SCHEMA

    @property
    def cloud_events(self) -> bool:
        return self.event_delivery_schema == CLOUD_EVENT_SCHEMA

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
    applications: Mapping[str, Application] = field(default_factory=dict)  # name -> application
    graph_app_roles: tuple[GraphAppRole, ...] = ()
    entra: EntraSettings = field(default_factory=EntraSettings)
    storage_accounts: Mapping[str, StorageAccount] = field(default_factory=dict)  # name -> account
    topics: Mapping[str, EventGridTopic] = field(default_factory=dict)  # lower-case name -> topic

    def topic_by_host(self, host: str) -> EventGridTopic | None:
        return next((t for t in self.topics.values() if t.host == host.lower()), None)

    def identity_by_client_id(self, client_id: str) -> Identity | None:
        return next((i for i in self.identities.values() if i.client_id == client_id.lower()), None)

    def application_by_app_id(self, app_id: str) -> Application | None:
        return next((a for a in self.applications.values() if a.app_id == app_id.lower()), None)

    def application_by_object_id(self, object_id: str) -> Application | None:
        return next((a for a in self.applications.values() if a.object_id == object_id.lower()), None)

    def application_by_principal_id(self, principal_id: str) -> Application | None:
        return next(
            (a for a in self.applications.values() if a.service_principal_id == principal_id.lower()), None
        )

    def graph_roles_of(self, principal_id: str) -> tuple[str, ...]:
        """The Microsoft Graph application permissions granted to a principal (its token's roles)."""
        return tuple(sorted({g.role for g in self.graph_app_roles if g.principal_id == principal_id}))

    def site_by_host(self, host: str) -> Site | None:
        name, _, domain = host.lower().partition(".")
        return self.sites.get(name) if domain == SITE_DOMAIN else None

    def vault_by_host(self, host: str) -> Vault | None:
        name, _, domain = host.lower().partition(".")
        return self.vaults.get(name) if domain == "vault.azure.net" else None

    def storage_account_by_blob_host(self, host: str) -> StorageAccount | None:
        name, _, domain = host.lower().partition(".")
        return self.storage_accounts.get(name) if domain == "blob.core.windows.net" else None


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


def resolve_scope(
    scope: str,
    vaults: Mapping[str, Vault],
    sites: Mapping[str, Site],
    storage_accounts: Mapping[str, StorageAccount],
    where: str,
    topics: Mapping[str, EventGridTopic] | None = None,
) -> str:
    """Accept an ARM id or the shorthand ``vault:NAME`` / ``site:NAME`` / ``storage:NAME`` / ``topic:NAME``."""
    kind, _, name = scope.partition(":")
    if kind == "topic" and name:
        if name.lower() not in (topics or {}):
            raise TopologyError(f"{where}: unknown Event Grid topic {name!r}")
        return (topics or {})[name.lower()].arm_id
    if kind == "storage" and name:
        if name.lower() not in storage_accounts:
            raise TopologyError(f"{where}: unknown storage account {name!r}")
        return storage_accounts[name.lower()].arm_id
    if kind == "vault" and name:
        if name.lower() not in vaults:
            raise TopologyError(f"{where}: unknown vault {name!r}")
        return vaults[name.lower()].arm_id
    if kind == "site" and name:
        if name.lower() not in sites:
            raise TopologyError(f"{where}: unknown site {name!r}")
        return sites[name.lower()].arm_id
    if not scope.startswith("/subscriptions/"):
        raise TopologyError(
            f"{where}: scope {scope!r} is neither an ARM id nor vault:NAME / site:NAME / storage:NAME / topic:NAME"
        )
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
    storage_accounts: dict[str, StorageAccount] = {}
    topics: dict[str, EventGridTopic] = {}
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
            for a_index, raw in enumerate(group.get("storage_accounts", [])):
                a_where = f"{g_where}.storage_accounts[{a_index}]"
                account = _storage_account(raw, sub_id, rg, location, a_where)
                if account.name in storage_accounts:
                    raise TopologyError(f"{a_where}: storage account {account.name!r} is declared twice")
                storage_accounts[account.name] = account
            for t_index, raw in enumerate(group.get("eventgrid_topics", [])):
                t_where = f"{g_where}.eventgrid_topics[{t_index}]"
                topic = _topic(raw, sub_id, rg, location, t_where)
                if topic.name in topics:
                    raise TopologyError(f"{t_where}: Event Grid topic {topic.name!r} is declared twice")
                topics[topic.name] = topic
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

    applications = _applications(doc.get("applications", []), identities, env)
    _check_unique_principals(identities, applications)

    assignments: list[RoleAssignment] = []
    for a_index, raw in enumerate(doc.get("role_assignments", [])):
        where = f"role_assignments[{a_index}]"
        kind, name, _ = _principal(raw, identities, applications, where)
        role_id = rbac.role_id(str(_require(raw, "role", where)))
        if role_id is None:
            raise TopologyError(f"{where}: unknown role {raw['role']!r}")
        scope = resolve_scope(
            str(_require(raw, "scope", where)), vaults, sites, storage_accounts, where, topics
        )
        assignments.append(RoleAssignment(identity=name, role_id=role_id, scope=scope, kind=kind))

    graph_roles: list[GraphAppRole] = []
    for r_index, raw in enumerate(doc.get("graph_app_roles", [])):
        where = f"graph_app_roles[{r_index}]"
        _, _, principal_id = _principal(raw, identities, applications, where)
        role = str(_require(raw, "role", where))
        if role not in GRAPH_APP_ROLES:
            raise TopologyError(f"{where}: role {role!r} is not one of {', '.join(GRAPH_APP_ROLES)}")
        graph_roles.append(GraphAppRole(principal_id=principal_id, role=role))

    entra = doc.get("entra", {})
    if not isinstance(entra, dict):
        raise TopologyError("entra: must be an object")
    delay = _number(entra.get("propagation_delay_seconds", 0), "entra.propagation_delay_seconds")
    if delay < 0:
        raise TopologyError("entra.propagation_delay_seconds: must not be negative")

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
        applications=applications,
        graph_app_roles=tuple(graph_roles),
        entra=EntraSettings(propagation_delay_seconds=delay),
        storage_accounts=storage_accounts,
        topics=topics,
    )


def _topic(raw: Any, sub_id: str, rg: str, location: str, where: str) -> EventGridTopic:
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be an object")
    name = str(_require(raw, "name", where))
    if not _TOPIC_NAME.match(name):
        raise TopologyError(f"{where}: {name!r} is not a valid topic name (3-50 letters, digits and dashes)")
    schema = str(raw.get("input_schema", CLOUD_EVENT_SCHEMA))
    if schema != CLOUD_EVENT_SCHEMA:
        raise TopologyError(f"{where}.input_schema: the local cloud serves {CLOUD_EVENT_SCHEMA} topics only")
    topic_location = str(raw.get("location", location))
    if not re.fullmatch(r"[a-z0-9]+", topic_location.lower()):
        raise TopologyError(f"{where}.location: {topic_location!r} is not a region name")
    return EventGridTopic(
        name=name.lower(), subscription_id=sub_id, resource_group=rg, location=topic_location
    )


def _storage_account(raw: Any, sub_id: str, rg: str, location: str, where: str) -> StorageAccount:
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be an object")
    name = str(_require(raw, "name", where))
    if not _STORAGE_NAME.match(name):
        raise TopologyError(
            f"{where}: {name!r} is not a valid storage account name (3-24 lower-case letters and digits)"
        )
    allow = raw.get("allow_shared_key_access", True)
    if not isinstance(allow, bool):
        raise TopologyError(f"{where}.allow_shared_key_access: must be true or false")
    return StorageAccount(
        name=name,
        subscription_id=sub_id,
        resource_group=rg,
        location=str(raw.get("location", location)),
        allow_shared_key_access=allow,
        kind=str(raw.get("kind", "StorageV2")),
        sku=str(raw.get("sku", "Standard_LRS")),
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TopologyError(f"{where}: {value!r} is not a number")
    return float(value)


def parse_time(value: Any, now: float, where: str) -> float:
    """Unix seconds from an ISO 8601 date-time (naive means UTC) or a number of days from ``now``.

    Raises:
        TopologyError: neither.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return now + float(value) * 86400
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise TopologyError(f"{where}: {value!r} is not an ISO 8601 date-time") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    raise TopologyError(f"{where}: {value!r} is neither an ISO 8601 date-time nor a number of days")


def _principal(
    raw: Mapping[str, Any],
    identities: Mapping[str, Identity],
    applications: Mapping[str, Application],
    where: str,
) -> tuple[str, str, str]:
    """("identity" or "application", its name, its principal id) for an entry naming exactly one."""
    if ("identity" in raw) == ("application" in raw):
        raise TopologyError(f"{where}: name exactly one of 'identity' or 'application'")
    if "identity" in raw:
        name = str(raw["identity"])
        if name not in identities:
            raise TopologyError(f"{where}: unknown identity {name!r}")
        return "identity", name, identities[name].principal_id
    name = str(raw["application"])
    if name not in applications:
        raise TopologyError(f"{where}: unknown application {name!r}")
    return "application", name, applications[name].service_principal_id


def _password_seed(raw: Any, env: Mapping[str, str], now: float, where: str) -> PasswordSeed:
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: must be an object")
    secret = raw.get("secret")
    if secret is not None:
        if not isinstance(secret, str) or not secret:
            raise TopologyError(f"{where}.secret: must be a non-empty string")
        secret = substitute(secret, env)
        if not secret:
            raise TopologyError(f"{where}.secret: resolves to an empty string")
    display_name = raw.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        raise TopologyError(f"{where}.display_name: must be a string")
    start = parse_time(raw.get("start", 0), now, f"{where}.start")
    # A number of days for "end" counts from the start; an ISO date-time is absolute.
    end = parse_time(raw.get("end", 730), start, f"{where}.end")
    if end <= start:
        raise TopologyError(f"{where}.end: must be after its start")
    return PasswordSeed(
        key_id=_guid(_require(raw, "key_id", where), f"{where}.key_id"),
        display_name=display_name,
        secret=secret,
        start=start,
        end=end,
    )


def _applications(
    raw_list: Any, identities: Mapping[str, Identity], env: Mapping[str, str]
) -> dict[str, Application]:
    if not isinstance(raw_list, list):
        raise TopologyError("applications: must be a list")
    now = dt.datetime.now(dt.UTC).timestamp()
    raw_by_name: dict[str, dict[str, Any]] = {}
    service_principals: dict[str, str] = {}
    for index, raw in enumerate(raw_list):
        where = f"applications[{index}]"
        if not isinstance(raw, dict):
            raise TopologyError(f"{where}: must be an object")
        name = _require(raw, "name", where)
        if not isinstance(name, str) or not name:
            raise TopologyError(f"{where}.name: must be a non-empty string")
        if name in raw_by_name or name in identities:
            raise TopologyError(f"{where}: name {name!r} is used twice (applications and identities)")
        raw_by_name[name] = {**raw, "_where": where}
        service_principals[name] = _guid(
            _require(raw, "service_principal_id", where), f"{where}.service_principal_id"
        )

    applications: dict[str, Application] = {}
    for name, raw in raw_by_name.items():
        where = raw["_where"]
        object_id = _guid(_require(raw, "object_id", where), f"{where}.object_id")
        audience = str(raw.get("sign_in_audience", "AzureADMyOrg"))
        if audience not in SIGN_IN_AUDIENCES:
            raise TopologyError(
                f"{where}.sign_in_audience: {audience!r} is not one of {', '.join(SIGN_IN_AUDIENCES)}"
            )
        owners: list[str] = []
        raw_owners = raw.get("owners", [])
        if not isinstance(raw_owners, list):
            raise TopologyError(f"{where}.owners: must be a list of identity or application names")
        for owner in raw_owners:
            if owner in identities:
                owners.append(identities[owner].principal_id)
            elif owner in service_principals:
                owners.append(service_principals[owner])
            else:
                raise TopologyError(f"{where}.owners: unknown identity or application {owner!r}")
        raw_passwords = raw.get("password_credentials", [])
        if not isinstance(raw_passwords, list):
            raise TopologyError(f"{where}.password_credentials: must be a list")
        passwords = tuple(
            _password_seed(p, env, now, f"{where}.password_credentials[{i}]")
            for i, p in enumerate(raw_passwords)
        )
        if len({p.key_id for p in passwords}) != len(passwords):
            raise TopologyError(f"{where}.password_credentials: a key_id is used twice")
        max_days = raw.get("password_max_lifetime_days")
        if max_days is not None:
            max_days = _number(max_days, f"{where}.password_max_lifetime_days")
            if max_days <= 0:
                raise TopologyError(f"{where}.password_max_lifetime_days: must be positive")
        policy_id = raw.get("password_max_lifetime_policy_id")
        policy_id = (
            _guid(policy_id, f"{where}.password_max_lifetime_policy_id")
            if policy_id is not None
            else str(uuid.uuid5(uuid.NAMESPACE_URL, f"local-cloud/appManagementPolicy/{object_id}"))
        )
        applications[name] = Application(
            name=name,
            app_id=_guid(_require(raw, "app_id", where), f"{where}.app_id"),
            object_id=object_id,
            service_principal_id=service_principals[name],
            display_name=str(raw.get("display_name", name)),
            sign_in_audience=audience,
            owners=tuple(dict.fromkeys(owners)),
            password_credentials=passwords,
            password_max_lifetime_days=max_days,
            policy_id=policy_id,
        )
    return applications


def _check_unique_principals(
    identities: Mapping[str, Identity], applications: Mapping[str, Application]
) -> None:
    """Object ids and client ids name one directory object each, as in Entra ID."""
    seen: dict[str, str] = {}
    ids: list[tuple[str, str]] = []
    for identity in identities.values():
        ids += [
            (identity.client_id, f"identity {identity.name}"),
            (identity.principal_id, f"identity {identity.name}"),
        ]
    for app in applications.values():
        ids += [
            (app.app_id, f"application {app.name}"),
            (app.object_id, f"application {app.name}"),
            (app.service_principal_id, f"application {app.name}"),
        ]
    for value, owner in ids:
        if value in seen and seen[value] != owner:
            raise TopologyError(f"{owner}: id {value} is also used by {seen[value]}")
        if value in seen:
            raise TopologyError(f"{owner}: id {value} is used twice")
        seen[value] = owner


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
    # ARM's own spelling is accepted too, so a subscription copied from a template keeps its schema.
    schema = str(raw.get("event_delivery_schema", raw.get("eventDeliverySchema", EVENT_GRID_SCHEMA)))
    # ARM matches enum values case-insensitively; the canonical spelling is kept.
    canonical = {s.lower(): s for s in DELIVERY_SCHEMAS}.get(schema.lower())
    if canonical is None:
        raise TopologyError(
            f"{where}: event_delivery_schema {schema!r} is not one of {', '.join(DELIVERY_SCHEMAS)}"
        )
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
        event_delivery_schema=canonical,
    )


def with_vaults_like(doc: Mapping[str, Any], names: Sequence[str], *, like: str) -> dict[str, Any]:
    """A copy of the topology document ``doc`` with vaults ``names`` added, each wired as vault
    ``like`` is: in a resource group of its own (``rg-<name>``) in ``like``'s subscription, with
    the role assignments scoped to ``vault:<like>`` and the event subscriptions of ``like``
    repeated for it. How a benchmark or test gets many spoke vaults without a second copy of the
    default topology.

    Raises:
        TopologyError: ``like`` is not a vault of ``doc``, or a name is taken or not a valid vault name.
    """
    copied: dict[str, Any] = json.loads(json.dumps(doc))
    home = next(
        (
            subscription
            for subscription in copied.get("subscriptions", [])
            for group in subscription.get("resource_groups", [])
            if any(str(v.get("name", "")).lower() == like.lower() for v in group.get("vaults", []))
        ),
        None,
    )
    if home is None:
        raise TopologyError(f"vault {like!r} is not in the topology")
    taken = {
        str(v.get("name", "")).lower()
        for subscription in copied["subscriptions"]
        for group in subscription.get("resource_groups", [])
        for v in group.get("vaults", [])
    }
    like_scope = f"vault:{like}".lower()
    assignments = [
        a for a in copied.get("role_assignments", []) if str(a.get("scope", "")).lower() == like_scope
    ]
    subscriptions = [
        s for s in copied.get("event_subscriptions", []) if str(s.get("vault", "")).lower() == like.lower()
    ]
    for name in names:
        if name.lower() in taken or not _VAULT_NAME.match(name):
            raise TopologyError(f"vault {name!r} is taken or not a valid vault name")
        taken.add(name.lower())
        home["resource_groups"].append({"name": f"rg-{name}", "vaults": [{"name": name}]})
        copied.setdefault("role_assignments", []).extend({**a, "scope": f"vault:{name}"} for a in assignments)
        copied.setdefault("event_subscriptions", []).extend(
            {**s, "name": f"{name}-{s['name']}", "vault": name} for s in subscriptions
        )
    return copied


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
