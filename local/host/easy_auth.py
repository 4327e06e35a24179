"""App Service authentication (Easy Auth), as the app sees it, with ``--easy-auth PRINCIPALS.json``.

In Azure the platform's authentication module sits in front of the app: it signs callers in,
removes every ``X-MS-CLIENT-PRINCIPAL*`` header a client sent, writes its own for the signed-in
principal, and tells the app it is on with the ``WEBSITE_AUTH_ENABLED`` setting. This does the
same for the local host, with a directory of principals instead of Entra ID:

    {"principals": {"approver": {"id": "<object id>", "name": "approver@contoso.example",
                                 "groups": ["<group object id>", ...]}, ...}}

- ``GET /.auth/login/<provider>?principal=<key>&post_login_redirect_uri=/api/approvals`` signs
  that principal in: a session cookie ``AppServiceAuthSession`` (HttpOnly, SameSite=Lax, as App
  Service's), then a redirect to the (same-site, relative) URI. Without ``principal``, a page
  lists the principals to choose from.
- ``GET /.auth/me`` answers the signed-in principal's claims as App Service does (401 without).
- ``GET /.auth/logout`` clears the session.
- Every other request: client-sent ``X-MS-CLIENT-PRINCIPAL*`` (and ``X-MS-TOKEN-*``) headers are
  removed; a valid session cookie adds the principal's ``-ID``, ``-NAME``, ``-IDP`` and the base64
  JSON ``X-MS-CLIENT-PRINCIPAL`` with its ``groups`` claims. No session: the request goes on
  anonymous (App Service's ``AllowAnonymous`` action; the app decides what needs a principal).

The session cookie is the principal's key signed with HMAC-SHA256 under a key kept in the data
dir, so sessions survive a restart of the host, as App Service's do.

With ``--easy-auth-token-key`` (the local cloud's token signing key), an ``Authorization: Bearer``
token the local cloud issued for the hub's audience (``api://keyvault-rotation-hub``) signs its
service principal in too, as App Service authentication accepts Entra access tokens: the
principal's id is the token's ``oid``, its name the ``appid``, no groups (app-only tokens carry
none). A token that does not verify, has expired or is for another audience answers 401, as App
Service does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from local.cloud.tokens import HUB_AUDIENCES, TokenExpired, TokenInvalid, TokenIssuer, bearer_token

SESSION_COOKIE = "AppServiceAuthSession"
SIGNAL = "WEBSITE_AUTH_ENABLED"
KEY_FILE = "easy-auth.key"
IDENTITY_PROVIDER = "aad"
_STRIPPED_PREFIXES = ("x-ms-client-principal", "x-ms-token-")
_PRINCIPAL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
NAME_CLAIM = "name"
UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"


class PrincipalsError(ValueError):
    """The principals file is unreadable or malformed; the message says where."""


@dataclass(frozen=True)
class LocalPrincipal:
    key: str
    object_id: str
    name: str
    groups: tuple[str, ...] = ()

    def claims(self) -> list[dict[str, str]]:
        claims = [
            {"typ": OBJECT_ID_CLAIM, "val": self.object_id},
            {"typ": UPN_CLAIM, "val": self.name},
            {"typ": NAME_CLAIM, "val": self.name},
        ]
        return claims + [{"typ": "groups", "val": group} for group in self.groups]

    def headers(self) -> dict[str, str]:
        """The headers App Service authentication gives the app for this principal."""
        document = {
            "auth_typ": IDENTITY_PROVIDER,
            "claims": self.claims(),
            "name_typ": UPN_CLAIM,
            "role_typ": "roles",
        }
        return {
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(document).encode()).decode("ascii"),
            "X-MS-CLIENT-PRINCIPAL-ID": self.object_id,
            "X-MS-CLIENT-PRINCIPAL-NAME": self.name,
            "X-MS-CLIENT-PRINCIPAL-IDP": IDENTITY_PROVIDER,
        }


def load_principals(path: Path) -> dict[str, LocalPrincipal]:
    """Raises PrincipalsError naming what is wrong."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrincipalsError(f"--easy-auth {path}: {exc}") from exc
    entries = document.get("principals") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise PrincipalsError(f'--easy-auth {path}: expected {{"principals": {{"<key>": {{...}}}}}}')
    principals: dict[str, LocalPrincipal] = {}
    for key, entry in entries.items():
        where = f"--easy-auth {path}: principal {key!r}"
        if not _PRINCIPAL_KEY.fullmatch(str(key)) or not isinstance(entry, dict):
            raise PrincipalsError(f"{where}: the key must be 1-64 letters, digits, '.', '_', '-'")
        object_id, name, groups = entry.get("id"), entry.get("name"), entry.get("groups", [])
        if not isinstance(object_id, str) or not _GUID.fullmatch(object_id):
            raise PrincipalsError(f"{where}: 'id' must be an object id (a GUID)")
        if not isinstance(name, str) or not name.strip():
            raise PrincipalsError(f"{where}: 'name' is required")
        if not isinstance(groups, list) or not all(isinstance(g, str) and _GUID.fullmatch(g) for g in groups):
            raise PrincipalsError(f"{where}: 'groups' must be a list of group object ids")
        principals[key] = LocalPrincipal(
            key, object_id.lower(), name.strip(), tuple(g.lower() for g in groups)
        )
    return principals


