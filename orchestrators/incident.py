"""incident: rotate every secret in a scope now, as sub-orchestrations within concurrency bounds.

list the secrets in scope (an activity: names, versions, target kinds and servers) -> start
``rotate_secret`` for each as a sub-orchestration whose instance id is the rotation id of its
version (the id every starter uses), keeping at most ``max_per_vault`` running in one vault and
``max_per_server`` against one target server -> as each ends, start the next that fits.

Steering is one external event, ``IncidentControl`` (``{"action": "pause"|"resume"|"cancel",
"by": ...}``), handled in order with the rotations' completions: paused, the incident starts
nothing while its running rotations carry on and their results keep counting; resumed, it fills
the free slots again; cancelled, it starts no more, lets the running ones finish and ends. (An
event rather than the durable client's suspend: a suspended instance holds back every event,
so a cancel sent to a paused incident would only be seen after the completions held with it,
which could start new rotations first.) A rotation of the same version already running elsewhere makes its
sub-orchestration fail at creation ("already exists"): counted as skipped, it rotates there.

The custom status is the summary: totals, per vault, the first failures. After
``COMPLETIONS_PER_EXECUTION`` completions the incident stops starting, lets the running ones end
and continues as new with what is left (the history stays small; a sub-orchestration's
completion is addressed to the execution that started it, so none may be running then).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from orchestrators.saga import Retry, StepError, StepFailed, call_with_retries
from rotation.incidents import (
    ADMISSION_TIMEOUT_MINUTES,
    ADMIT_EVENT,
    ADMITTING,
    CONTROL_ACTIONS,
    CONTROL_EVENT,
    MAX_FAILURES_SHOWN,
    Excluded,
    IncidentFailure,
    IncidentItem,
    IncidentListing,
    IncidentProgress,
    IncidentRequest,
    Slots,
    VaultCounts,
    next_to_start,
)
from rotation.model import RotationRequest

logger = logging.getLogger(__name__)

bp = df.Blueprint()

ROTATION_ORCHESTRATOR = "rotate_secret"
ALREADY_EXISTS = "already exists"
MAX_VAULTS_SHOWN = 50
# A failure's detail in the status (the rotation's own status has all of it).
MAX_DETAIL = 200


class IncidentFailed(Exception):
    """The scope could not be listed; nothing was started."""


class _Summary:
    """The incident's counts, per vault and in total, and the custom status built from them."""

    def __init__(self, context: df.DurableOrchestrationContext, request: IncidentRequest) -> None:
        self.context = context
        self.request = request
        progress = request.progress
        self.counts = {c.vault_name: c for c in progress.counts} if progress else {}
        self.failures = list(progress.failures) if progress else []
        self.excluded = progress.excluded if progress else 0
        self.excluded_shown = list(progress.excluded_shown) if progress else []
        self.cancelled_by = progress.cancelled_by if progress else None
        self.paused_by = progress.paused_by if progress else None
        self.executions = progress.executions if progress else 1
        self.running: dict[str, int] = {}
        self.waiting: dict[str, int] = {}
        self.state = "listing"

    def listed(self, listing: IncidentListing) -> None:
        totals: dict[str, int] = {}
        for item in listing.items:
            totals[item.vault_name] = totals.get(item.vault_name, 0) + 1
        self.counts = {vault: VaultCounts(vault, total) for vault, total in totals.items()}
        self.excluded = len(listing.excluded)
        self.excluded_shown = [
            Excluded(e.vault_name, e.secret_name, e.reason[:MAX_DETAIL])
            for e in listing.excluded[:MAX_FAILURES_SHOWN]
        ]

    def queued(self, queue: list[IncidentItem], running: list[IncidentItem]) -> None:
        if self.context.is_replaying:
            return  # only the status reads these (publish)
        self.waiting = _per_vault(queue)
        self.running = _per_vault(running)

    def ended(self, item: IncidentItem, result: str, detail: str) -> None:
        counts = self.counts[item.vault_name]
        if result in ("rotated", "rolled_forward"):  # rolled forward: the secret works, rotated
            counts = VaultCounts(
                counts.vault_name, counts.total, counts.done + 1, counts.failed, counts.skipped
            )
        elif result == "skipped":
            counts = VaultCounts(
                counts.vault_name, counts.total, counts.done, counts.failed, counts.skipped + 1
            )
        else:
            counts = VaultCounts(
                counts.vault_name, counts.total, counts.done, counts.failed + 1, counts.skipped
            )
            if len(self.failures) < MAX_FAILURES_SHOWN:
                self.failures.append(
                    IncidentFailure(
                        item.vault_name, item.secret_name, item.rotation_id, result, detail[:MAX_DETAIL]
                    )
                )
        self.counts[item.vault_name] = counts

    def publish(self) -> None:
        """Set the custom status. Skipped while replaying: the status an episode leaves is the
        one it sets last, after the replay, and building it costs a pass over every vault."""
        if self.context.is_replaying:
            return
        per_vault = {
            vault: {
                "total": c.total,
                "done": c.done,
                "failed": c.failed,
                "skipped": c.skipped,
                "running": self.running.get(vault, 0),
                "waiting": self.waiting.get(vault, 0),
            }
            for vault, c in sorted(self.counts.items())
        }
        totals = {
            key: sum(v[key] for v in per_vault.values())
            for key in ("total", "done", "failed", "skipped", "running", "waiting")
        }
        per_vault, omitted = vaults_shown(per_vault)
        self.context.set_custom_status(
            {
                "incident": self.context.instance_id,
                "state": self.state,
                "scope": self.request.scope_text,
                "reason": self.request.reason,
                "requestedBy": self.request.requested_by,
                "approvalWaived": self.request.waive_approval,
                "maxPerVault": self.request.max_per_vault,
                "maxPerServer": self.request.max_per_server,
                **totals,
                "excluded": self.excluded,
                "excludedSecrets": [e.to_dict() for e in self.excluded_shown],
                "perVault": per_vault,
                **({"perVaultOmitted": omitted} if omitted > 0 else {}),
                "failures": [f.to_dict() for f in self.failures],
                **({"cancelledBy": self.cancelled_by} if self.cancelled_by else {}),
                **({"pausedBy": self.paused_by} if self.paused_by else {}),
                "executions": self.executions,
            }
        )

    def progress(self, remaining: list[IncidentItem]) -> IncidentProgress:
        return IncidentProgress(
            remaining=tuple(remaining),
            counts=tuple(self.counts.values()),
            failures=tuple(self.failures),
            cancelled_by=self.cancelled_by,
            paused_by=self.paused_by,
            excluded=self.excluded,
            excluded_shown=tuple(self.excluded_shown),
            executions=self.executions + 1,
        )


