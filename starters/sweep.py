"""sweep: the daily backstop for lost events.

Event Grid delivers at least once but NearExpiry is best effort and undocumented in its
repetition; the sweep lists the configured vaults and starts a rotation for every tagged
secret inside the near-expiry window that has none yet, with the same checks as the events.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df
import azure.functions as func

from rotation import metadata
from rotation.clients import vault_named
from rotation.errors import RotationError
from rotation.model import SecretRef, VaultId, is_companion_name
from rotation.settings import Settings, current_settings
from starters.launcher import launch

logger = logging.getLogger(__name__)

bp = df.Blueprint()


async def sweep_vault(
    client: df.DurableOrchestrationClient, vault: VaultId, settings: Settings
) -> dict[str, int]:
    """Start what is due in one vault; returns how many secrets ended in each launch outcome."""
    horizon = datetime.now(UTC) + timedelta(days=settings.near_expiry_days)
    counts: dict[str, int] = {}
    listed = await asyncio.to_thread(vault_named(vault.vault_name, settings).list_secrets)
    for info in listed:
        due = info.enabled and info.expires_on is not None and info.expires_on <= horizon
        if not due or is_companion_name(info.name) or not metadata.is_opted_in(info.tags):
            continue
        secret = SecretRef(
            subscription_id=vault.subscription_id, vault_name=vault.vault_name, secret_name=info.name
        )
        try:
            result = await launch(
                client, secret, version=None, trigger="sweep", requested_by="sweep", settings=settings
            )
            outcome: str = result.outcome
        except RotationError as exc:
            logger.warning("sweep: %s/%s not started: %s", vault.vault_name, info.name, exc)
            outcome = "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@bp.timer_trigger(schedule="%ROTATION_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def sweep(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    settings = current_settings()
    for vault in settings.sweep_vaults:
        try:
            counts = await sweep_vault(client, vault, settings)
        except RotationError as exc:
            # One unreachable vault must not keep the others from being swept.
            logger.warning("sweep: vault %s skipped: %s", vault.vault_name, exc)
            continue
        logger.info("sweep: vault %s: %s", vault.vault_name, counts or "nothing due")
