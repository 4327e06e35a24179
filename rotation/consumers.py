"""Restarting the apps that consume a rotated secret, and waiting until they run again.

An app that read the secret at start keeps the old value until it restarts; after promotion
the old value no longer logs in, so each consumer is restarted and watched until App Service
reports it running.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.mgmt.web import WebSiteManagementClient

from rotation.azure_errors import translated
from rotation.errors import InvalidRequest, TransientError
from rotation.model import ConsumerRestarted

logger = logging.getLogger(__name__)

_SITE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w.()]{1,90})"
    r"/providers/Microsoft\.Web/sites/(?P<name>[a-zA-Z0-9-]{2,60})$",
    re.IGNORECASE,
)
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SiteRef:
    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def parse(cls, arm_id: str) -> SiteRef:
        """Raises InvalidRequest unless ``arm_id`` names a Microsoft.Web/sites resource."""
        match = _SITE_ID.match(arm_id.strip())
        if not match:
            raise InvalidRequest(f"{arm_id!r} is not an App Service ARM id")
        return cls(match["sub"].lower(), match["rg"], match["name"])


def restart_and_wait(
    consumer_id: str,
    *,
    client_for: Callable[[str], WebSiteManagementClient],
    ready_timeout_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> ConsumerRestarted:
    """Restart one app and wait until it reports ``Running``.

    Restarting twice is harmless, so a retried step just restarts again.

    Raises:
        InvalidRequest: not an App Service id, or the site does not exist.
        AuthenticationFailed: the hub may not restart it (Website Contributor missing).
        TransientError: ARM is unreachable, or the app did not run again within the timeout.
    """
    site = SiteRef.parse(consumer_id)
    client = client_for(site.subscription_id)
    what = f"app {site.name!r} in resource group {site.resource_group!r}"
    with translated(what, service="Azure Resource Manager"):
        client.web_apps.restart(site.resource_group, site.name, synchronous=True)
    logger.info("restarted %s", what)
    deadline = time.monotonic() + ready_timeout_seconds
    state = "Unknown"
    while True:
        with translated(what, service="Azure Resource Manager"):
            state = str(client.web_apps.get(site.resource_group, site.name).state or "Unknown")
        if state == "Running":
            return ConsumerRestarted(consumer_id=consumer_id, state=state)
        if time.monotonic() >= deadline:
            raise TransientError(f"{what} reports {state!r} {ready_timeout_seconds:g}s after its restart")
        sleep(POLL_SECONDS)
