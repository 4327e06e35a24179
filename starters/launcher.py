"""Starting a rotation, with the checks every starter shares (Event Grid, HTTP API, sweep).

One orchestration per secret version (DESIGN.md 3.5): the instance id is derived from vault,
secret and version, so a duplicate delivery finds its instance and starts nothing; a secret
with a rotation still running is refused; an event about a version that is no longer current
starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from rotation import metadata
from rotation.clients import vault_named
from rotation.errors import InvalidRequest
from rotation.model import RotationPolicy, RotationRequest, SecretRef
from rotation.settings import Settings

logger = logging.getLogger(__name__)

ORCHESTRATOR = "rotate_secret"
ACTIVE = [
    OrchestrationRuntimeStatus.Running,
    OrchestrationRuntimeStatus.Pending,
    OrchestrationRuntimeStatus.Suspended,
    OrchestrationRuntimeStatus.ContinuedAsNew,
]

Outcome = Literal["started", "duplicate", "busy", "ignored", "refused"]


@dataclass(frozen=True)
class Launch:
    outcome: Outcome
    reason: str
    rotation_id: str | None = None

    @property
    def started(self) -> bool:
        return self.outcome == "started"


def policy_from(settings: Settings) -> RotationPolicy:
    return RotationPolicy(
        retry_max_attempts=settings.retry_max_attempts,
        retry_first_interval_seconds=settings.retry_first_interval_seconds,
        approval_timeout_hours=settings.approval_timeout_hours,
        consumer_ready_timeout_seconds=settings.consumer_ready_timeout_seconds,
        write_settle_seconds=settings.write_settle_seconds,
    )


async def instance_exists(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    status = await client.get_status(instance_id)
    return bool(status) and status.runtime_status is not None


async def launch(
    client: df.DurableOrchestrationClient,
    secret: SecretRef,
    *,
    version: str | None,
    trigger: str,
    requested_by: str | None,
    settings: Settings,
    requested_by_id: str | None = None,
) -> Launch:
    """Start ``rotate_secret`` for the current version of ``secret`` unless a check says no.

    ``version`` is the version the event was about (None: whatever is current now);
    ``requested_by_id`` the object id of the principal App Service authentication vouched for.

    Raises:
        TransientError: Key Vault could not be read now (the caller should fail so the event
            is delivered again).
    """
    vault = vault_named(secret.vault_name, settings)
    current = await asyncio.to_thread(vault.current, secret.secret_name)
    if not metadata.is_opted_in(current.tags):
        return _said(Launch("ignored", f"secret {secret.secret_name!r} has no {metadata.TARGET} tag"), secret)
    try:
        meta = metadata.parse_tags(secret.secret_name, current.tags)
        metadata.check_validity_outlasts_window(secret.secret_name, meta, settings.near_expiry_days)
    except InvalidRequest as exc:
        return _said(Launch("refused", exc.detail), secret)
    if version is not None and version != current.version:
        return _said(
            Launch(
                "ignored",
                f"version {version} is no longer current (the current version is {current.version})",
            ),
            secret,
        )
    rotation_id = secret.rotation_id(current.version)
    if await instance_exists(client, rotation_id):
        return _said(Launch("duplicate", "a rotation of this version exists already", rotation_id), secret)
    running = await client.get_status_by(
        runtime_status=ACTIVE, instance_id_prefix=secret.rotation_id_prefix()
    )
    if any(status.instance_id == rotation_id for status in running):
        # Another delivery of the same event created this very instance since the check above.
        return _said(
            Launch("duplicate", "a rotation of this version was started concurrently", rotation_id), secret
        )
    if running:
        other = running[0].instance_id
        return _said(Launch("busy", f"rotation {other} of this secret is still running", rotation_id), secret)
    request = RotationRequest(
        secret=secret,
        version=current.version,
        trigger=trigger,
        policy=policy_from(settings),
        requested_by=requested_by,
        requested_by_id=requested_by_id,
    )
    try:
        await client.start_new(ORCHESTRATOR, rotation_id, request.to_dict())
    except Exception:
        # Two deliveries of one event can pass the checks above at once; the task hub lets only
        # one create the instance.
        if await instance_exists(client, rotation_id):
            return _said(
                Launch("duplicate", "a rotation of this version was started concurrently", rotation_id),
                secret,
            )
        raise
    return _said(Launch("started", f"{trigger} for version {current.version}", rotation_id), secret)


def _said(result: Launch, secret: SecretRef) -> Launch:
    level = logging.INFO if result.outcome in ("started", "duplicate", "ignored") else logging.WARNING
    logger.log(
        level,
        "rotation of %s/%s %s: %s%s",
        secret.vault_name,
        secret.secret_name,
        result.outcome,
        result.reason,
        f" ({result.rotation_id})" if result.rotation_id else "",
    )
    return result
