"""Preflight: would this secret rotate if its event came now? Every check a rotation depends on,
run without changing anything (no Key Vault write, no change on any target, no credential
issued, no key regenerated).

Each secret gets four checks, each ``{"name", "ok", "detail"}``; every check runs even when an
earlier one failed, unless it cannot (its detail then says "not checked: <why>"):

- ``tags``: the tag contract parses (``rotation.metadata``).
- ``vault-access``: the hub reads the secret, and ARM's permissions API says it may read and
  write secrets in the vault (``rotation.access``); the companion ``<name>-pending`` is free or
  is this secret's own (tag ``rotation-of``).
- ``target``: what plan checks ahead, and the changer logs in (``rotation.steps.check_target``).
- ``consumers``: each ``rotation-consumers`` app exists and the hub may restart it.

Values are read inside the checks and never returned, logged or put into a detail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rotation import access, clients, metadata, steps
from rotation.azure_errors import translated
from rotation.consumers import SiteRef
from rotation.errors import AuthenticationFailed, InvalidRequest, NotFound, RotationError, TransientError
from rotation.model import SecretRef, StepInput, VaultId, is_companion_name
from rotation.settings import Settings
from rotation.vault import Vault, VersionInfo

logger = logging.getLogger(__name__)

TAGS = "tags"
VAULT_ACCESS = "vault-access"
TARGET = "target"
CONSUMERS = "consumers"
# A rotation id that no real rotation has: the checks compare it with tags and find nothing.
PREFLIGHT_ID = "preflight"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _not_checked(name: str, why: str) -> Check:
    return Check(name, False, f"not checked: {why}")


@dataclass(frozen=True)
class SecretReport:
    """One secret's preflight: its target kind (None when the tags do not say) and its checks."""

    secret: str
    target: str | None
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "target": self.target,
            "ok": self.ok,
            "checks": [check.to_dict() for check in self.checks],
        }


class _Cached:
    """One lookup per key for a whole preflight run (the vault's permissions are the same for
    every secret of it), safe to share between the threads that run secrets concurrently."""

    def __init__(self, lookup: Callable[[str], access.Permissions]) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._found: dict[str, access.Permissions | RotationError] = {}

    def __call__(self, key: str) -> access.Permissions:
        with self._lock:
            if key not in self._found:
                try:
                    self._found[key] = self._lookup(key)
                except RotationError as exc:
                    self._found[key] = exc
            found = self._found[key]
        if isinstance(found, RotationError):
            raise found
        return found


