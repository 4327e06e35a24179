"""Azure SDK clients, authenticated as the hub's user-assigned managed identity.

Clients are built once per process and shared: they hold connection pools and the identity's
token cache, and both the sync SDK clients and the credential are safe to use from threads.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import requests.utils
from azure.eventgrid import EventGridPublisherClient
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.web import WebSiteManagementClient

from rotation.azure_errors import translated
from rotation.model import check_vault_name
from rotation.settings import Settings
from rotation.targets.base import SecretValue
from rotation.vault import Vault, VersionCache


@cache
def _credential(client_id: str) -> ManagedIdentityCredential:
    # An empty client id means the system-assigned identity; the hub is meant to use its UAMI.
    return ManagedIdentityCredential(client_id=client_id or None)


def _environment_read_once(url: str) -> dict[str, Any]:
    """What `requests` would take from the environment on every request to ``url`` (the proxy
    for it, honouring NO_PROXY, and REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE), taken once for a
    client. A Functions worker's environment does not change while it runs (a settings change
    restarts it), and reading it per request scans every variable each time (8 % of the worker
    processes' samples in a profile of 500 rotations, 0.1-0.2 ms per request)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return {
        "use_env_settings": False,
        "proxies": requests.utils.get_environ_proxies(url) or None,
        "connection_verify": bundle or True,
    }


@cache
def _secret_client(vault_url: str, client_id: str, timeout_seconds: float) -> SecretClient:
    return SecretClient(
        vault_url=vault_url,
        credential=_credential(client_id),
        connection_timeout=min(10.0, timeout_seconds),
        # Without it the SDK waits up to 300 s for an answer; a write whose answer does not come
        # is then settled by the orchestrator (ROTATION_WRITE_SETTLE_SECONDS).
        read_timeout=timeout_seconds,
        **_environment_read_once(vault_url),
    )


def _arm(arm_endpoint: str) -> dict[str, Any]:
    """Where an ARM client goes, and the audience of its tokens (this cloud's ARM endpoint)."""
    return {"base_url": arm_endpoint, "credential_scopes": [arm_endpoint + "/.default"]}


@cache
def _web_client(subscription_id: str, arm_endpoint: str, client_id: str) -> WebSiteManagementClient:
    return WebSiteManagementClient(_credential(client_id), subscription_id, **_arm(arm_endpoint))


@cache
def _storage_client(subscription_id: str, arm_endpoint: str, client_id: str) -> StorageManagementClient:
    return StorageManagementClient(_credential(client_id), subscription_id, **_arm(arm_endpoint))


@cache
def _keyvault_client(subscription_id: str, arm_endpoint: str, client_id: str) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(_credential(client_id), subscription_id, **_arm(arm_endpoint))


# The permissions API's version the hub was written against (azure-mgmt-authorization is a
# multi-version client; pinning it keeps a library update from changing the wire format).
AUTHORIZATION_API_VERSION = "2022-04-01"


@cache
def _authorization_client(
    subscription_id: str, arm_endpoint: str, client_id: str
) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(
        _credential(client_id), subscription_id, api_version=AUTHORIZATION_API_VERSION, **_arm(arm_endpoint)
    )


# A notification is worth a short wait, not the SDK's default of ten retries and five-minute
# timeouts: the activity that publishes it must end soon whatever the topic does. azure-eventgrid
# 4.22's client for basic topics drops the keyword arguments given to its constructor, so these
# go with each send, where azure-core's retry policy and transport read them.
EVENTGRID_SEND_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "connection_timeout": 10,
    "read_timeout": 30,
}


@cache
def _eventgrid_publisher(endpoint: str, client_id: str) -> EventGridPublisherClient:
    return EventGridPublisherClient(endpoint, _credential(client_id))


@cache
def _version_cache(ttl_seconds: float) -> VersionCache:
    return VersionCache(ttl_seconds)


def vault_named(vault_name: str, settings: Settings) -> Vault:
    """A spoke vault; its URL is built from the (validated) name and the DNS-suffix setting.
    Versions read by id are shared by every activity of this process (``VersionCache``)."""
    name = check_vault_name(vault_name)
    return Vault(
        _secret_client(
            f"https://{name}.{settings.keyvault_dns_suffix}",
            settings.client_id,
            settings.keyvault_timeout_seconds,
        ),
        vault_name=name,
        versions=_version_cache(settings.keyvault_cache_seconds),
    )


def web_client(subscription_id: str, settings: Settings) -> WebSiteManagementClient:
    return _web_client(subscription_id, settings.arm_endpoint, settings.client_id)


def storage_client(subscription_id: str, settings: Settings) -> StorageManagementClient:
    return _storage_client(subscription_id, settings.arm_endpoint, settings.client_id)


def keyvault_client(subscription_id: str, settings: Settings) -> KeyVaultManagementClient:
    """ARM's Key Vault resource provider (the vaults as resources, not their secrets)."""
    return _keyvault_client(subscription_id, settings.arm_endpoint, settings.client_id)


def authorization_client(subscription_id: str, settings: Settings) -> AuthorizationManagementClient:
    return _authorization_client(subscription_id, settings.arm_endpoint, settings.client_id)


def eventgrid_publisher(settings: Settings) -> EventGridPublisherClient:
    """The publisher of the notification topic (``ROTATION_NOTIFY_TOPIC_ENDPOINT``), as the hub identity."""
    return _eventgrid_publisher(settings.notify_topic_endpoint, settings.client_id)


def hub_credential(settings: Settings) -> ManagedIdentityCredential:
    """The hub's identity, for the SDK clients and pipelines of the targets (Graph)."""
    return _credential(settings.client_id)


def access_token(scope: str, settings: Settings) -> SecretValue:
    """The hub identity's access token for ``scope`` (a database's Entra audience); the
    credential caches it until shortly before it expires.

    Raises:
        AuthenticationFailed: the identity endpoint refuses the hub's identity.
        TransientError: the identity endpoint cannot be reached or is overloaded.
    """
    with translated(f"a token for {scope}", service="the managed identity endpoint"):
        return SecretValue(_credential(settings.client_id).get_token(scope).token)


def clear_cache() -> None:
    """Forget the clients built so far (for a process whose Azure endpoints changed: tests)."""
    for cached in (
        _credential,
        _secret_client,
        _web_client,
        _storage_client,
        _keyvault_client,
        _authorization_client,
        _eventgrid_publisher,
    ):
        cached.cache_clear()