def vaults_shown(per_vault: dict[str, dict[str, int]]) -> tuple[dict[str, dict[str, int]], int]:
    """The per-vault counts the status shows, and how many vaults it leaves out.

    Azure keeps a custom status under 16 KB: past MAX_VAULTS_SHOWN vaults, the vaults with
    something running, waiting or failed come first (the totals still count every vault)."""
    omitted = len(per_vault) - MAX_VAULTS_SHOWN
    if omitted <= 0:
        return per_vault, 0

    def busy(vault: str) -> tuple[int, str]:
        counts = per_vault[vault]
        return -(counts["running"] + counts["waiting"] + counts["failed"]), vault

    return {v: per_vault[v] for v in sorted(sorted(per_vault, key=busy)[:MAX_VAULTS_SHOWN])}, omitted


def _per_vault(items: list[IncidentItem]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in items:
        counted[item.vault_name] = counted.get(item.vault_name, 0) + 1
    return counted


@bp.orchestration_trigger(context_name="context")
def incident(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request = IncidentRequest.from_dict(context.get_input())
    summary = _Summary(context, request)
    if request.progress is None:
        summary.state = ADMITTING
        summary.publish()
        if not (yield from _admitted(context)):
            summary.state = "not admitted"
            summary.publish()
            return {"state": summary.state, "notStarted": []}
        summary.state = "listing"
        summary.publish()
        listing = yield from _list(context, request, summary)
        summary.listed(listing)
        queue = list(listing.items)
    else:
        queue = list(request.progress.remaining)
    summary.state = "cancelling" if summary.cancelled_by else ("paused" if summary.paused_by else "running")
    slots = Slots(request.max_per_vault, request.max_per_server)
    running: dict[Any, IncidentItem] = {}
    control = context.wait_for_external_event(CONTROL_EVENT)
    completions = 0
    while True:
        draining = completions >= request.completions_per_execution
        if summary.state == "running" and not draining:
            for item in next_to_start(queue, slots):
                task = context.call_sub_orchestrator(
                    ROTATION_ORCHESTRATOR, _rotation(request, item), item.rotation_id
                )
                running[task] = item
        summary.queued(queue, list(running.values()))
        summary.publish()
        if not running and (not queue or draining or summary.state == "cancelling"):
            break
        # Paused with nothing running: only a control event can change anything.
        winner = yield context.task_any([*running, control])
        if winner is control:
            action, by = _control(control.result)
            control = context.wait_for_external_event(CONTROL_EVENT)
            _steer(summary, action, by)
            _log(context, "%s by %s; %d rotation(s) running", action, by, len(running))
            continue
        item = running.pop(winner)
        slots.release(item)
        completions += 1
        result, detail = _ended(winner)
        summary.ended(item, result, detail)
        _log(context, "%s/%s: %s", item.vault_name, item.secret_name, result)
    if queue and summary.state != "cancelling":
        # Every running rotation has ended: what is left goes on in a fresh history.
        summary.publish()
        context.continue_as_new({**request.to_dict(), "progress": summary.progress(queue).to_dict()})
        return {}
    summary.state = "cancelled" if summary.cancelled_by else "completed"
    summary.publish()
    return {
        "state": summary.state,
        "notStarted": [f"{item.vault_name}/{item.secret_name}" for item in queue][:MAX_FAILURES_SHOWN],
    }


def _admitted(context: df.DurableOrchestrationContext) -> Generator[Any, Any, bool]:
    """Wait for the starter's word (ADMIT_EVENT) that no older incident overlaps this one."""
    admit = context.wait_for_external_event(ADMIT_EVENT)
    timer = context.create_timer(context.current_utc_datetime + timedelta(minutes=ADMISSION_TIMEOUT_MINUTES))
    winner = yield context.task_any([admit, timer])
    if winner is not admit:
        _log(context, "no admission from the starter within %d minutes", ADMISSION_TIMEOUT_MINUTES)
        return False
    timer.cancel()
    return True


def _steer(summary: _Summary, action: str, by: str) -> None:
    """Apply a control action; one that does not apply now (resume a running one) changes nothing."""
    if summary.state == "cancelling":
        return  # cancelled is final
    if action == "cancel":
        summary.state, summary.cancelled_by, summary.paused_by = "cancelling", by, None
    elif action == "pause":
        summary.state, summary.paused_by = "paused", by
    elif action == "resume":
        summary.state, summary.paused_by = "running", None


def _list(
    context: df.DurableOrchestrationContext, request: IncidentRequest, summary: _Summary
) -> Generator[Any, Any, IncidentListing]:
    def retrying(retry: Retry) -> None:
        _log(
            context,
            "listing attempt %d failed (%s), next attempt at %s",
            retry.attempt - 1,
            retry.error.error_class,
            retry.next_attempt_at,
        )

    try:
        listed = yield from call_with_retries(
            context, request.policy, "list", "list_incident_secrets", request.scope, retrying
        )
    except StepFailed as failed:
        summary.state = "failed"
        summary.publish()
        raise IncidentFailed(f"the scope could not be listed: {failed.error.message}") from None
    return IncidentListing.from_dict(listed)


def _rotation(request: IncidentRequest, item: IncidentItem) -> dict[str, Any]:
    return RotationRequest(
        secret=item.secret,
        version=item.version,
        trigger="incident",
        policy=request.policy,
        requested_by=request.requested_by,
        requested_by_id=request.requested_by_id,
        approval_waived_by=request.requested_by if request.waive_approval else None,
        approval_waiver_reason=request.reason if request.waive_approval else None,
    ).to_dict()


def _ended(task: Any) -> tuple[str, str]:
    """What a finished rotation sub-orchestration came to: (result, detail)."""
    if isinstance(task.result, Exception):
        text = str(task.result)
        if ALREADY_EXISTS in text:
            return "skipped", "a rotation of this version is already running"
        error = StepError.from_exception("rotation", task.result)
        return "failed", error.message
    output = task.result if isinstance(task.result, dict) else {}
    result = str(output.get("result", "unknown"))
    return result, str(output.get("detail", ""))


def _control(raw: object) -> tuple[str, str]:
    """(action, by) of a control event; anything malformed counts as a pause (fail safe: it
    starts nothing, and a resume undoes it)."""
    # The Python durable client JSON-encodes event data; the host keeps that text as the payload.
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            raw = json.loads(raw)
    if not isinstance(raw, dict):
        return "pause", "unknown (malformed control event)"
    action = raw.get("action")
    by = raw.get("by") if isinstance(raw.get("by"), str) else ""
    if action not in CONTROL_ACTIONS:
        return "pause", "unknown (malformed control event)"
    return str(action), (str(by).strip()[:256] or "unknown")


def _log(context: df.DurableOrchestrationContext, message: str, *args: object) -> None:
    if not context.is_replaying:
        logger.info("incident %s: %s", context.instance_id, message % args)