class VaultPreflight:
    """The preflight of the secrets of one vault, reached as the hub's identity."""

    def __init__(self, vault: VaultId, settings: Settings) -> None:
        self.vault_id = vault
        self.settings = settings
        self.vault: Vault = clients.vault_named(vault.vault_name, settings)
        self._permissions = _Cached(lambda resource: access.permissions_on(resource, settings))

    def tagged_secrets(self) -> list[str]:
        """The names of the vault's secrets tagged ``rotation-target``, companions left out.

        Raises:
            TransientError: Key Vault does not answer now. AuthenticationFailed: it refuses the hub.
        """
        return sorted(
            info.name
            for info in self.vault.list_secrets()
            if metadata.is_opted_in(info.tags) and not is_companion_name(info.name)
        )

    def run(self, name: str) -> SecretReport:
        """Every check for the secret ``name``; changes nothing.

        Raises:
            NotFound: no such secret.
            TransientError: Key Vault does not answer now (the checks could not be run).
        """
        current: VersionInfo | None = None
        unreadable = ""
        try:
            current = self.vault.current(name)
        except AuthenticationFailed as exc:
            unreadable = exc.detail
        except NotFound:
            raise
        except InvalidRequest as exc:  # a disabled latest version, for instance
            unreadable = exc.detail
        meta: metadata.RotationMetadata | None = None
        if current is None:
            tags = _not_checked(TAGS, f"the secret could not be read ({unreadable})")
        else:
            try:
                meta = metadata.parse_tags(name, current.tags)
                tags = Check(TAGS, True, _describe(meta))
            except InvalidRequest as exc:
                tags = Check(TAGS, False, exc.detail)
        checks = (
            tags,
            self._vault_access(name, current, unreadable),
            self._target(name, current, meta),
            self._consumers(
                meta, "the tags could not be read" if current is None else "the tags do not parse"
            ),
        )
        report = SecretReport(
            secret=name, target=meta.target.kind if meta else _kind_of(current), checks=checks
        )
        logger.info(
            "preflight of %s/%s: %s",
            self.vault_id.vault_name,
            name,
            "ok" if report.ok else "failing " + ", ".join(c.name for c in report.failing),
        )
        return report

    # -- the checks ----------------------------------------------------------------------------

    def _vault_access(self, name: str, current: VersionInfo | None, unreadable: str) -> Check:
        problems: list[str] = []
        found: list[str] = []
        if current is None:
            problems.append(f"the hub cannot read the secret: {unreadable}")
        else:
            found.append("the hub reads the secret")
        try:
            permissions = self._permissions(self.vault_id.arm_id)
            missing = permissions.missing((access.GET_SECRET, access.SET_SECRET), data=True)
            if missing:
                problems.append(
                    f"the hub's roles on vault {self.vault_id.vault_name!r} do not allow {', '.join(missing)} "
                    "(it needs Key Vault Secrets Officer on the vault)"
                )
            else:
                found.append("its roles on the vault allow getSecret and setSecret")
        except RotationError as exc:
            problems.append(f"the hub's permissions on the vault could not be read: {exc.detail}")
        companion = SecretRef(self.vault_id.subscription_id, self.vault_id.vault_name, name).pending_name
        try:
            problem = _companion_problem(name, companion, self.vault.versions(companion))
            if problem:
                problems.append(problem)
            else:
                found.append(f"the companion {companion!r} is free or this secret's")
        except RotationError as exc:
            problems.append(f"the companion {companion!r} could not be listed: {exc.detail}")
        return Check(VAULT_ACCESS, not problems, "; ".join(problems or found))

    def _target(
        self, name: str, current: VersionInfo | None, meta: metadata.RotationMetadata | None
    ) -> Check:
        if current is None:
            return _not_checked(TARGET, "the secret could not be read")
        if meta is None:
            return _not_checked(TARGET, "the tags do not parse")
        step = StepInput(
            rotation_id=PREFLIGHT_ID,
            secret=SecretRef(self.vault_id.subscription_id, self.vault_id.vault_name, name),
            version=current.version,
        )
        try:
            return Check(TARGET, True, steps.check_target(step, self.vault, self.settings))
        except TransientError as exc:
            return Check(TARGET, False, f"unreachable now: {exc.detail}")
        except AuthenticationFailed as exc:
            return Check(TARGET, False, f"refused: {exc.detail}")
        except RotationError as exc:
            return Check(TARGET, False, exc.detail)

    def _consumers(self, meta: metadata.RotationMetadata | None, why_not: str) -> Check:
        if meta is None:
            return _not_checked(CONSUMERS, why_not)
        if not meta.consumers:
            return Check(CONSUMERS, True, f"no {metadata.CONSUMERS}")
        problems: list[str] = []
        for consumer in meta.consumers:
            problem = self._consumer_problem(consumer)
            if problem:
                problems.append(problem)
        if problems:
            return Check(CONSUMERS, False, "; ".join(problems))
        return Check(CONSUMERS, True, f"the hub may restart {len(meta.consumers)} app(s), each exists")

    def _consumer_problem(self, consumer: str) -> str | None:
        site = SiteRef.parse(consumer)
        what = f"app {site.name!r}"
        try:
            if not self._permissions(consumer).allows(access.RESTART_SITE):
                return (
                    f"the hub may not restart {what} ({access.RESTART_SITE}; it needs Website "
                    "Contributor on the app)"
                )
            client = clients.web_client(site.subscription_id, self.settings)
            with translated(what, service=access.ARM):
                client.web_apps.get(site.resource_group, site.name)
        except NotFound:
            return f"{what} does not exist in resource group {site.resource_group!r}"
        except RotationError as exc:
            return f"{what}: {exc.detail}"
        return None


def _kind_of(current: VersionInfo | None) -> str | None:
    if current is None:
        return None
    return {k.strip().lower(): v.strip() for k, v in current.tags.items()}.get(metadata.TARGET) or None


def _describe(meta: metadata.RotationMetadata) -> str:
    parts = [f"{metadata.TARGET} {meta.target.kind}"]
    if meta.overlap_hours is None:  # a login: who changes it, and how
        admin = meta.target.admin
        parts.append(f"admin {admin.mode}" + (f" ({admin.secret_name})" if admin.secret_name else ""))
        parts.append(f"strategy {meta.strategy}")
    parts += [f"format {meta.value_format}", f"validity {meta.validity_days:g} days"]
    if meta.approval_required:
        parts.append("approval required")
    return "the tags parse: " + ", ".join(parts)


def _companion_problem(name: str, companion: str, versions: list[VersionInfo]) -> str | None:
    """Why the companion name cannot serve ``name``'s rotations, or None: it does not exist, or
    a version of it is tagged ``rotation-of: <name>`` (left by an earlier rotation)."""
    if not versions:
        return None
    for version in versions:
        tags = {k.strip().lower(): v.strip() for k, v in version.tags.items()}
        if tags.get(metadata.PENDING_OF, "").lower() == name.lower():
            return None
    return (
        f"the companion name {companion!r} is taken by a secret that is not this secret's companion "
        f"(no version tagged {metadata.PENDING_OF}: {name}); a rotation would disable its versions and "
        "write into it: rename or remove that secret"
    )


#: How many secrets' preflights run at once: each holds a thread and a few connections.
CONCURRENCY = 4


async def run_many(
    preflight: VaultPreflight, names: list[str], *, limit: int = CONCURRENCY
) -> list[SecretReport]:
    """The preflights of ``names``, at most ``limit`` at a time, in the order of ``names``. A
    secret deleted since it was listed is left out.

    Raises:
        TransientError: Key Vault does not answer now.
    """
    gate = asyncio.Semaphore(limit)

    async def one(name: str) -> SecretReport | None:
        async with gate:
            try:
                return await asyncio.to_thread(preflight.run, name)
            except NotFound:
                return None

    found = await asyncio.gather(*(one(name) for name in names))
    return [report for report in found if report is not None]
