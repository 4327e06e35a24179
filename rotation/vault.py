"""Key Vault operations the rotation needs, on top of azure-keyvault-secrets.

Azure SDK errors become the domain's errors in ``rotation.azure_errors``; messages name the
vault, the secret and the version, never a value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.secrets import SecretClient, SecretProperties
from cachetools import TTLCache

from rotation.azure_errors import translated
from rotation.errors import InvalidRequest
from rotation.targets.base import SecretValue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """A secret version's properties, without its value."""

    name: str
    version: str
    enabled: bool
    expires_on: datetime | None
    created_on: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


def _info(props: SecretProperties) -> VersionInfo:
    return VersionInfo(
        name=props.name or "",
        version=props.version or "",
        enabled=bool(props.enabled),
        expires_on=props.expires_on,
        created_on=props.created_on,
        tags=dict(props.tags or {}),
        content_type=props.content_type,
    )


# A read remembered by a memoizing Vault: (name, version or None for the latest).
_ReadKey = tuple[str, str | None]
_Read = tuple[VersionInfo, SecretValue | None]


class VersionCache:
    """Secret versions this process read or wrote, by vault, name and version id, for
    ``ttl_seconds``: a rotation's later steps (apply, verify, promote) ask for the version plan
    read and the one stage wrote, and Key Vault bills and throttles every request. Safe across
    activities because what a version id names never changes in Key Vault: its value is fixed
    when it is written, and only its attributes (enabled, expiry, tags) can be updated, which
    this hub does through ``Vault.disable``/``enable`` (they forget the version here). The
    latest version is never served from here: it is always asked for. Values stay in memory
    only, never longer than ``ttl_seconds`` (``ROTATION_KEYVAULT_CACHE_SECONDS``; 0 keeps none).
    """

    def __init__(
        self, ttl_seconds: float, *, max_versions: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: TTLCache[tuple[str, str, str], _Read] | None = (
            TTLCache(maxsize=max_versions, ttl=ttl_seconds, timer=clock) if ttl_seconds > 0 else None
        )
        # Activities run in threads of one worker process.
        self._lock = threading.Lock()

    def get(self, vault: str, name: str, version: str) -> _Read | None:
        if self._entries is None:
            return None
        with self._lock:
            return self._entries.get((vault, name, version))

    def put(self, vault: str, read: _Read) -> None:
        if self._entries is not None and read[0].enabled:
            with self._lock:
                self._entries[(vault, read[0].name, read[0].version)] = read

    def forget(self, vault: str, name: str, version: str) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries.pop((vault, name, version), None)


class Vault:
    """One spoke vault, reached with the hub's identity.

    ``memoizing()`` gives the same vault for one activity, which remembers what it read: a step
    asks for the same version (its tags, the current value, the pending value) in several places,
    and Key Vault bills and throttles every request. Its own writes forget what they change.
    With ``versions``, reads by version id are also shared with the other activities of this
    process (``VersionCache``).
    """

    def __init__(
        self,
        client: SecretClient,
        *,
        vault_name: str,
        memoize: bool = False,
        versions: VersionCache | None = None,
    ) -> None:
        self._client = client
        self.vault_name = vault_name
        self._reads: dict[_ReadKey, _Read] | None = {} if memoize else None
        self._versions = versions

    def memoizing(self) -> Vault:
        """This vault, remembering each read until it writes to that secret. For one activity
        only: another writer (an operator, another rotation) is not seen while it remembers."""
        return Vault(self._client, vault_name=self.vault_name, memoize=True, versions=self._versions)

    def _read(self, name: str, version: str | None) -> _Read:
        if self._reads is not None and (name, version) in self._reads:
            return self._reads[(name, version)]
        shared = None
        if version is not None and self._versions is not None:
            shared = self._versions.get(self.vault_name, name, version)
        if shared is not None:
            read = shared
        else:
            with translated(self._what(name, version)):
                secret = self._client.get_secret(name, version)
            read = (_info(secret.properties), None if secret.value is None else SecretValue(secret.value))
            self._share(read)
        if self._reads is not None:
            self._reads[(name, version)] = read
            # The latest is also that version, should a step ask for it by its id.
            self._reads.setdefault((name, read[0].version), read)
        return read

    def _share(self, read: _Read) -> None:
        if self._versions is not None:
            self._versions.put(self.vault_name, read)

    def _forget(self, name: str, version: str | None = None) -> None:
        if self._reads is not None:
            self._reads.pop((name, None), None)
            if version is not None:
                self._reads.pop((name, version), None)
        if self._versions is not None and version is not None:
            self._versions.forget(self.vault_name, name, version)

    def _what(self, name: str, version: str | None = None) -> str:
        return f"secret {name!r}{f' version {version}' if version else ''} in vault {self.vault_name!r}"

    def current(self, name: str) -> VersionInfo:
        """The version Key Vault serves as latest.

        Raises:
            InvalidRequest: no such secret, or its latest version is disabled.
        """
        # The value is not handed out here: callers only wanted the properties.
        info, _ = self._read(name, None)
        return info

    def get(self, name: str, version: str | None = None) -> tuple[VersionInfo, SecretValue]:
        """One version (the latest when ``version`` is None) with its value.

        Raises:
            InvalidRequest: no such version, or it is disabled.
        """
        info, value = self._read(name, version)
        if value is None:
            raise InvalidRequest(f"{self._what(name, version)} has no value")
        return info, value

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, newest first; empty when the secret does not exist."""
        with translated(self._what(name)):
            try:
                found = [_info(p) for p in self._client.list_properties_of_secret_versions(name)]
            except ResourceNotFoundError:
                return []
        return sorted(found, key=lambda v: v.created_on.timestamp() if v.created_on else 0.0, reverse=True)

    def write(
        self,
        name: str,
        value: SecretValue,
        *,
        tags: Mapping[str, str],
        expires_on: datetime,
        content_type: str | None = None,
    ) -> VersionInfo:
        """Write a new, enabled version of ``name``."""
        with translated(self._what(name), write=True):
            secret = self._client.set_secret(
                name,
                value.reveal(),
                tags=dict(tags),
                expires_on=expires_on,
                content_type=content_type,
                enabled=True,
                # The SDK would resend a write that timed out or was throttled: a second version
                # when the first landed after all. The step's retry checks what landed first.
                retry_total=0,
            )
        info = _info(secret.properties)
        self._forget(name)
        # The next step asks for the version written (the pending value): it is this value.
        self._share((info, value))
        logger.info("wrote secret %s version %s in vault %s", name, info.version, self.vault_name)
        return info

    def disable(self, name: str, version: str) -> None:
        with translated(self._what(name, version)):
            self._client.update_secret_properties(name, version, enabled=False)
        self._forget(name, version)
        logger.info("disabled secret %s version %s in vault %s", name, version, self.vault_name)

    def enable(self, name: str, version: str, *, expires_on: datetime) -> None:
        with translated(self._what(name, version)):
            self._client.update_secret_properties(name, version, enabled=True, expires_on=expires_on)
        self._forget(name, version)
        logger.info("enabled secret %s version %s in vault %s", name, version, self.vault_name)

    def list_secrets(self) -> list[VersionInfo]:
        """Every secret's latest properties (tags, expiry, enabled); versions are left empty."""
        with translated(f"secrets of vault {self.vault_name!r}"):
            return [_info(p) for p in self._client.list_properties_of_secrets()]
