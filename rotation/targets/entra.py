"""Target ``entra-app-secret``: an Entra application's client secret, issued by Microsoft Graph.

The hub does not choose the value: Graph's ``addPassword`` creates it and shows it once. The new
secret lives beside the previous one, which the hub removes after an overlap, when every
consumer has moved (an ``IssuingTarget``, see ``rotation.targets.base``).

Tags (validated here, without calling Graph):

- ``rotation-provider``: the tenant id (a GUID); it must be the hub identity's tenant.
- ``rotation-credential``: the application's client (app) id (a GUID).
- ``rotation-admin``: left out (or ``managed-identity``): the hub always acts as its identity,
  which holds the Graph application permission ``Application.ReadWrite.OwnedBy`` and is an
  owner of the application.
- ``rotation-overlap-hours`` (metadata): how long the previous secret stays valid.

Each credential the hub adds is labelled with the rotation's id (its ``displayName``), so a
rotation finds what an interrupted attempt added, and an operator sees who added what.

Verification uses azure-identity's ``ClientSecretCredential`` with the new secret, afresh each
time, and wants several consecutive successes: Entra has no published bound on how long a new
secret takes to be accepted everywhere (seconds to minutes).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.identity import ClientSecretCredential

from rotation.errors import (
    AuthenticationFailed,
    InvalidRequest,
    TargetError,
    TransientError,
    VerificationFailed,
)
from rotation.graph import Application, GraphClient
from rotation.settings import Settings
from rotation.targets import IssuingTargetType
from rotation.targets.base import CredentialInfo, IssuedCredential, SecretValue, TargetSpec
from rotation.targets.logins import check_admin

logger = logging.getLogger(__name__)

KIND = "entra-app-secret"
DEFAULT_OVERLAP_HOURS = 24.0
# Graph application permissions that let the hub add client secrets (to owned, to all applications).
OWNED_BY = "Application.ReadWrite.OwnedBy"
READWRITE_ALL = "Application.ReadWrite.All"
# Applications that personal Microsoft accounts may use hold at most two client secrets.
PERSONAL_ACCOUNT_AUDIENCES = frozenset({"AzureADandPersonalMicrosoftAccount", "PersonalMicrosoftAccount"})
PERSONAL_ACCOUNT_SECRET_LIMIT = 2
# Waits between verification attempts: short while the secret is accepted, growing while not.
VERIFY_PAUSE_SECONDS = 1.0
VERIFY_BACKOFF_MAX_SECONDS = 15.0
_AADSTS = re.compile(r"AADSTS\d+")


def _guid(value: str, *, tag: str, what: str) -> str:
    try:
        return str(uuid.UUID(value)).lower()
    except ValueError:
        raise InvalidRequest(f"{tag} {value!r} is not {what} (a GUID)") from None


def validate(spec: TargetSpec) -> None:
    """Check the tags of an ``entra-app-secret`` secret.

    Raises:
        InvalidRequest: naming the tag at fault.
    """
    _guid(spec.provider, tag="rotation-provider", what="a tenant id")
    _guid(spec.credential, tag="rotation-credential", what="an application (client) id")
    check_admin(spec, modes=("self", "managed-identity"))


class EntraAppSecret:
    """One application's client secrets (see ``rotation.targets.base.IssuingTarget``)."""

    def __init__(
        self,
        spec: TargetSpec,
        settings: Settings,
        credential: TokenCredential,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate(spec)
        self.tenant_id = _guid(spec.provider, tag="rotation-provider", what="a tenant id")
        self.app_id = _guid(spec.credential, tag="rotation-credential", what="an application (client) id")
        self.graph = GraphClient(credential, endpoint=settings.graph_endpoint)
        self._authority = settings.entra_authority
        self._timeout = settings.entra_propagation_timeout_seconds
        self._successes = settings.entra_verify_successes
        self._sleep = sleep
        self._clock = clock

    # -- reading ---------------------------------------------------------------------------------

    def _application(self) -> Application:
        hub_tenant = self.graph.tenant_id()
        if hub_tenant != self.tenant_id:
            raise InvalidRequest(
                f"rotation-provider names tenant {self.tenant_id}, but the hub's identity is in tenant "
                f"{hub_tenant}: the hub rotates applications of its own tenant only"
            )
        return self.graph.application(self.app_id)

    def credentials(self) -> list[CredentialInfo]:
        return [
            CredentialInfo(credential_id=p.key_id, label=p.display_name, expires_on=p.end, hint=p.hint)
            for p in self._application().passwords
        ]

    def issued(self, *, label: str) -> list[str]:
        return [p.key_id for p in self._application().passwords if p.display_name == label]

    def check(self, *, current: SecretValue) -> str:
        """What ``issue`` needs, without issuing: the application is in the hub's tenant and
        readable, the hub may add secrets to it (an owner, with ``Application.ReadWrite.OwnedBy``;
        or ``Application.ReadWrite.All``), and it may hold one more secret.

        Raises:
            InvalidRequest: another tenant. NotFound: no such application.
            AuthenticationFailed: the permission or the ownership is missing (named).
            TargetError: the application holds as many secrets as it may.
        """
        app = self._application()
        caller = self.graph.caller()
        if READWRITE_ALL in caller.roles:
            how = f"the hub holds {READWRITE_ALL}"
        elif OWNED_BY not in caller.roles:
            raise AuthenticationFailed(
                f"application {self.app_id}: the hub's identity holds neither {OWNED_BY} nor "
                f"{READWRITE_ALL} (Graph application permissions), so it cannot add a client secret"
            )
        elif caller.object_id not in self.graph.owner_ids(app):
            raise AuthenticationFailed(
                f"application {self.app_id}: the hub's identity is not among its owners; "
                f"{OWNED_BY} lets it add client secrets only to applications it owns"
            )
        else:
            how = "the hub is an owner"
        self._check_room(app)
        return f"application {self.app_id} ({app.display_name}): {how}; it holds {len(app.passwords)} client secret(s)"

    def _check_room(self, app: Application) -> None:
        if (
            app.sign_in_audience in PERSONAL_ACCOUNT_AUDIENCES
            and len(app.passwords) >= PERSONAL_ACCOUNT_SECRET_LIMIT
        ):
            held = ", ".join(p.key_id for p in app.passwords)
            raise TargetError(
                f"application {self.app_id} may hold {PERSONAL_ACCOUNT_SECRET_LIMIT} client secrets "
                f"(its sign-in audience is {app.sign_in_audience}) and holds them already ({held}); "
                "remove one before it can be rotated"
            )

    # -- changing --------------------------------------------------------------------------------

    def issue(self, *, label: str, expires_on: datetime, current: SecretValue | None) -> IssuedCredential:
        """``addPassword``, after checking the application may hold one more secret.

        Raises:
            TargetError: the application holds as many secrets as it may, or Graph refuses (a
                tenant's app management policy on the lifetime, named in the message).
        """
        app = self._application()
        self._check_room(app)
        added = self.graph.add_password(app, display_name=label, end=expires_on)
        return IssuedCredential(value=added.secret, credential_id=added.key_id, expires_on=added.end)

    def withdraw(self, *, credential_id: str) -> bool:
        app = self._application()
        if credential_id.lower() not in {p.key_id for p in app.passwords}:
            return False
        self.graph.remove_password(app, credential_id.lower())
        return True

    # -- proving ---------------------------------------------------------------------------------

    def verify(self, *, value: SecretValue) -> None:
        """Consecutive successful client-credentials logins with ``value``, within the bound.

        Raises:
            VerificationFailed: still refused when the bound (ROTATION_ENTRA_PROPAGATION_TIMEOUT_SECONDS)
                ran out; the message has Entra's AADSTS code.
            TransientError: Entra cannot be reached.
        """
        deadline = self._clock() + self._timeout
        streak, refusals, backoff = 0, 0, VERIFY_PAUSE_SECONDS
        last = ""
        while True:
            refused = self._refusal(value)
            if refused is None:
                streak += 1
                if streak >= self._successes:
                    logger.info(
                        "application %s: the new secret logs in (%d in a row, %d refusals before)",
                        self.app_id,
                        streak,
                        refusals,
                    )
                    return
                pause, backoff = VERIFY_PAUSE_SECONDS, VERIFY_PAUSE_SECONDS
            else:
                streak, refusals, last = 0, refusals + 1, refused
                pause, backoff = backoff, min(backoff * 2, VERIFY_BACKOFF_MAX_SECONDS)
            if self._clock() + pause > deadline:
                raise VerificationFailed(
                    f"application {self.app_id} in tenant {self.tenant_id} does not accept the new secret "
                    f"after {self._timeout:g}s ({refusals} refusals, last: {last or 'none'})"
                )
            self._sleep(pause)

    def _refusal(self, value: SecretValue) -> str | None:
        """None when a token is issued for ``value``, else Entra's reason (an AADSTS code)."""
        credential = ClientSecretCredential(
            self.tenant_id, self.app_id, value.reveal(), authority=self._authority
        )
        try:
            credential.get_token(f"{self.graph.endpoint}/.default")
        except ClientAuthenticationError as exc:
            # The text is Entra's; only its code is kept (nothing else of it reaches the history).
            found = _AADSTS.search(str(exc))
            return found.group(0) if found else type(exc).__name__
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(
                f"application {self.app_id}: Entra could not be reached to verify ({type(exc).__name__})"
            ) from exc
        finally:
            credential.close()
        return None


def build(
    spec: TargetSpec, settings: Settings, credential: TokenCredential, value_format: str
) -> EntraAppSecret:
    """Raises InvalidRequest when the spec's tags are malformed (the value is the secret text:
    ``value_format`` is always ``password``)."""
    return EntraAppSecret(spec, settings, credential)


TARGET_TYPE = IssuingTargetType(
    name=KIND, build=build, validate=validate, default_overlap_hours=DEFAULT_OVERLAP_HOURS
)