def _load_or_create_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EasyAuth:
    """The authentication module in front of the app: sign-in routes and a header middleware."""

    def __init__(
        self, principals: dict[str, LocalPrincipal], data_dir: Path, *, token_key: Path | None = None
    ) -> None:
        self.principals = principals
        self._key = _load_or_create_key(data_dir)
        # The local cloud's issuer, only to verify what it signed (the key file must exist).
        if token_key is not None and not token_key.is_file():
            raise PrincipalsError(f"--easy-auth-token-key {token_key}: no such file")
        self._tokens = TokenIssuer(token_key.parent, tenant_id="") if token_key else None

    # -- sessions ----------------------------------------------------------------------------

    def _sign(self, principal_key: str) -> str:
        return hmac.new(self._key, principal_key.encode(), hashlib.sha256).hexdigest()

    def session_for(self, principal_key: str) -> str:
        """The session cookie's value for a principal of the directory (KeyError if unknown)."""
        return f"{self.principals[principal_key].key}.{self._sign(principal_key)}"

    def principal_of(self, request: web.Request) -> LocalPrincipal | None:
        value = request.cookies.get(SESSION_COOKIE, "")
        key, _, signature = value.rpartition(".")
        if not key or not hmac.compare_digest(signature, self._sign(key)):
            return None
        return self.principals.get(key)

    # -- the module in front of the app ------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/.auth/"):
            return await handler(request)
        headers = request.headers.copy()
        for name in {n for n in headers if n.lower().startswith(_STRIPPED_PREFIXES)}:
            headers.popall(name)
        principal = self.principal_of(request)
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None and self._tokens is not None:
            principal = self._token_principal(token)
            if principal is None:
                return web.json_response({"error": "the bearer token is not valid for this app"}, status=401)
        if principal is not None:
            headers.update(principal.headers())
        return await handler(request.clone(headers=headers))

    def _token_principal(self, token: str) -> LocalPrincipal | None:
        assert self._tokens is not None
        try:
            claims = self._tokens.verify(token)
        except (TokenInvalid, TokenExpired):
            return None
        if claims.audience not in HUB_AUDIENCES or not _GUID.fullmatch(claims.object_id):
            return None
        return LocalPrincipal(key="bearer", object_id=claims.object_id.lower(), name=claims.app_id)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/.auth/login/{provider}", self.login),
            web.get("/.auth/me", self.me),
            web.get("/.auth/logout", self.logout),
        ]

    async def login(self, request: web.Request) -> web.StreamResponse:
        target = _same_site(request.query.get("post_login_redirect_uri", "/"))
        key = request.query.get("principal")
        if key is None:
            return self._chooser(request.match_info["provider"], target)
        if key not in self.principals:
            return web.Response(status=400, text=f"no principal {key!r} in the --easy-auth directory\n")
        response = web.Response(status=302, headers={"Location": target})
        response.set_cookie(SESSION_COOKIE, self.session_for(key), path="/", httponly=True, samesite="Lax")
        return response

    def _chooser(self, provider: str, target: str) -> web.Response:
        links = "".join(
            f'<li><a href="/.auth/login/{html.escape(provider)}?principal={html.escape(p.key)}'
            f'&amp;post_login_redirect_uri={html.escape(target)}">{html.escape(p.name)}</a></li>'
            for p in self.principals.values()
        )
        page = f"<!DOCTYPE html><title>Sign in (local)</title><h1>Sign in as</h1><ul>{links}</ul>"
        return web.Response(text=page, content_type="text/html")

    async def me(self, request: web.Request) -> web.Response:
        principal = self.principal_of(request)
        if principal is None:
            return web.json_response({"error": "not signed in"}, status=401)
        body: list[dict[str, Any]] = [
            {"provider_name": IDENTITY_PROVIDER, "user_id": principal.name, "user_claims": principal.claims()}
        ]
        return web.json_response(body)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        target = _same_site(request.query.get("post_logout_redirect_uri", "/"))
        response = web.Response(status=302, headers={"Location": target})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response


def _same_site(uri: str) -> str:
    """A redirect target on this site only (App Service refuses open redirects too)."""
    if not uri.startswith("/") or uri.startswith("//") or "\\" in uri:
        return "/"
    return uri
