"""Incidents: rotate every tagged secret in a scope now, within concurrency bounds.

The records here cross the durable boundary (the incident orchestration's input, the listing
activity's input and output): names, versions, target kinds and servers, never a value. The
listing applies the same checks as every other starter (opted in, not a companion, tags valid)
and the incident's filters; the scheduling picks what may start next without exceeding the
per-vault and per-server bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rotation import metadata
from rotation.errors import InvalidRequest
from rotation.model import Record, RotationPolicy, SecretRef, VaultId, is_companion_name
from rotation.vault import VersionInfo

INCIDENT_PREFIX = "incident_"
# The external event that steers a running incident: {"action": "pause"|"resume"|"cancel", "by": ...}.
CONTROL_EVENT = "IncidentControl"
# The starter's word that no older incident overlaps this one. It checks again after creating
# the instance, so two requests arriving at once cannot both pass the check: the younger one
# ends (Terminated) before it lists anything. Without the word (a starter that died between the
# two), the incident ends "not admitted" after this long and changes nothing.
ADMIT_EVENT = "IncidentAdmitted"
ADMISSION_TIMEOUT_MINUTES = 5
# The incident's state until its starter admitted it; how long another starter waits for that.
ADMITTING = "admitting"
ADMISSION_WAIT_SECONDS = 30.0
CONTROL_ACTIONS = ("pause", "resume", "cancel")
# At most this many secrets per incident: the listing's result and every sub-orchestration's
# events are in the incident's history; a larger scope is split into several incidents.
MAX_SECRETS = 5000
# Completions per execution before the incident continues as new, keeping its history small:
# every episode replays the whole execution, so at 200 an incident over 1,000 secrets spent most
# of the host's time replaying (benchmarks/incident_rotation.py: 148-168 ms an episode; 65 at 50).
COMPLETIONS_PER_EXECUTION = 50
# Failures named in the status (the counts hold them all; the status must stay small).
MAX_FAILURES_SHOWN = 20


@dataclass(frozen=True)
class IncidentItem(Record):
    """One secret the incident rotates: where it is, its current version, what it changes."""

    subscription_id: str
    vault_name: str
    secret_name: str
    version: str
    target_kind: str
    server: str

    @property
    def secret(self) -> SecretRef:
        return SecretRef(self.subscription_id, self.vault_name, self.secret_name)

    @property
    def rotation_id(self) -> str:
        return self.secret.rotation_id(self.version)


@dataclass(frozen=True)
class IncidentScope(Record):
    """What to list: vaults by ARM id, and the filters (empty: no filter)."""

    vaults: tuple[str, ...]
    # "name=value" pairs, all of which a secret's tags must hold.
    tags: tuple[str, ...] = ()
    # rotation-target kinds, any of which the secret's must be.
    target_kinds: tuple[str, ...] = ()
    # target servers (server_of), any of which the secret's must be.
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Excluded(Record):
    """A tagged secret in scope that the incident does not rotate, and why."""

    vault_name: str
    secret_name: str
    reason: str


@dataclass(frozen=True)
class IncidentListing(Record):
    items: tuple[IncidentItem, ...]
    excluded: tuple[Excluded, ...] = ()


@dataclass(frozen=True)
class IncidentProgress(Record):
    """What one execution hands the next when the incident continues as new."""

    remaining: tuple[IncidentItem, ...]
    counts: tuple[VaultCounts, ...]
    failures: tuple[IncidentFailure, ...] = ()
    cancelled_by: str | None = None
    paused_by: str | None = None
    excluded: int = 0
    # The first MAX_FAILURES_SHOWN of them, with why.
    excluded_shown: tuple[Excluded, ...] = ()
    executions: int = 1


@dataclass(frozen=True)
class VaultCounts(Record):
    vault_name: str
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class IncidentFailure(Record):
    vault_name: str
    secret_name: str
    rotation_id: str
    result: str
    detail: str


@dataclass(frozen=True)
class IncidentRequest(Record):
    """The incident orchestration's input."""

    scope: IncidentScope
    # What the operator called the scope ("vault spoke-kv", "subscription ...", "all configured vaults").
    scope_text: str
    reason: str
    requested_by: str
    policy: RotationPolicy
    max_per_vault: int
    max_per_server: int
    requested_by_id: str | None = None
    # True: approval tags are waived for this incident's rotations (recorded with the requester).
    waive_approval: bool = False
    progress: IncidentProgress | None = None
    # Not set by the API: a test lowers it to see the incident continue as new.
    completions_per_execution: int = COMPLETIONS_PER_EXECUTION


