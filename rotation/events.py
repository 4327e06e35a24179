"""Key Vault events from Event Grid, parsed tolerantly and trusted for nothing (DESIGN.md 3.6).

Accepts the Event Grid and the CloudEvents schema as plain dicts. The vault is identified by
its ARM id (``topic``/``source``), the subscription must be on the allowlist, names are checked
against Key Vault's rules, and ``data.Id`` (if present) must point at the vault the topic names
under this cloud's DNS suffix: a payload that disagrees with itself starts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from rotation.errors import InvalidRequest, NotAllowed
from rotation.model import SecretRef, VaultId, check_secret_name, check_version, is_companion_name
from rotation.settings import Settings

HANDLED_TYPES = ("Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired")


class Ignored(Exception):
    """A well-formed event the hub does not act on; the message says why."""


@dataclass(frozen=True)
class SecretEvent:
    event_id: str
    event_type: str
    secret: SecretRef
    version: str
    expires_at: float | None
    vault: VaultId  # as the topic names it; confirm_vault asks ARM whether it is really there


def check_allowed(subscription_id: str, settings: Settings) -> None:
    """Raises NotAllowed unless the subscription is on ROTATION_ALLOWED_SUBSCRIPTIONS.

    This checks an id someone gave; whether the vault is really there is
    ``rotation.vault_location.confirm_vault``'s question."""
    if subscription_id.lower() not in settings.allowed_subscriptions:
        raise NotAllowed(f"subscription {subscription_id} is not on the allowlist")


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _epoch(value: object) -> float | None:
    # Documented as numbers, sent as strings in the docs' own sample, sometimes absent or null.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def parse_event(event: Mapping[str, object], settings: Settings) -> SecretEvent:
    """Check one event and say which secret version it is about.

    Raises:
        Ignored: an event type or object the hub does not rotate (another type, a companion).
        InvalidRequest: a malformed or untrustworthy event (the message says what is wrong).
    """
    if not isinstance(event, Mapping):
        raise InvalidRequest("the event is not a JSON object")
    top = {str(k).strip(): v for k, v in event.items()}
    event_type = _text(top.get("eventType") or top.get("type"))
    if event_type not in HANDLED_TYPES:
        raise Ignored(f"event type {event_type or '(none)'!r} is not handled")
    vault = VaultId.parse(_text(top.get("topic") or top.get("source")), what="event topic")
    check_allowed(vault.subscription_id, settings)

    raw_data = top.get("data")
    if not isinstance(raw_data, Mapping):
        raise InvalidRequest("the event has no data object")
    data = {str(k).strip().lower(): v for k, v in raw_data.items()}

    object_type = _text(data.get("objecttype"))
    if object_type and object_type.lower() != "secret":
        raise Ignored(f"object type {object_type!r} is not a secret")
    name = _text(data.get("objectname")) or _text(top.get("subject"))
    check_secret_name(name)
    subject = _text(top.get("subject"))
    if subject and subject.lower() != name.lower():
        raise InvalidRequest(f"subject {subject!r} and data.ObjectName {name!r} disagree")
    vault_name = _text(data.get("vaultname"))
    if vault_name and vault_name.lower() != vault.vault_name:
        raise InvalidRequest(
            f"data.VaultName {vault_name!r} is not the vault of the topic ({vault.vault_name!r})"
        )
    version = check_version(_text(data.get("version")))

    object_id = _text(data.get("id"))
    if object_id:
        url = urlsplit(object_id)
        expected_host = f"{vault.vault_name}.{settings.keyvault_dns_suffix}"
        if url.scheme != "https" or (url.hostname or "").lower() != expected_host:
            raise InvalidRequest(f"data.Id points at {url.hostname or object_id!r}, not at {expected_host!r}")
        parts = [p for p in url.path.split("/") if p]
        if (
            len(parts) != 3
            or parts[0] != "secrets"
            or parts[1].lower() != name.lower()
            or parts[2].lower() != version
        ):
            raise InvalidRequest("data.Id does not name the same secret and version as the event")

    secret = SecretRef(subscription_id=vault.subscription_id, vault_name=vault.vault_name, secret_name=name)
    if is_companion_name(name):
        raise Ignored(f"secret {name!r} is a pending companion")
    return SecretEvent(
        event_id=_text(top.get("id")),
        event_type=event_type.rsplit(".", 1)[-1],
        secret=secret,
        version=version,
        expires_at=_epoch(data.get("exp")),
        vault=vault,
    )
