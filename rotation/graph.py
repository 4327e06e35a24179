"""Microsoft Graph operations on Entra applications, on top of azure-core's pipeline.

Three calls are all the rotation needs (read an application and its password credentials,
``addPassword``, ``removePassword``), so this is a thin client on the pipeline the Azure SDKs
already bring (token policy, retries honouring ``Retry-After``, transport), instead of the
official ``msgraph-sdk`` (README, "Graph from Python": its import time and size, measured by
``benchmarks/graph_client.py``).

``addPassword`` is sent once, never retried by the pipeline: Graph may have created the
credential before a failure reached us, and a retry would create a second one whose secret text
nobody keeps. The rotation finds such a credential again by its display name and removes it.

Graph errors become the domain's errors here; messages name the application, the operation and
Graph's error code, never a secret text. Response bodies are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse

from rotation.errors import (
    AuthenticationFailed,
    NotFound,
    RotationError,
    TargetError,
    TransientError,
    retry_after_header,
)
from rotation.targets.base import SecretValue

logger = logging.getLogger(__name__)

USER_AGENT = "keyvault-rotation-hub"
_MAX_MESSAGE = 300


@dataclass(frozen=True)
class PasswordCredential:
    """An application's client secret as Graph lists it: never its text."""

    key_id: str
    display_name: str
    end: datetime | None
    hint: str | None = None


@dataclass(frozen=True)
class Application:
    object_id: str
    app_id: str
    display_name: str
    sign_in_audience: str
    passwords: tuple[PasswordCredential, ...]


@dataclass(frozen=True)
class Caller:
    """The hub's identity as its Graph token names it: tenant, object id, application permissions."""

    tenant_id: str
    object_id: str
    roles: frozenset[str]


@dataclass(frozen=True)
class AddedPassword:
    key_id: str
    secret: SecretValue
    end: datetime | None


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(response: HttpResponse, what: str) -> RotationError:
    status = response.status_code
    code, message = "", ""
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
    except (ValueError, AttributeError):
        pass
    said = f"Graph answered {status} {code}".rstrip() + (f": {message[:_MAX_MESSAGE]}" if message else "")
    if status == 429 or status >= 500:
        return TransientError(f"{what}: {said}", retry_after_seconds=retry_after_header(response.headers))
    if status in (401, 403):
        return AuthenticationFailed(
            f"{what}: {said} (the hub's identity needs the Graph application permission "
            "Application.ReadWrite.OwnedBy and to be an owner of the application)"
        )
    if status == 404:
        return NotFound(f"{what}: {said}")
    return TargetError(f"{what}: {said}")


@contextmanager
def _transport(what: str) -> Iterator[None]:
    try:
        yield
    except ClientAuthenticationError as exc:
        status = exc.status_code or 0
        if status == 429 or status >= 500:
            raise TransientError(f"{what}: the identity endpoint answered {status}") from exc
        raise AuthenticationFailed(
            f"{what}: the hub's identity got no token for Graph ({type(exc).__name__})"
        ) from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"{what}: Microsoft Graph could not be reached ({type(exc).__name__})") from exc


