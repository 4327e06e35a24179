"""Target ``storage-account-key``: one of a storage account's two access keys.

Every account has two keys, ``key1`` and ``key2``. Regenerating one invalidates it, and every
SAS signed with it, at once, and nothing restores it. So each rotation regenerates the key the
secret's current version does **not** hold: consumers of the current version are unaffected,
and the key the new version holds stays valid until the following rotation regenerates it in
turn (an ``IssuingTarget`` whose issue cannot be undone: see ``rotation.targets.base``).

Tags (validated here, without calling Azure):

- ``rotation-credential``: the storage account's ARM id; its subscription must be on
  ``ROTATION_ALLOWED_SUBSCRIPTIONS``.
- ``rotation-provider``: left out (the id says everything).
- ``rotation-format``: ``connection-string`` (the default; Azure Storage's own syntax, as the
  portal shows it) or ``key`` (the key alone).
- ``rotation-admin``: left out (or ``managed-identity``): the hub acts as its identity, which
  holds the "Storage Account Key Operator Service Role" on the account (listKeys, regenerateKey)
  and "Reader" (the account's settings).

Which key a version holds is found by comparing its value with ``listKeys`` inside the activity
(the first rotation of a secret written by hand needs nothing else) and recorded on the new
version as ``rotation-credential-id: key1|key2``. A new key is proved by a real data-plane call,
listing the account's containers with it (Shared Key, checked by the storage service).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import StorageAccount, StorageAccountRegenerateKeyParameters
from azure.mgmt.storage.models import StorageAccountKey as StorageAccountKeyModel
from azure.storage.blob import BlobServiceClient

from rotation import access, clients
from rotation.azure_errors import translated
from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    TargetError,
    TransientError,
    VerificationFailed,
)
from rotation.model import check_subscription_id
from rotation.settings import Settings
from rotation.targets import IssuingTargetType
from rotation.targets.base import CredentialInfo, IssuedCredential, SecretValue, TargetSpec
from rotation.targets.logins import check_admin

logger = logging.getLogger(__name__)

KIND = "storage-account-key"
FORMATS = ("connection-string", "key")
KEY_NAMES = ("key1", "key2")
REGENERATE_KEY = "Microsoft.Storage/storageAccounts/regeneratekey/action"
ARM = "Azure Resource Manager"
ROLE_HINT = (
    "the hub's identity needs the Storage Account Key Operator Service Role on the account "
    "(listKeys, regenerateKey) and Reader (its settings), or the account does not exist (ARM "
    "answers 403 for a resource its caller may not see)"
)
IRREVERSIBLE = (
    "a regenerated storage key cannot be restored; the key the current version holds was not "
    "regenerated and still works"
)
KEEPS_PREVIOUS = "the previous key stays valid until the next rotation regenerates it"
# Waits between verification attempts, growing while the key is refused or the endpoint is down.
VERIFY_PAUSE_SECONDS = 1.0
VERIFY_BACKOFF_MAX_SECONDS = 10.0

_ACCOUNT_ID = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[-\w.()]{1,90})"
    r"/providers/Microsoft\.Storage/storageAccounts/(?P<account>[^/]+)",
    re.IGNORECASE,
)
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")


def _parse_account_id(arm_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, account) of a storage account's ARM id.

    Raises:
        InvalidRequest: naming ``rotation-credential``.
    """
    found = _ACCOUNT_ID.fullmatch(arm_id.strip())
    if not found:
        raise InvalidRequest(
            f"rotation-credential {arm_id!r} is not a storage account's ARM id (/subscriptions/<id>/"
            "resourceGroups/<rg>/providers/Microsoft.Storage/storageAccounts/<name>)"
        )
    account = found["account"]
    if not _ACCOUNT_NAME.fullmatch(account):
        raise InvalidRequest(
            f"rotation-credential names storage account {account!r}: an account name is 3 to 24 "
            "lowercase letters and digits"
        )
    try:
        subscription = check_subscription_id(found["subscription"])
    except InvalidRequest as exc:
        raise InvalidRequest(f"rotation-credential: {exc.detail}") from None
    return subscription, found["group"], account


