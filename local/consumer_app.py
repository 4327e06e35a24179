"""A consuming app for local runs: reads its database password from Key Vault once, at start.

This is the kind of app rotation breaks when nobody restarts it: it caches the secret for its
whole life. The local cloud runs it as an App Service site; ``GET /health`` logs in to
PostgreSQL afresh with the cached password and answers 200 only when that works, so the site
reports Running again after a restart only if it picked up the new password.

Environment (set by the topology): ``PORT``; ``CONSUMER_VAULT`` and ``CONSUMER_SECRET`` (which
secret to read), or instead ``CONSUMER_DB_PASSWORD`` (an app setting holding the password, such as
a Key Vault reference App Service resolves); ``CONSUMER_DB`` (``host:port/database``) and ``CONSUMER_DB_USER``; plus the
managed identity variables the local cloud gives every site (``IDENTITY_ENDPOINT``,
``IDENTITY_HEADER``, ``AZURE_CLIENT_ID``) and its proxy and CA bundle.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from rotation.errors import RotationError
from rotation.settings import Settings
from rotation.targets import value_target_type
from rotation.targets.base import AdminSpec, SecretValue, Target, TargetSpec

logger = logging.getLogger("consumer_app")
# When set (typically to a Key Vault reference, @Microsoft.KeyVault(...)), the password itself.
PASSWORD_SETTING = "CONSUMER_DB_PASSWORD"  # noqa: S105 (a setting name, not a password)


class Consumer:
    def __init__(self) -> None:
        settings = Settings.from_environ()
        if PASSWORD_SETTING in os.environ:
            # An app setting App Service filled in (a Key Vault reference, resolved and cached by
            # the platform): the app never talks to Key Vault itself.
            self.version: str | None = "app setting"
            self._password = SecretValue(os.environ[PASSWORD_SETTING])
        else:
            credential = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
            vault_url = f"https://{os.environ['CONSUMER_VAULT']}.{settings.keyvault_dns_suffix}"
            secret = SecretClient(vault_url, credential).get_secret(os.environ["CONSUMER_SECRET"])
            self.version = secret.properties.version
            self._password = SecretValue(secret.value or "")
        spec = TargetSpec(
            kind="postgresql-login",
            provider=os.environ["CONSUMER_DB"],
            credential=os.environ["CONSUMER_DB_USER"],
            admin=AdminSpec(mode="self"),
        )
        # The login check of the target module is exactly "a fresh connection, SELECT 1".
        self._database: Target = value_target_type(spec.kind).build(spec, settings)
        logger.info("read secret version %s at start", self.version)

    async def health(self, _: web.Request) -> web.Response:
        try:
            await asyncio.to_thread(self._database.verify, value=self._password)
        except RotationError as exc:
            return web.json_response({"ok": False, "version": self.version, "error": exc.detail}, status=503)
        return web.json_response({"ok": True, "version": self.version})


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s consumer_app %(message)s")
    app = web.Application()
    app.router.add_get("/health", Consumer().health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)


if __name__ == "__main__":
    main()
