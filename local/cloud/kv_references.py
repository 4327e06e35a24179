"""App Service Key Vault references in a site's app settings, resolved as App Service does.

A setting whose value is ``@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/[<version>])``
or ``@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])`` reaches
the app as the secret's value, read with the site's identity. What App Service does, and so this:

- A resolved value is cached for up to 24 hours; a restart of the site does not fetch it again,
  a change of the site's configuration (its app settings) does.
- A reference that cannot be resolved (no such vault or secret, a disabled version, an identity
  without access) reaches the app as the reference text itself.

The hub reads the same syntax (``rotation.consumers.reference_to``); this stand-in for App
Service parses it on its own on purpose, so a parsing mistake in the hub cannot agree with
itself in the tests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

REFERENCE_CACHE_SECONDS = 24 * 3600.0

_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\((?P<body>[^)]*)\)$", re.IGNORECASE)
_SECRET_URI = re.compile(
    r"^https://(?P<vault>[a-z0-9-]{3,24})\.[a-z0-9.-]+/secrets/(?P<name>[a-z0-9-]{1,127})(?:/(?P<version>[0-9a-f]{32})?)?/?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Reference:
    vault: str
    secret: str
    version: str | None = None


def parse_reference(value: str) -> Reference | None:
    """The reference a setting's value makes, or None (a plain value, or not a form App Service reads)."""
    match = _REFERENCE.match(value.strip())
    if match is None:
        return None
    parts: dict[str, str] = {}
    for item in match["body"].split(";"):
        key, sep, val = item.partition("=")
        if sep:
            parts[key.strip().lower()] = val.strip()
    if "secreturi" in parts:
        uri = _SECRET_URI.match(parts["secreturi"])
        if uri is None:
            return None
        return Reference(uri["vault"].lower(), uri["name"], uri["version"] or None)
    if "vaultname" in parts and "secretname" in parts:
        return Reference(parts["vaultname"].lower(), parts["secretname"], parts.get("secretversion") or None)
    return None


# Reads one secret as one of the site's identities: (reference, identity names) -> value or None.
SecretReader = Callable[[Reference, tuple[str, ...]], str | None]


@dataclass
class ReferenceCache:
    """One site's resolved references: reference text -> (value, when it was fetched)."""

    entries: dict[str, tuple[str, float]] = field(default_factory=dict)

    def clear(self) -> None:
        self.entries.clear()

    def resolve(
        self,
        settings: Mapping[str, str],
        identities: tuple[str, ...],
        read: SecretReader,
        *,
        now: float | None = None,
    ) -> dict[str, str]:
        """The settings as the app sees them: each reference replaced by its (cached) value."""
        moment = time.time() if now is None else now
        resolved: dict[str, str] = {}
        for name, value in settings.items():
            reference = parse_reference(value)
            if reference is None:
                resolved[name] = value
                continue
            cached = self.entries.get(value)
            if cached is None or moment - cached[1] >= REFERENCE_CACHE_SECONDS:
                fetched = read(reference, identities)
                if fetched is None:
                    resolved[name] = value  # unresolved: the app sees the reference text
                    continue
                cached = (fetched, moment)
                self.entries[value] = cached
            resolved[name] = cached[0]
        return resolved