def validate(spec: TargetSpec) -> None:
    """Check the tags of a ``storage-account-key`` secret.

    Raises:
        InvalidRequest: naming the tag at fault.
    """
    if spec.provider:
        raise InvalidRequest(
            f"rotation-provider does not apply to {KIND}: rotation-credential (the account's ARM id) "
            "names the account; leave rotation-provider out"
        )
    _parse_account_id(spec.credential)
    check_admin(spec, modes=("self", "managed-identity"))


# -- Azure Storage connection strings ---------------------------------------------------------------
# Keys are base64 and account names [a-z0-9], so neither ever needs quoting; a value the hub
# reads back may have been written by hand, though, so the parser is strict and never echoes it.

SERVICES = ("blob", "queue", "table", "file")


def connection_string(account: str, key: SecretValue, endpoints: Mapping[str, str]) -> SecretValue:
    """Azure Storage's connection string for ``account``, as the portal shows it.

    ``endpoints`` maps services (``SERVICES``) to the account's primary endpoints. Endpoints of
    the usual form ``https://<account>.<service>.<suffix>/`` give ``EndpointSuffix``; any other
    form (Azure DNS zone endpoints, an emulator) is named service by service.
    """
    blob = urlsplit(endpoints.get("blob", ""))
    host = (blob.hostname or "").lower()
    prefix = f"{account}.blob."
    parts = [
        f"DefaultEndpointsProtocol={blob.scheme or 'https'}",
        f"AccountName={account}",
        f"AccountKey={key.reveal()}",
    ]
    if host.startswith(prefix) and blob.port is None and blob.path in ("", "/"):
        parts.append(f"EndpointSuffix={host[len(prefix) :]}")
    else:
        parts += [f"{s.capitalize()}Endpoint={endpoints[s]}" for s in SERVICES if endpoints.get(s)]
    return SecretValue(";".join(parts))


def key_in(value: SecretValue, value_format: str, account: str) -> str:
    """The account key a secret's value holds (``rotation-format`` ``key`` or ``connection-string``).

    Raises:
        InvalidRequest: the value is not of its format, or a connection string of another account
            (the message never holds any part of the value).
    """
    if value_format == "key":
        return value.reveal().strip()
    pairs: dict[str, str] = {}
    for part in value.reveal().strip().strip(";").split(";"):
        name, sep, text = part.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest(
                "rotation-format connection-string: the value is not an Azure Storage connection "
                "string (name=value pairs separated by ';')"
            )
        pairs[name.strip().lower()] = text.strip()
    named = pairs.get("accountname", "")
    if not named:
        raise InvalidRequest(
            "rotation-format connection-string: the value is not an Azure Storage connection string "
            "(it has no AccountName)"
        )
    if named.lower() != account:
        raise InvalidRequest(
            f"the value's AccountName is not {account!r}, the account of rotation-credential"
        )
    if not pairs.get("accountkey"):
        raise InvalidRequest("rotation-format connection-string: the value has no AccountKey")
    return pairs["accountkey"]


