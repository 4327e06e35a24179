"""A consuming app that signs in as an Entra application with a client secret it read from Key Vault, once.

This is what rotating an application's client secret breaks when nobody restarts the app: at start
it reads the secret (with its own managed identity) and caches it for its whole life. ``GET
/health`` signs in **afresh** each time (a new ``ClientSecretCredential``, so no token cache) as the
application, and reads the vault with that token: 200 ``{"ok": true, "version": …}`` only when
Entra ID still accepts the cached secret and the application may read the vault, else 503 with the
error's class. The local cloud runs it as an App Service site, so after a rotation the site reports
Running again only once it was restarted and picked up the new secret.

Environment (set by the topology): ``PORT``; ``SP_CONSUMER_VAULT`` (a vault name, or its URL) and
``SP_CONSUMER_SECRET`` (the secret holding the client secret); ``SP_CONSUMER_APP_ID`` (the
application's client id) and ``SP_CONSUMER_TENANT``; optionally ``SP_CONSUMER_PROBE_SECRET`` (a
secret to read with the application's token; without it the probe lists the vault's secrets);
plus the managed identity variables, proxy and CA bundle the local cloud gives every site.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

logger = logging.getLogger("sp_consumer_app")

VAULT_DNS_SUFFIX = "vault.azure.net"


def vault_url(name_or_url: str) -> str:
    if name_or_url.startswith("https://"):
        return name_or_url.rstrip("/")
    return f"https://{name_or_url}.{VAULT_DNS_SUFFIX}"


class SpConsumer:
    def __init__(self) -> None:
        self.vault_url = vault_url(os.environ["SP_CONSUMER_VAULT"])
        self.tenant_id = os.environ["SP_CONSUMER_TENANT"]
        self.app_id = os.environ["SP_CONSUMER_APP_ID"]
        self.probe_secret = os.environ.get("SP_CONSUMER_PROBE_SECRET") or None
        identity = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        secret = SecretClient(self.vault_url, identity).get_secret(os.environ["SP_CONSUMER_SECRET"])
        self.version = secret.properties.version
        self._client_secret = secret.value or ""
        logger.info("read client secret version %s at start", self.version)

    def _probe(self) -> None:
        """Sign in as the application with the cached secret (no token cache) and read the vault."""
        with ClientSecretCredential(self.tenant_id, self.app_id, self._client_secret) as credential:
            client = SecretClient(self.vault_url, credential)
            if self.probe_secret:
                client.get_secret(self.probe_secret)
            else:
                next(iter(client.list_properties_of_secrets(max_page_size=1).by_page()), None)

    async def health(self, _: web.Request) -> web.Response:
        try:
            await asyncio.to_thread(self._probe)
        except Exception as exc:  # any failure means "unhealthy"; the class says which
            logger.info("health check failed: %s", type(exc).__name__)
            return web.json_response(
                {"ok": False, "version": self.version, "error": type(exc).__name__}, status=503
            )
        return web.json_response({"ok": True, "version": self.version})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sp_consumer_app %(message)s")
    # azure-identity logs a failed get_token at WARNING with the error, which is fine, but its
    # successful sign-ins at INFO would fill the site log at every health check.
    logging.getLogger("azure").setLevel(logging.WARNING)
    app = web.Application()
    app.router.add_get("/health", SpConsumer().health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)


if __name__ == "__main__":
    main()
