"""How kvrotate proves itself to the hub.

- A function key (the routes are function-level): ``KVROTATE_FUNCTION_KEY``, sent as
  ``x-functions-key``. Read from the environment only, never a flag, so it stays out of shell
  history and process lists. Locally the host checks no key unless started with ``--auth keys``.
- An Entra token when App Service authentication protects the hub: ``--scope`` or
  ``KVROTATE_SCOPE`` (e.g. ``api://<app id>/.default``), obtained by azure-identity's
  ``DefaultAzureCredential`` (Azure CLI login, environment, managed identity, ...) and sent as a
  bearer token. Both may be needed together: App Service authentication does not replace the
  function key of a function-level route.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import httpx

from kvrotate.errors import CliError, ExitCode, one_line

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential

FUNCTION_KEY_ENV = "KVROTATE_FUNCTION_KEY"
FUNCTION_KEY_HEADER = "x-functions-key"
# A token this close to its expiry is renewed before a request rather than sent.
_EXPIRY_MARGIN_SECONDS = 120


def function_key_headers() -> dict[str, str]:
    key = os.environ.get(FUNCTION_KEY_ENV, "").strip()
    return {FUNCTION_KEY_HEADER: key} if key else {}


class EntraTokenAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <token>`` for ``scope``, renewing the token near its expiry."""

    def __init__(self, scope: str, credential: TokenCredential | None = None) -> None:
        self.scope = scope
        self._credential = credential
        self._token: AccessToken | None = None

    def _current_token(self) -> str:
        if self._token is None or self._token.expires_on - _EXPIRY_MARGIN_SECONDS < time.time():
            # Imported here: azure-identity takes a moment to import, and most local runs need none.
            from azure.core.exceptions import ClientAuthenticationError

            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            try:
                self._token = self._credential.get_token(self.scope)
            except ClientAuthenticationError as exc:  # CredentialUnavailableError is one too
                raise CliError(
                    f"no Entra token for {self.scope}: {token_failure(exc.message or str(exc))}",
                    ExitCode.DENIED,
                ) from None
        return self._token.token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current_token()}"
        yield request


_UNAVAILABLE = (
    "unavailable",
    "not found",
    "not installed",
    "could not be found",
    "requires the",
    "not configured",
)


def token_failure(message: str) -> str:
    """The reason worth one line out of DefaultAzureCredential's report, which lists every
    credential it tried (``\tName: why``): the ones that were there and failed, else a hint."""
    tried = [line.strip() for line in message.splitlines() if line.startswith("\t") and ":" in line]
    failed = [line for line in tried if not any(word in line.lower() for word in _UNAVAILABLE)]
    # A credential that is configured but answered with an error says so after "error".
    failed += [line for line in tried if "error" in line.lower() and line not in failed]
    if failed:
        return one_line("; ".join(failed), 400)
    if tried:
        return "no credential is set up here (sign in with `az login`, or set a service principal's or managed identity's environment)"
    return one_line(message, 400)