class StorageAccountKey:
    """One storage account's keys (see ``rotation.targets.base.IssuingTarget``)."""

    def __init__(
        self,
        spec: TargetSpec,
        settings: Settings,
        management: Callable[[str], StorageManagementClient],
        value_format: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate(spec)
        if value_format not in FORMATS:
            raise InvalidRequest(f"rotation-format of {KIND} must be one of {', '.join(FORMATS)}")
        self.subscription, self.group, self.account = _parse_account_id(spec.credential)
        if self.subscription not in settings.allowed_subscriptions:
            raise InvalidRequest(
                f"storage account {self.account} is in subscription {self.subscription}, which is not "
                "on ROTATION_ALLOWED_SUBSCRIPTIONS"
            )
        self.value_format = value_format
        self.account_id = spec.credential.strip()
        self._settings = settings
        self._management = management
        self._timeout = settings.storage_verify_timeout_seconds
        self._sleep = sleep
        self._clock = clock

    # -- Azure Resource Manager --------------------------------------------------------------------

    @contextmanager
    def _arm(self, what: str) -> Iterator[StorageManagementClient]:
        """The management client, with ARM's errors translated; a refusal names the roles."""
        try:
            with translated(f"{what} of storage account {self.account}", service=ARM):
                yield self._management(self.subscription)
        except AuthenticationFailed as exc:
            raise AuthenticationFailed(f"{exc.detail}: {ROLE_HINT}") from None
        except NotFound:
            raise InvalidRequest(
                f"storage account {self.account} was not found in resource group {self.group} of "
                f"subscription {self.subscription} (rotation-credential)"
            ) from None

    def _properties(self) -> StorageAccount:
        with self._arm("reading the settings") as arm:
            account = arm.storage_accounts.get_properties(self.group, self.account)
        props = account.properties
        if props is not None and props.allow_shared_key_access is False:
            raise TargetError(
                f"storage account {self.account} has allowSharedKeyAccess false: no client can use its "
                "keys, so rotating one would serve nothing; rotate only accounts whose keys are used"
            )
        return account

    def _keys(self) -> dict[str, SecretValue]:
        with self._arm("listing the keys") as arm:
            listed = arm.storage_accounts.list_keys(self.group, self.account)
        return self._named(listed.keys_property)

    def _named(self, keys: Sequence[StorageAccountKeyModel] | None) -> dict[str, SecretValue]:
        found = {
            str(k.key_name).lower(): SecretValue(str(k.value)) for k in keys or [] if k.key_name and k.value
        }
        if set(found) != set(KEY_NAMES):
            raise TargetError(
                f"storage account {self.account} lists keys {', '.join(sorted(found)) or 'none'}, "
                f"not {' and '.join(KEY_NAMES)}"
            )
        return found

    def _blob_endpoint(self, account: StorageAccount) -> str:
        endpoints = account.properties.primary_endpoints if account.properties else None
        if endpoints is None or not endpoints.blob:
            raise TargetError(f"storage account {self.account} has no blob endpoint to prove a key against")
        return str(endpoints.blob)

    # -- values ------------------------------------------------------------------------------------

    def _value(self, key: SecretValue, account: StorageAccount) -> SecretValue:
        if self.value_format == "key":
            return key
        endpoints = account.properties.primary_endpoints if account.properties else None
        found = {s: str(getattr(endpoints, s, None) or "") for s in SERVICES}
        return connection_string(self.account, key, found)

    def _held_by(self, value: SecretValue, keys: dict[str, SecretValue]) -> str:
        """The name of the key ``value`` holds, compared in constant time.

        Raises:
            InvalidRequest: it holds neither (regenerated by someone else, or another account's).
        """
        key = key_in(value, self.value_format, self.account).encode()
        for name, listed in keys.items():
            if hmac.compare_digest(listed.reveal().encode(), key):
                return name
        raise InvalidRequest(
            f"the secret's current value holds neither key of storage account {self.account}: "
            "a key was regenerated outside the hub, or the value is another account's; write the "
            "account's current key1 or key2 to the secret, then rotate"
        )

    # -- the IssuingTarget protocol ----------------------------------------------------------------

    def check(self, *, current: SecretValue) -> str:
        """The account exists, its keys may be used, the hub may regenerate them, and the current
        value holds one of them. Changes nothing.

        Raises:
            InvalidRequest: the tags or the value do not describe a key of the account.
            TargetError: the account has allowSharedKeyAccess false.
            AuthenticationFailed: the hub lacks a role (named).
        """
        self._blob_endpoint(self._properties())
        held = self._held_by(current, self._keys())
        # Regenerating cannot be tried without doing it: ARM says whether the hub may.
        with self._arm("reading the hub's permissions"):
            may = access.permissions_on(self.account_id, self._settings).allows(REGENERATE_KEY)
        if not may:
            raise AuthenticationFailed(
                f"the hub may list the keys of storage account {self.account} but not regenerate them "
                f"({REGENERATE_KEY}): {ROLE_HINT}"
            )
        logger.info("storage account %s: the current version holds %s", self.account, held)
        return (
            f"storage account {self.account} allows Shared Key, the hub may read it and list its keys, "
            f"and the current value holds {held}"
        )

    def credentials(self) -> list[CredentialInfo]:
        return [CredentialInfo(credential_id=name, label=name) for name in self._keys()]

    def issued(self, *, label: str) -> list[str]:
        # Keys carry no label; a key regenerated by an interrupted attempt is simply regenerated
        # again by the next one (it is never the current version's).
        return []

    def issue(self, *, label: str, expires_on: datetime, current: SecretValue | None) -> IssuedCredential:
        """Regenerate the key ``current`` does not hold; the value holds the new key.

        Raises:
            InvalidRequest: ``current`` is missing or holds neither key (nothing is regenerated).
        """
        if current is None:
            raise InvalidRequest(f"{KIND} needs the current value to know which key it holds")
        account = self._properties()
        self._blob_endpoint(account)  # checked before the regeneration, which nothing undoes
        held = self._held_by(current, self._keys())
        other = next(name for name in KEY_NAMES if name != held)
        with self._arm(f"regenerating {other}") as arm:
            result = arm.storage_accounts.regenerate_key(
                self.group, self.account, StorageAccountRegenerateKeyParameters(key_name=other)
            )
        new_key = self._named(result.keys_property)[other]
        logger.info(
            "storage account %s: regenerated %s (the current version holds %s)", self.account, other, held
        )
        return IssuedCredential(value=self._value(new_key, account), credential_id=other)

    def withdraw(self, *, credential_id: str) -> bool:
        # Never called (the type says the issue cannot be undone); regenerating it again would
        # not restore anything either.
        return False

    def verify(self, *, value: SecretValue) -> None:
        """List the account's containers with the value's key until the blob endpoint accepts it.

        Raises:
            VerificationFailed: still refused when ROTATION_STORAGE_VERIFY_TIMEOUT_SECONDS ran out.
            TransientError: the blob endpoint could not be reached for as long.
        """
        endpoint = (
            None if self.value_format == "connection-string" else self._blob_endpoint(self._properties())
        )
        deadline = self._clock() + self._timeout
        refusals, unreachable, backoff = 0, 0, VERIFY_PAUSE_SECONDS
        last = ""
        while True:
            outcome = self._list_containers(value, endpoint)
            if outcome is None:
                logger.info(
                    "storage account %s: the new key lists containers (%d refusals before)",
                    self.account,
                    refusals,
                )
                return
            kind, last = outcome
            if kind == "refused":
                refusals += 1
            else:
                unreachable += 1
            if self._clock() + backoff > deadline:
                break
            self._sleep(backoff)
            backoff = min(backoff * 2, VERIFY_BACKOFF_MAX_SECONDS)
        if refusals == 0:
            raise TransientError(
                f"storage account {self.account}: the blob endpoint could not be reached for "
                f"{self._timeout:g}s ({last})"
            )
        raise VerificationFailed(
            f"storage account {self.account} does not accept the new key after {self._timeout:g}s "
            f"({refusals} refusals, last: {last})"
        )

    def _list_containers(self, value: SecretValue, endpoint: str | None) -> tuple[str, str] | None:
        """None when the key lists containers; else ("refused"|"unreachable", the service's code)."""
        # One attempt per call: this loop does the waiting, the SDK's own retries would hide it.
        options: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}
        if endpoint is None:
            client = BlobServiceClient.from_connection_string(value.reveal(), **options)
        else:
            client = BlobServiceClient(
                endpoint, credential={"account_name": self.account, "account_key": value.reveal()}, **options
            )
        try:
            with client:
                next(iter(client.list_containers(results_per_page=1).by_page()), None)
        except ClientAuthenticationError as exc:
            return "refused", str(
                getattr(exc, "error_code", None) or exc.status_code or "AuthenticationFailed"
            )
        except HttpResponseError as exc:
            status = exc.status_code or 0
            code = str(getattr(exc, "error_code", None) or status)
            if status in (401, 403):
                return "refused", code
            if status == 429 or status >= 500:
                return "unreachable", code
            raise TargetError(
                f"storage account {self.account}: the blob endpoint answered {status} {code}"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            return "unreachable", type(exc).__name__
        return None


def build(
    spec: TargetSpec, settings: Settings, credential: TokenCredential, value_format: str
) -> StorageAccountKey:
    """Raises InvalidRequest when the spec's tags are malformed or its subscription not allowed.

    ``credential`` is the hub's identity; the management client shared by the process
    (``rotation.clients``) already holds it."""
    return StorageAccountKey(
        spec, settings, lambda subscription: clients.storage_client(subscription, settings), value_format
    )


TARGET_TYPE = IssuingTargetType(
    name=KIND,
    build=build,
    validate=validate,
    default_overlap_hours=0.0,
    formats=FORMATS,
    requires_provider=False,
    irreversible=IRREVERSIBLE,
    keeps_previous=KEEPS_PREVIOUS,
)