class GraphClient:
    """Microsoft Graph v1.0 as the hub's identity (``credential``) at ``endpoint``."""

    def __init__(self, credential: TokenCredential, *, endpoint: str = "https://graph.microsoft.com") -> None:
        self.endpoint = endpoint.rstrip("/")
        self._credential = credential
        self._scope = f"{self.endpoint}/.default"
        self._client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            base_url=f"{self.endpoint}/v1.0",
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy(USER_AGENT),
                RetryPolicy(),
                BearerTokenCredentialPolicy(credential, self._scope),
            ],
        )

    def _send(
        self, method: str, path: str, what: str, *, body: Mapping[str, Any] | None = None, retry: bool = True
    ) -> HttpResponse:
        request = HttpRequest(method, f"{self.endpoint}/v1.0{path}", json=body)
        with _transport(what):
            # retry_total=0: this request alone is not retried by the pipeline (see the module's doc).
            response = (
                self._client.send_request(request)
                if retry
                else self._client.send_request(request, retry_total=0)
            )
        if response.status_code >= 400:
            raise _error(response, what)
        return response

    def caller(self) -> Caller:
        """Who the hub's identity is to Graph, from its own Graph token (``tid``, ``oid``, ``roles``).

        Raises:
            AuthenticationFailed, TransientError: no token, or one that names no tenant.
        """
        with _transport("reading the hub identity's tenant"):
            token = self._credential.get_token(self._scope).token
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return Caller(
                tenant_id=str(claims["tid"]).lower(),
                object_id=str(claims.get("oid") or "").lower(),
                roles=frozenset(str(role) for role in claims.get("roles") or ()),
            )
        except (IndexError, ValueError, KeyError, TypeError):
            raise AuthenticationFailed("the hub identity's Graph token names no tenant") from None

    def tenant_id(self) -> str:
        """The tenant of the hub's identity (see ``caller``)."""
        return self.caller().tenant_id

    def owner_ids(self, app: Application) -> frozenset[str]:
        """The object ids of the application's owners.

        Raises:
            AuthenticationFailed: the hub may not read them.
        """
        response = self._send(
            "GET",
            f"/applications/{app.object_id}/owners?$select=id",
            f"reading the owners of application {app.app_id}",
        )
        return frozenset(str(item.get("id") or "").lower() for item in response.json().get("value") or [])

    def application(self, app_id: str) -> Application:
        """The application whose client (app) id is ``app_id``, with its password credentials.

        Raises:
            NotFound: no such application in the tenant.
            AuthenticationFailed: the hub may not read it.
        """
        select = "id,appId,displayName,signInAudience,passwordCredentials"
        response = self._send(
            "GET", f"/applications(appId='{app_id}')?$select={select}", f"reading application {app_id}"
        )
        data = response.json()
        return Application(
            object_id=str(data.get("id") or ""),
            app_id=str(data.get("appId") or app_id),
            display_name=str(data.get("displayName") or ""),
            sign_in_audience=str(data.get("signInAudience") or ""),
            passwords=tuple(
                PasswordCredential(
                    key_id=str(item.get("keyId") or "").lower(),
                    display_name=str(item.get("displayName") or ""),
                    end=_when(item.get("endDateTime")),
                    hint=str(item["hint"]) if item.get("hint") else None,
                )
                for item in data.get("passwordCredentials") or []
            ),
        )

    def add_password(self, app: Application, *, display_name: str, end: datetime) -> AddedPassword:
        """``addPassword``: a new client secret; its text is in the answer, once.

        Raises:
            TargetError: Graph refuses (a lifetime policy, the credential limit ...), naming why.
        """
        response = self._send(
            "POST",
            f"/applications/{app.object_id}/addPassword",
            f"adding a client secret to application {app.app_id}",
            body={"passwordCredential": {"displayName": display_name, "endDateTime": _iso(end)}},
            retry=False,
        )
        data = response.json()
        text = data.get("secretText")
        key_id = str(data.get("keyId") or "").lower()
        if not isinstance(text, str) or not text or not key_id:
            raise TargetError(f"Graph added a client secret to application {app.app_id} but returned no text")
        logger.info("application %s: client secret %s added", app.app_id, key_id)
        return AddedPassword(key_id=key_id, secret=SecretValue(text), end=_when(data.get("endDateTime")))

    def remove_password(self, app: Application, key_id: str) -> None:
        """``removePassword``; the caller checks first that the credential exists."""
        self._send(
            "POST",
            f"/applications/{app.object_id}/removePassword",
            f"removing client secret {key_id} of application {app.app_id}",
            body={"keyId": key_id},
        )
        logger.info("application %s: client secret %s removed", app.app_id, key_id)
