"""Restarting the apps that consume a rotated secret, and waiting until they serve again.

An app that read the secret at start keeps the old value until it restarts; after promotion
the old value no longer logs in, so each consumer is restarted and watched until it serves again.
ARM's ``state`` cannot say that: it is the state the site is configured to be in, "Running" the
moment the restart is accepted. So the hub asks the app the way App Service does: its health
check path (``siteConfig.healthCheckPath``, read with ``web_apps.get_configuration``) on its default
host name must answer 2xx; a site without one must answer ``/`` with anything below 500
(``rotation/site_health.py``). One answer through the site's front end is enough: with several
instances the others may still be starting, and App Service's own health check keeps an instance
that fails it out of the load balancer.

An app that reads the secret through a Key Vault reference in its app settings
(``@Microsoft.KeyVault(...)``) is different: App Service caches the value for up to 24 hours and
a restart does not fetch it again; a change of the app's configuration does. So when settings
reference the rotated secret (without a version), the hub writes the app settings back exactly
as they were plus one setting, ``REFRESH_SETTING``, set to the rotation id: App Service restarts
the app and fetches every reference afresh.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import StringDictionary

from rotation.azure_errors import translated
from rotation.errors import InvalidRequest, TransientError
from rotation.model import ConsumerRestarted, SecretRef
from rotation.site_health import http_status, is_ready

logger = logging.getLogger(__name__)

_SITE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w.()]{1,90})"
    r"/providers/Microsoft\.Web/sites/(?P<name>[a-zA-Z0-9-]{2,60})$",
    re.IGNORECASE,
)
POLL_SECONDS = 1.0
REFRESH_SETTING = "KEYVAULT_ROTATION_HUB_REFRESH"
# The two forms App Service reads: SecretUri=https://<vault>.<suffix>/secrets/<name>[/<version>]
# and VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>].
_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\((?P<body>[^)]*)\)\s*$", re.IGNORECASE)
_SECRET_URI = re.compile(
    r"^https://(?P<vault>[a-z0-9-]+)\.[^/]+/secrets/(?P<name>[a-z0-9-]+)(?:/(?P<version>[0-9a-f]*))?/?$",
    re.IGNORECASE,
)


def reference_to(value: str, secret: SecretRef) -> str | None:
    """Whether an app setting's value is a Key Vault reference to ``secret``: "latest" (no version,
    so a refetch gets the new one), "pinned" (a version), or None (not a reference to it)."""
    match = _REFERENCE.match(value)
    if match is None:
        return None
    parts = {
        key.strip().lower(): val.strip()
        for key, sep, val in (item.partition("=") for item in match["body"].split(";"))
        if sep
    }
    if "secreturi" in parts:
        uri = _SECRET_URI.match(parts["secreturi"])
        if uri is None:
            return None
        vault, name, version = uri["vault"], uri["name"], uri["version"]
    else:
        vault, name, version = (
            parts.get("vaultname", ""),
            parts.get("secretname", ""),
            parts.get("secretversion"),
        )
    if vault.lower() != secret.vault_name.lower() or name.lower() != secret.secret_name.lower():
        return None
    return "pinned" if version else "latest"


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
    secret: SecretRef | None = None,
    rotation_id: str = "",
    sleep: Callable[[float], None] = time.sleep,
    probe: Callable[[str, float], int | str] = http_status,
) -> ConsumerRestarted:
    """Restart one app (or, when its app settings reference ``secret`` through Key Vault, change
    its configuration so it fetches them again) and wait until it serves: its health check path
    answers 2xx, or, without one, the site answers below 500 (module docstring).

    Restarting twice is harmless, so a retried step just restarts again; the configuration
    change writes the same settings again.

    Raises:
        InvalidRequest: not an App Service id, or the site does not exist.
        AuthenticationFailed: the hub may not restart it (Website Contributor missing).
        TransientError: ARM is unreachable, or the app did not serve within the timeout (the
            message says what it last answered).
    """
    site = SiteRef.parse(consumer_id)
    client = client_for(site.subscription_id)
    what = f"app {site.name!r} in resource group {site.resource_group!r}"
    refreshed: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    if secret is not None:
        refreshed, pinned = _refresh_references(client, site, what, secret, rotation_id)
    if not refreshed:
        with translated(what, service="Azure Resource Manager"):
            client.web_apps.restart(site.resource_group, site.name, synchronous=True)
        logger.info("restarted %s", what)
    deadline = time.monotonic() + ready_timeout_seconds
    with translated(what, service="Azure Resource Manager"):
        health_path = (
            client.web_apps.get_configuration(site.resource_group, site.name).health_check_path or ""
        ).strip()
    if health_path and not health_path.startswith("/"):
        health_path = "/" + health_path
    url = ""
    last = "no answer yet"
    while True:
        if not url:
            # Read until the site is configured to run (a restart makes it so); its host name with it.
            with translated(what, service="Azure Resource Manager"):
                found = client.web_apps.get(site.resource_group, site.name)
            state = str(found.state or "Unknown")
            if state == "Running" and found.default_host_name:
                url = f"https://{found.default_host_name}{health_path or '/'}"
            else:
                last = f"it reports state {state!r}"
        if url:
            status = probe(url, max(1.0, min(30.0, deadline - time.monotonic())))
            if is_ready(status, health_check_path=health_path or None):
                logger.info("%s serves again: %s answered %s", what, url, status)
                return ConsumerRestarted(
                    consumer_id=consumer_id,
                    state="Running",
                    refreshed_settings=refreshed,
                    pinned_settings=pinned,
                    ready_by=f"GET {url} answered {status}",
                )
            last = (
                f"GET {url} answered {status}" if isinstance(status, int) else f"GET {url} failed ({status})"
            )
        if time.monotonic() >= deadline:
            check = (
                f"its health check {health_path!r}"
                if health_path
                else "any answer below 500 (no health check path)"
            )
            raise TransientError(
                f"{what} did not pass {check} within {ready_timeout_seconds:g}s of its restart: {last}"
            )
        sleep(POLL_SECONDS)


def _refresh_references(
    client: WebSiteManagementClient, site: SiteRef, what: str, secret: SecretRef, rotation_id: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Make the app fetch its Key Vault references to ``secret`` again, if it has any: write its
    app settings back as they are, plus ``REFRESH_SETTING``. Returns the names of the settings
    that reference the secret, and of those pinned to a version (left as they are: the refetch
    brings them the same version; moving them is the app owner's choice). The values read here
    are the app's own secrets among others: they stay in this function, never in a log."""
    with translated(what, service="Azure Resource Manager"):
        current = dict(
            client.web_apps.list_application_settings(site.resource_group, site.name).properties or {}
        )
    kinds = {name: reference_to(value, secret) for name, value in current.items()}
    pinned = tuple(sorted(name for name, kind in kinds.items() if kind == "pinned"))
    if pinned:
        logger.warning(
            "%s: settings %s reference %s at a fixed version; they keep it",
            what,
            ", ".join(pinned),
            secret.secret_name,
        )
    refreshed = tuple(sorted(name for name, kind in kinds.items() if kind == "latest"))
    if not refreshed:
        return (), pinned
    with translated(what, service="Azure Resource Manager"):
        client.web_apps.update_application_settings(
            site.resource_group,
            site.name,
            StringDictionary(properties={**current, REFRESH_SETTING: rotation_id}),
        )
    logger.info(
        "changed the configuration of %s so that it fetches %s again (settings %s)",
        what,
        secret.secret_name,
        ", ".join(refreshed),
    )
    return refreshed, pinned
