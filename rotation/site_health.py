"""Asking a consuming app whether it answers: one GET to its public host name.

ARM's ``state`` of a site is the state it is configured to be in ("Running" the moment a restart
is accepted), not whether the app serves. What App Service itself uses to decide whether an
instance serves is the site's health check (``siteConfig.healthCheckPath``, 2xx = healthy), so the
hub asks the same URL through the site's front end (``https://<defaultHostName><path>``).

The request carries no credentials, cookies or keys (the app's health endpoint must not need
any); TLS is verified; redirects are not followed (a health check answers where it is asked); the
answer's body is never read into a log or an error, only its status.
"""

from __future__ import annotations

from functools import cache

from azure.core import PipelineClient
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import HeadersPolicy, UserAgentPolicy
from azure.core.rest import HttpRequest

USER_AGENT = "keyvault-rotation-hub-health-check"


@cache
def _client() -> PipelineClient:  # type: ignore[type-arg]
    # No retry policy: the caller polls; no authentication policy: nothing is sent to the app.
    return PipelineClient(
        base_url="",
        policies=[HeadersPolicy(), UserAgentPolicy(base_user_agent=USER_AGENT)],
    )


def http_status(url: str, timeout_seconds: float) -> int | str:
    """The HTTP status ``url`` answers with, or why no answer came (the error's class name: the
    connection was refused, reset, timed out, or TLS failed)."""
    timeout = max(1.0, timeout_seconds)
    try:
        response = _client().send_request(
            HttpRequest("GET", url),
            stream=True,  # the body is not wanted
            connection_timeout=min(10.0, timeout),
            read_timeout=timeout,
        )
    except AzureError as exc:
        return type(exc).__name__
    try:
        return int(response.status_code)
    finally:
        response.close()


def is_ready(status: int | str, *, health_check_path: str | None) -> bool:
    """With a health check path, ready means 2xx there, as App Service's health check counts it.
    Without one there is nothing to ask but the site itself: any answer below 500 at ``/`` (a 404
    or a 401 of the app's own authentication included) means the app serves; the front end's 503
    while the app starts, and 5xx of an app failing, do not."""
    if isinstance(status, str):
        return False
    if health_check_path:
        return 200 <= status < 300
    return status < 500
