"""Run by test_cloud_async as a separate process, with the local cloud's client environment.

aiohttp reads SSL_CERT_FILE when it is imported, so the async clients are exercised in a fresh
process that starts with the environment, as a real client process would. Prints one JSON
object with what the clients saw.
"""

from __future__ import annotations

import asyncio
import json
import sys

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient


async def main(vault_url: str, reader_client_id: str, *application: str) -> dict[str, object]:
    report: dict[str, object] = {}
    async with DefaultAzureCredential() as credential, SecretClient(vault_url, credential) as client:
        made = await client.set_secret("async-secret", "from-aiohttp", tags={"via": "async"})
        report["version"] = made.properties.version
        report["value"] = (await client.get_secret("async-secret")).value
        await client.set_secret("async-secret", "second")
        report["versions"] = len([p async for p in client.list_properties_of_secret_versions("async-secret")])
        report["listed"] = "async-secret" in [
            p.name async for p in client.list_properties_of_secrets(max_page_size=2)
        ]
        updated = await client.update_secret_properties("async-secret", content_type="text/plain")
        report["content_type"] = updated.content_type
        deleted = await client.delete_secret("async-secret")
        report["recovery_id"] = deleted.recovery_id
        try:
            await client.get_secret("async-secret")
        except ResourceNotFoundError as exc:
            report["after_delete"] = exc.error.code if exc.error else None
        recovered = await client.recover_deleted_secret("async-secret")
        report["recovered"] = recovered.name
    reader_credential = ManagedIdentityCredential(client_id=reader_client_id)
    async with reader_credential, SecretClient(vault_url, reader_credential) as reader:
        try:
            await reader.set_secret("async-secret", "denied")
        except HttpResponseError as exc:
            code = exc.error.code if exc.error else None
            report["reader_set"] = [exc.status_code, code, "ForbiddenByRbac" in str(exc)]
    if application:  # tenant, client id, secret: the async ClientSecretCredential posts to Entra directly
        tenant, client_id, secret = application
        app_credential = ClientSecretCredential(tenant, client_id, secret)
        async with app_credential, SecretClient(vault_url, app_credential) as as_app:
            report["app_listed"] = "async-secret" in [
                p.name async for p in as_app.list_properties_of_secrets()
            ]
        try:
            async with ClientSecretCredential(tenant, client_id, secret + "x") as wrong:
                await wrong.get_token("https://vault.azure.net/.default")
        except ClientAuthenticationError as exc:
            report["app_wrong_secret"] = "AADSTS7000215" in str(exc)
    return report


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)[:500]}))
