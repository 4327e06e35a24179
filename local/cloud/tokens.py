"""Access tokens: JWTs the local cloud issues from its identity endpoint and checks on every call.

They carry the claims Entra ID puts in a managed identity's token (``aud``, ``iss``, ``exp``,
``oid``, ``appid``, ``tid``, ``xms_mirid``) or in an application's client-credentials token (the
same without ``xms_mirid``), plus ``roles`` (Microsoft Graph application permissions) in tokens
for Graph, and are signed with HS256 under a key kept in the data dir, so tokens stay valid across
a restart of the local cloud, like real ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.cloud.topology import Identity

VAULT_AUDIENCES = frozenset({"https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"})
ARM_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.core.windows.net",
    }
)
GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})
# Event Grid's data plane: azure-eventgrid asks for https://eventgrid.azure.net/.default.
EVENTGRID_AUDIENCES = frozenset({"https://eventgrid.azure.net"})
# Databases that log an Entra principal in with a token: Azure SQL (through the driver's access
# token attribute) and Azure Database for PostgreSQL / MySQL (the token as the password). The
# local cloud only issues them; the database servers of local runs check nothing but equality.
DATABASE_AUDIENCES = frozenset({"https://database.windows.net", "https://ossrdbms-aad.database.windows.net"})
# The hub's own app registration, as App Service authentication in front of the hub accepts its
# tokens (the local host's --easy-auth with --easy-auth-token-key): a CLI or a script signs in to
# the hub's API with a token for it.
HUB_AUDIENCES = frozenset({"api://keyvault-rotation-hub"})
# Resources the identity endpoint issues tokens for; Entra ID answers AADSTS500011 for others.
KNOWN_RESOURCES = (
    VAULT_AUDIENCES
    | ARM_AUDIENCES
    | DATABASE_AUDIENCES
    | GRAPH_AUDIENCES
    | HUB_AUDIENCES
    | EVENTGRID_AUDIENCES
)


# The signing key, in the local cloud's data dir.
TOKEN_KEY_FILE = "token-signing.key"  # noqa: S105 (a file name)


def canonical_audience(resource: str) -> str:
    """Entra ID strips "/.default" and a trailing slash is the same resource."""
    resource = resource.strip()
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    return resource.rstrip("/")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claims:
    audience: str
    expires_on: int
    object_id: str
    app_id: str
    tenant_id: str
    issuer: str
    roles: tuple[str, ...] = ()


class TokenInvalid(Exception):
    """The token is not one of ours, is malformed, or its signature does not verify."""


class TokenExpired(Exception):
    def __init__(self, expired_at: int) -> None:
        super().__init__(f"token expired at {expired_at}")
        self.expired_at = expired_at


class TokenIssuer:
    def __init__(self, data_dir: Path, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._key = self._load_key(data_dir / TOKEN_KEY_FILE)

    @staticmethod
    def _load_key(path: Path) -> bytes:
        if path.exists():
            return path.read_bytes()
        key = secrets.token_bytes(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        os.replace(tmp, path)
        return key

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    def _sign(self, signing_input: bytes) -> str:
        return _b64(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def issue(
        self, identity: Identity, resource: str, lifetime_seconds: int, *, roles: tuple[str, ...] = ()
    ) -> tuple[str, int]:
        """A signed token for a managed ``identity`` and its expiry (unix seconds)."""
        return self.issue_for(
            client_id=identity.client_id,
            principal_id=identity.principal_id,
            resource=resource,
            lifetime_seconds=lifetime_seconds,
            roles=roles,
            extra={"appidacr": "2", "xms_mirid": identity.arm_id},
        )

    def issue_for(
        self,
        *,
        client_id: str,
        principal_id: str,
        resource: str,
        lifetime_seconds: int,
        roles: tuple[str, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, int]:
        """A signed app-only token for any service principal (managed identity or application)."""
        now = int(time.time())
        expires_on = now + lifetime_seconds
        header = {"typ": "JWT", "alg": "HS256", "kid": "local-cloud"}
        payload: dict[str, Any] = {
            "aud": canonical_audience(resource),
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": principal_id,
            "sub": principal_id,
            "tid": self.tenant_id,
            "uti": uuid.uuid4().hex,
            "ver": "1.0",
        }
        if roles:
            payload["roles"] = list(roles)
        payload.update(extra or {})
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        return f"{signing_input}.{self._sign(signing_input.encode('ascii'))}", expires_on

    def verify(self, token: str) -> Claims:
        """Check signature and expiry; the audience is the caller's business.

        Raises:
            TokenInvalid: malformed, not signed by this local cloud, or missing claims.
            TokenExpired: signed by us but past its ``exp``.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenInvalid("not a JWT")
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        if not hmac.compare_digest(self._sign(signing_input), parts[2]):
            raise TokenInvalid("signature does not verify")
        try:
            payload = json.loads(_unb64(parts[1]))
            claims = Claims(
                audience=str(payload["aud"]),
                expires_on=int(payload["exp"]),
                object_id=str(payload["oid"]),
                app_id=str(payload["appid"]),
                tenant_id=str(payload["tid"]),
                issuer=str(payload["iss"]),
                roles=tuple(str(r) for r in payload.get("roles", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenInvalid("malformed claims") from exc
        if claims.expires_on <= int(time.time()):
            raise TokenExpired(claims.expires_on)
        return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "pop") or not token.strip():
        return None
    return token.strip()
