"""sweep: the daily backstop for lost events, and the early warning.

Event Grid delivers at least once but NearExpiry is best effort and undocumented in its
repetition; the sweep lists the configured vaults and starts a rotation for every tagged
secret inside the near-expiry window that has none yet, with the same checks as the events.

It also runs the preflight (``rotation.preflight``) on the tagged secrets whose expiry enters
the near-expiry window within ``ROTATION_PREFLIGHT_AHEAD_DAYS``, and logs a warning naming each
failing secret and its failing checks, so a broken secret is known weeks before its rotation.
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
from rotation.notifications import preflight_failed
from rotation.notify_delivery import deliver
from rotation.preflight import SecretReport, VaultPreflight, run_many
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


async def preflight_upcoming(
    vault: VaultId, settings: Settings, *, now: datetime | None = None
) -> list[SecretReport]:
    """Run the preflight on the vault's tagged secrets whose expiry enters the near-expiry window
    within ``ROTATION_PREFLIGHT_AHEAD_DAYS`` (those already inside it are being rotated), log a
    warning per failing secret with its failing checks (names and reasons, never values), and
    return the failing secrets' reports.

    Raises:
        TransientError, AuthenticationFailed: the vault could not be listed now.
    """
    if settings.preflight_ahead_days <= 0:
        return []
    now = now or datetime.now(UTC)
    window_opens_after = now + timedelta(days=settings.near_expiry_days)
    window_opens_by = window_opens_after + timedelta(days=settings.preflight_ahead_days)
    preflight = VaultPreflight(vault, settings)
    listed = await asyncio.to_thread(preflight.vault.list_secrets)
    upcoming = sorted(
        info.name
        for info in listed
        if info.enabled
        and info.expires_on is not None
        and window_opens_after < info.expires_on <= window_opens_by
        and not is_companion_name(info.name)
        and metadata.is_opted_in(info.tags)
    )
    failing = [report for report in await run_many(preflight, upcoming) if not report.ok]
    for report in failing:
        logger.warning(
            "preflight: %s/%s would not rotate: %s",
            vault.vault_name,
            report.secret,
            "; ".join(f"{check.name}: {check.detail}" for check in report.failing),
        )
    logger.info(
        "preflight: vault %s: %d secret(s) enter the window within %g days, %d failing",
        vault.vault_name,
        len(upcoming),
        settings.preflight_ahead_days,
        len(failing),
    )
    return failing


@bp.timer_trigger(schedule="%ROTATION_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def sweep(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    settings = current_settings()
    failing: list[tuple[VaultId, SecretReport]] = []
    for vault in settings.sweep_vaults:
        try:
            counts = await sweep_vault(client, vault, settings)
            logger.info("sweep: vault %s: %s", vault.vault_name, counts or "nothing due")
            failing += [(vault, report) for report in await preflight_upcoming(vault, settings)]
        except RotationError as exc:
            # One unreachable vault must not keep the others from being swept.
            logger.warning("sweep: vault %s skipped: %s", vault.vault_name, exc)
    if failing:
        logger.warning(
            "sweep: %d secret(s) would not rotate: %s",
            len(failing),
            ", ".join(f"{vault.vault_name}/{report.secret}" for vault, report in failing),
        )
        await announce_failing(failing, settings)


async def announce_failing(failing: list[tuple[VaultId, SecretReport]], settings: Settings) -> None:
    """One ``preflight-failed`` notification per secret that would not rotate: the reports hold
    names, target kinds and the failing checks' reasons, never a value. Delivery never raises."""
    now = datetime.now(UTC).isoformat()
    for vault, report in failing:
        notification = preflight_failed(
            vault=vault.vault_name,
            secret=report.secret,
            target=report.target or "",
            failing_checks={check.name: check.detail for check in report.failing},
            time=now,
        )
        await asyncio.to_thread(deliver, notification, settings)
