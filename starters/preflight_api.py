"""``POST /api/preflight``: would these secrets rotate if their events came now?

Body ``{"vault": <ARM id or a configured vault name>, "secret": <optional name>}``; without
``secret``, every tagged secret of the vault that is not a companion. Runs the preflight
(``rotation.preflight``: nothing is changed) and answers 200 with
``{"vault", "ok", "secrets": [{"secret", "target", "ok", "checks": [{"name", "ok", "detail"}]}]}``.
Errors as the rest of the API (``starters/http_api.py``): 400 bad input, 403 a vault outside the
allowlist, 404 an unknown secret, 503 when Key Vault does not answer now.
"""

from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func

from rotation.model import check_secret_name
from rotation.preflight import VaultPreflight, run_many
from rotation.settings import current_settings
from starters.http_api import (
    json_errors,
    json_response,
    request_body,
    require_allowed,
    resolve_vault,
    text_field,
)

bp = df.Blueprint()


@bp.route(route="preflight", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@bp.durable_client_input(client_name="client")
@json_errors
async def preflight(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    settings = current_settings()
    body = request_body(req)
    vault = resolve_vault(text_field(body, "vault", required=True), settings)
    name = text_field(body, "secret", required=False)
    if name:
        check_secret_name(name)
    await require_allowed(vault, settings)
    checker = VaultPreflight(vault, settings)
    if name:
        reports = [await asyncio.to_thread(checker.run, name)]
    else:
        reports = await run_many(checker, await asyncio.to_thread(checker.tagged_secrets))
    return json_response(
        200,
        {
            "vault": vault.vault_name,
            "ok": all(report.ok for report in reports),
            "secrets": [report.to_dict() for report in reports],
        },
    )