def server_of(tags: Mapping[str, str] | None) -> str:
    """The target server a secret's rotation talks to: the concurrency key per server.

    ``host:port`` of a database provider (several databases on one server share it), an ARM id
    as it is, and for targets without a provider (Entra applications) the target kind itself:
    they all go to the same service.
    """
    t = {k.lower(): (v or "").strip() for k, v in (tags or {}).items()}
    provider = t.get(metadata.PROVIDER, "")
    if provider.startswith("/"):
        return provider.lower()
    if provider:
        return provider.split("/", 1)[0].lower()
    return t.get(metadata.TARGET, "").lower()


def parse_tag_filter(pairs: Iterable[str]) -> dict[str, str]:
    """``name=value`` pairs as a dict. Raises InvalidRequest naming the malformed pair."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(f"tag filter {pair!r} must be name=value")
        parsed[name.strip().lower()] = value.strip()
    return parsed


def select(
    vault: VaultId,
    listed: Iterable[VersionInfo],
    scope: IncidentScope,
    current: Callable[[str], VersionInfo],
) -> IncidentListing:
    """The secrets of one vault the incident rotates, and the tagged ones it leaves out (why).

    ``listed`` are the vault's secrets as listed (latest properties, no versions); ``current``
    reads one secret's current version (the listing does not carry it). Same checks as the
    other starters: enabled, not a companion, opted in, valid tags. A secret the filters leave
    out is simply not in scope (not listed as excluded).

    Raises:
        InvalidRequest: a malformed tag filter.
        TransientError: the vault could not be read now.
    """
    wanted_tags = parse_tag_filter(scope.tags)
    items: list[IncidentItem] = []
    excluded: list[Excluded] = []
    for info in listed:
        if is_companion_name(info.name) or not metadata.is_opted_in(info.tags):
            continue
        tags = {k.lower(): (v or "").strip() for k, v in (info.tags or {}).items()}
        if any(tags.get(name) != value for name, value in wanted_tags.items()):
            continue
        kind = tags.get(metadata.TARGET, "")
        server = server_of(info.tags)
        if scope.target_kinds and kind not in scope.target_kinds:
            continue
        if scope.servers and server not in scope.servers:
            continue
        if not info.enabled:
            excluded.append(Excluded(vault.vault_name, info.name, "the current version is disabled"))
            continue
        try:
            now = current(info.name)
            metadata.parse_tags(info.name, now.tags)
        except InvalidRequest as exc:  # NotFound too: deleted since the listing
            excluded.append(Excluded(vault.vault_name, info.name, exc.detail))
            continue
        items.append(
            IncidentItem(vault.subscription_id, vault.vault_name, info.name, now.version, kind, server)
        )
    return IncidentListing(tuple(items), tuple(excluded))


@dataclass
class Slots:
    """Rotations running per vault and per server, and the bounds they must stay within."""

    max_per_vault: int
    max_per_server: int
    per_vault: dict[str, int] = field(default_factory=dict)
    per_server: dict[str, int] = field(default_factory=dict)

    def fits(self, item: IncidentItem) -> bool:
        return (
            self.per_vault.get(item.vault_name, 0) < self.max_per_vault
            and self.per_server.get(item.server, 0) < self.max_per_server
        )

    def take(self, item: IncidentItem) -> None:
        self.per_vault[item.vault_name] = self.per_vault.get(item.vault_name, 0) + 1
        self.per_server[item.server] = self.per_server.get(item.server, 0) + 1

    def release(self, item: IncidentItem) -> None:
        self.per_vault[item.vault_name] -= 1
        self.per_server[item.server] -= 1


def next_to_start(queue: list[IncidentItem], slots: Slots) -> list[IncidentItem]:
    """Take from ``queue`` (in order) every item that fits the free slots; they are taken.

    One pass that keeps the rest in order: the incident calls this on every completion, in every
    replay, over a queue of up to thousands of items (``list.remove`` per item made it quadratic)."""
    chosen: list[IncidentItem] = []
    kept: list[IncidentItem] = []
    for item in queue:
        if slots.fits(item):
            slots.take(item)
            chosen.append(item)
        else:
            kept.append(item)
    queue[:] = kept
    return chosen
