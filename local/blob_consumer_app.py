"""A consuming app that uses a storage account through a connection string it read from Key Vault, once.

This is what rotating a storage account key breaks when nobody restarts the app: at start it reads
the connection string (with its own managed identity) and keeps it for its whole life. ``GET
/health`` writes a small blob (creating the container if it is missing) and reads it back with that
connection string: 200 ``{"ok": true, "version": …}`` (the Key Vault version it read) only when
that works, else 503 with the storage error's code. The local cloud runs it as an App Service site,
so after its key is regenerated the site reports Running again only once it was restarted and
picked up a connection string with a key the account still has.

Environment (set by the topology): ``PORT``; ``BLOB_CONSUMER_VAULT`` (a vault name, or its URL)
and ``BLOB_CONSUMER_SECRET`` (the secret holding the connection string); optionally
``BLOB_CONSUMER_CONTAINER`` (default ``health``); plus the managed identity variables, proxy and CA
bundle the local cloud gives every site.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from aiohttp import web
from azure.core.exceptions import AzureError, HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.storage.blob import BlobServiceClient

logger = logging.getLogger("blob_consumer_app")

VAULT_DNS_SUFFIX = "vault.azure.net"


def vault_url(name_or_url: str) -> str:
    if name_or_url.startswith("https://"):
        return name_or_url.rstrip("/")
    return f"https://{name_or_url}.{VAULT_DNS_SUFFIX}"


class BlobConsumer:
    def __init__(self) -> None:
        identity = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        vault = vault_url(os.environ["BLOB_CONSUMER_VAULT"])
        secret = SecretClient(vault, identity).get_secret(os.environ["BLOB_CONSUMER_SECRET"])
        self.version = secret.properties.version
        self._connection_string = secret.value or ""
        self.container = os.environ.get("BLOB_CONSUMER_CONTAINER") or "health"
        self.blob = f"health-{os.environ.get('WEBSITE_SITE_NAME', 'blob-consumer-app')}.txt"
        logger.info("read connection string version %s at start", self.version)

    def _probe(self) -> None:
        """Write a blob and read it back with the cached connection string (one attempt, no retries)."""
        client = BlobServiceClient.from_connection_string(
            self._connection_string, retry_total=0, connection_timeout=10, read_timeout=30
        )
        with client:
            container = client.get_container_client(self.container)
            if not container.exists():
                container.create_container()
            payload = f"{self.version} {time.time():.3f}".encode()
            blob = container.get_blob_client(self.blob)
            blob.upload_blob(payload, overwrite=True)
            if blob.download_blob().readall() != payload:
                raise RuntimeError("the blob read back differs from the one written")

    async def health(self, _: web.Request) -> web.Response:
        try:
            await asyncio.to_thread(self._probe)
        except (AzureError, RuntimeError, ValueError) as exc:
            code = getattr(exc, "error_code", None) if isinstance(exc, HttpResponseError) else None
            error = str(getattr(code, "value", code) or type(exc).__name__)  # StorageErrorCode is an enum
            logger.info("health check failed: %s", error)
            return web.json_response({"ok": False, "version": self.version, "error": error}, status=503)
        return web.json_response({"ok": True, "version": self.version})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s blob_consumer_app %(message)s")
    # azure-core logs every request at INFO (with the URL); only failures matter here.
    logging.getLogger("azure").setLevel(logging.WARNING)
    app = web.Application()
    app.router.add_get("/health", BlobConsumer().health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)


if __name__ == "__main__":
    main()
