"""The hub's HTTP API (``/api/...``), as kvrotate calls it; every failure becomes a CliError."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from kvrotate.auth import EntraTokenAuth, function_key_headers
from kvrotate.errors import CliError, ExitCode, exit_code_for, one_line

# A rotation whose runtime status is one of these has ended.
ENDED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
# Starting a rotation or raising an event can wait on Key Vault; a minute is generous.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def normalise_hub_url(url: str) -> str:
    """The hub's root URL (``https://<app>.azurewebsites.net``); a trailing ``/api`` is dropped.

    Raises:
        CliError: not an http(s) URL.
    """
    url = url.strip().rstrip("/")
    if url.endswith("/api"):
        url = url[: -len("/api")]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(
            f"--hub must be an http(s) URL such as https://<app>.azurewebsites.net, not {url!r}",
            ExitCode.USAGE,
        )
    return url


class Hub:
    """One hub; use as a context manager (it holds a connection pool)."""

    def __init__(self, url: str, *, scope: str | None = None) -> None:
        self.url = normalise_hub_url(url)
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Accept": "application/json", **function_key_headers()},
            auth=EntraTokenAuth(scope) if scope else None,
            timeout=TIMEOUT,
            # Proxies and CA bundles come from the environment, as for every other client.
            trust_env=True,
        )

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    # -- the API ---------------------------------------------------------------------------

    def list_rotations(self, *, statuses: list[str], vault: str | None) -> dict[str, Any]:
        params = {}
        if statuses:
            params["status"] = ",".join(statuses)
        if vault:
            params["vault"] = vault
        return self._call("GET", "/api/rotations", params=params)

    def rotation(self, rotation_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/rotations/{_segment(rotation_id)}")

    def start(self, vault: str, secret: str) -> dict[str, Any]:
        return self._call("POST", "/api/rotations", body={"vault": vault, "secret": secret})

    def decide(
        self, rotation_id: str, *, approved: bool, approver: str | None, reason: str | None
    ) -> dict[str, Any]:
        body = {k: v for k, v in (("approver", approver), ("reason", reason)) if v is not None}
        action = "approve" if approved else "reject"
        return self._call("POST", f"/api/rotations/{_segment(rotation_id)}/{action}", body=body)

    def rerun(self, rotation_id: str, *, restart: bool) -> dict[str, Any]:
        body = {"mode": "restart" if restart else "rewind"}
        return self._call("POST", f"/api/rotations/{_segment(rotation_id)}/rerun", body=body)

    def preflight(self, vault: str, secret: str | None) -> dict[str, Any]:
        body = {"vault": vault, **({"secret": secret} if secret else {})}
        return self._call("POST", "/api/preflight", body=body)

    def start_incident(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/incidents", body=body)

    def incident(self, incident_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/incidents/{_segment(incident_id)}")

    def steer_incident(self, incident_id: str, action: str) -> dict[str, Any]:
        """``action``: pause, resume or cancel."""
        return self._call("POST", f"/api/incidents/{_segment(incident_id)}/{action}", body={})

    # -- one request -------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, body: object = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The answer's JSON object.

        Raises:
            CliError: no answer, an error status (with the API's ``error`` text), or an answer
                that is not a JSON object.
        """
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.TimeoutException:
            raise CliError(
                f"the hub at {self.url} did not answer {method} {path} in time", ExitCode.UNREACHABLE
            ) from None
        except httpx.TransportError as exc:
            reason = one_line(str(exc) or type(exc).__name__, 200)
            raise CliError(f"cannot reach the hub at {self.url}: {reason}", ExitCode.UNREACHABLE) from None
        answer = _json_of(response)
        if response.is_success and isinstance(answer, dict):
            return answer
        if response.is_success:
            raise CliError(
                f"{method} {path} answered HTTP {response.status_code} with something other than a JSON "
                f"object: is {self.url} the rotation hub?",
                ExitCode.HUB_ERROR,
            )
        raise CliError(_error_text(method, path, response, answer), exit_code_for(response.status_code))


def _segment(value: str) -> str:
    """A path segment: an id with a slash or '?' must not reach another route."""
    return quote(value, safe="")


def _json_of(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content) if response.content.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None


def _error_text(method: str, path: str, response: httpx.Response, answer: Any) -> str:
    status = response.status_code
    message = None
    where = f"HTTP {status}"
    if isinstance(answer, dict):
        # The API's {"error": ...}; the Functions host's own errors say "Message".
        message = answer.get("error") or answer.get("message") or answer.get("Message")
        if isinstance(answer.get("id"), str):  # a 409 names the rotation in the way
            where = f"rotation {answer['id']}, {where}"
    if status == 401:
        message = (message or "unauthorized").rstrip(".") + (
            ": set KVROTATE_FUNCTION_KEY, and KVROTATE_SCOPE where App Service authentication is on"
        )
    if isinstance(message, str) and message.strip():
        return f"{one_line(message)} ({where})"
    if status == 404:
        return f"the hub has no {method} {path} ({where})"
    text = one_line(response.text, 200) if response.text.strip() else response.reason_phrase
    return f"{method} {path} failed: {text} ({where})"
