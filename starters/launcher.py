"""Starting a rotation, with the checks every starter shares (Event Grid, HTTP API, sweep).

One orchestration per secret version (DESIGN.md 3.5): the instance id is derived from vault,
secret and version, so a duplicate delivery finds its instance and starts nothing; a secret
with a rotation still running is refused; an event about a version that is no longer current
starts nothing.

A rotation of the version that ended without rotating it (Failed, Terminated, or Completed
as rejected or timed out) does not block the version forever: the launcher starts it again
under the same instance id, which the task hub allows for an instance that has ended (the
extension's ``overridableExistingInstanceStates``, by default ``NonRunningStates``). Every step
checks before it acts, so the new run takes up what the ended one left (the pending value it
staged, a target that already takes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Literal

import azure.durable_functions as df
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from rotation import metadata
from rotation.clients import vault_named
from rotation.errors import InvalidRequest
from rotation.model import RESTARTABLE_RESULTS, RotationPolicy, RotationRequest, SecretRef
from rotation.settings import Settings

logger = logging.getLogger(__name__)

ORCHESTRATOR = "rotate_secret"
ACTIVE = [
    OrchestrationRuntimeStatus.Running,
    OrchestrationRuntimeStatus.Pending,
    OrchestrationRuntimeStatus.Suspended,
    OrchestrationRuntimeStatus.ContinuedAsNew,
]

Outcome = Literal["started", "restarted", "duplicate", "busy", "ignored", "refused"]
# Runtime statuses of a rotation that ended without a result to keep (Canceled is not used by
# the extension, but is an end too).
ENDED_UNFINISHED = (
    OrchestrationRuntimeStatus.Failed,
    OrchestrationRuntimeStatus.Terminated,
    OrchestrationRuntimeStatus.Canceled,
)


@dataclass(frozen=True)
class Launch:
    outcome: Outcome
    reason: str
    rotation_id: str | None = None

    @property
    def started(self) -> bool:
        """A rotation started now (a new one, or one that had ended unfinished started again)."""
        return self.outcome in ("started", "restarted")


def policy_from(settings: Settings) -> RotationPolicy:
    return RotationPolicy(
        retry_max_attempts=settings.retry_max_attempts,
        retry_first_interval_seconds=settings.retry_first_interval_seconds,
        approval_timeout_hours=settings.approval_timeout_hours,
        consumer_ready_timeout_seconds=settings.consumer_ready_timeout_seconds,
        write_settle_seconds=settings.write_settle_seconds,
        outage_retry_hours=settings.outage_retry_hours,
    )


def ended_unfinished(status: DurableOrchestrationStatus) -> str | None:
    """Why a rotation that exists may start again: it ended without rotating (Failed,
    Terminated, or Completed with a result that changed nothing for good: rejected, timed out).
    None while it runs, or when it ended rotated, rolled forward or skipped."""
    runtime = status.runtime_status
    if runtime in ENDED_UNFINISHED:
        return f"its last run ended {runtime.value}"
    if runtime == OrchestrationRuntimeStatus.Completed:
        output = status.output
        if isinstance(output, str):  # an output the client left as its JSON text
            with contextlib.suppress(ValueError):
                output = json.loads(output)
        result = output.get("result") if isinstance(output, dict) else None
        if result in RESTARTABLE_RESULTS:
            return f"its last run ended {result}"
    return None


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
    restart_reason: str | None = None
    existing = await client.get_status(rotation_id)
    if existing and existing.runtime_status is not None:
        restart_reason = ended_unfinished(existing)
        if restart_reason is None:
            return _said(
                Launch("duplicate", "a rotation of this version exists already", rotation_id), secret
            )
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
        # one create (or start again) the instance, and refuses the other while it runs.
        now = await client.get_status(rotation_id)
        if now and now.runtime_status in ACTIVE:
            return _said(
                Launch("duplicate", "a rotation of this version was started concurrently", rotation_id),
                secret,
            )
        raise
    if restart_reason is not None:
        reason = f"{trigger} for version {current.version}; {restart_reason}, so it starts again"
        return _said(Launch("restarted", reason, rotation_id), secret)
    return _said(Launch("started", f"{trigger} for version {current.version}", rotation_id), secret)


def _said(result: Launch, secret: SecretRef) -> Launch:
    level = (
        logging.INFO
        if result.outcome in ("started", "restarted", "duplicate", "ignored")
        else logging.WARNING
    )
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
