"""Who is calling, as App Service authentication (Easy Auth) vouches for it, and only then.

With App Service authentication on, the platform validates the caller's session or Entra token,
removes any ``X-MS-CLIENT-PRINCIPAL*`` header the client sent and writes its own ("External
requests aren't allowed to set these headers, so they're present only if set by App Service":
Microsoft Learn, "Work with user identities in Azure App Service authentication"). Without it the
same headers are whatever the caller typed, so they are ignored entirely: the platform's signal
(``WEBSITE_AUTH_ENABLED``, read in ``rotation/settings.py``) decides which case this is.

The headers: ``X-MS-CLIENT-PRINCIPAL-ID`` (for Entra ID, the principal's object id),
``-NAME`` (a human-readable name: UPN, e-mail), ``-IDP`` (the identity provider, ``aad``) and
``X-MS-CLIENT-PRINCIPAL``: base64 of ``{"auth_typ", "claims": [{"typ", "val"}], "name_typ",
"role_typ"}``, where Entra's group memberships are ``groups`` claims (when the app registration
emits them: ``groupMembershipClaims``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from rotation.settings import Settings

logger = logging.getLogger(__name__)

ID_HEADER = "x-ms-client-principal-id"
NAME_HEADER = "x-ms-client-principal-name"
IDP_HEADER = "x-ms-client-principal-idp"
CLAIMS_HEADER = "x-ms-client-principal"
GROUP_CLAIMS = frozenset({"groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"})
MAX_HEADER = 64 * 1024
MAX_NAME = 256


@dataclass(frozen=True)
class Principal:
    """A caller App Service authentication signed in."""

    id: str
    name: str
    identity_provider: str
    groups: frozenset[str] = frozenset()

    def is_one_of(self, allowed: frozenset[str]) -> bool:
        """Whether this principal, or one of its groups, is in ``allowed`` (lower-case ids)."""
        return self.id.lower() in allowed or not self.groups.isdisjoint(allowed)


def trusted_principal(headers: Mapping[str, str], settings: Settings) -> Principal | None:
    """The principal App Service authentication put in the request, or None.

    None when App Service authentication is off (whatever the headers say) or when it let the
    request through without signing anyone in (no ``X-MS-CLIENT-PRINCIPAL-ID``).
    """
    if not settings.app_service_auth_enabled:
        return None
    lowered = {name.lower(): value for name, value in headers.items()}
    principal_id = lowered.get(ID_HEADER, "").strip()
    if not principal_id:
        return None
    claims = _claims(lowered.get(CLAIMS_HEADER, ""))
    name = lowered.get(NAME_HEADER, "").strip() or principal_id
    groups = frozenset(val.lower() for typ, val in claims if typ in GROUP_CLAIMS)
    return Principal(
        id=principal_id.lower(),
        name=name[:MAX_NAME],
        identity_provider=lowered.get(IDP_HEADER, "").strip(),
        groups=groups,
    )


def _claims(encoded: str) -> list[tuple[str, str]]:
    """The (typ, val) pairs of ``X-MS-CLIENT-PRINCIPAL``; none if it is absent or unreadable.

    Unreadable would mean the platform wrote something this code does not understand: the
    principal keeps its id and name, and simply has no groups (fail closed for group matches).
    """
    if not encoded or len(encoded) > MAX_HEADER:
        return []
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        logger.warning("X-MS-CLIENT-PRINCIPAL is not base64 JSON; the principal's groups are ignored")
        return []
    claims = document.get("claims") if isinstance(document, dict) else None
    if not isinstance(claims, list):
        return []
    return [
        (str(claim["typ"]).lower(), str(claim["val"]))
        for claim in claims
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str)
    ]
