"""Notifications from inside rotate_secret: one activity call each, and never the outcome's business.

Each helper builds the Notification from what the orchestration knows (its time is the
orchestration's, so a replay builds the same record and the SDK matches the same history event)
and calls the ``notify`` activity once. A failing ``notify`` (the activity cannot even start, or
its input is refused) is logged and ignored: the rotation ends exactly as it would have without
it. Delivery failures never reach here; the activity reports them as its result.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

from orchestrators.saga import Saga, StepError
from rotation.model import Decision
from rotation.notifications import (
    APPROVAL_WAITING,
    COMPENSATED,
    DECIDED,
    FAILED,
    ROLLED_FORWARD,
    UNMANAGED_CREDENTIAL,
    Notification,
    UndoResult,
)

NOTIFY_ACTIVITY = "notify"


def _send(saga: Saga, kind: str, step: str, detail: str, **fields: Any) -> Generator[Any, Any, None]:
    notification = Notification(
        kind=kind,
        vault=saga.secret.vault_name,
        secret=saga.secret.secret_name,
        rotation_id=saga.context.instance_id,
        step=step,
        detail=detail,
        time=saga.context.current_utc_datetime.isoformat(),
        **fields,
    )
    try:
        yield saga.context.call_activity(NOTIFY_ACTIVITY, notification.to_dict())
    except Exception as exc:  # whatever went wrong, the rotation goes on
        saga.log("notification %s not delivered (%s)", kind, type(exc).__name__)


def approval_waiting(saga: Saga, deadline: datetime) -> Generator[Any, Any, None]:
    """The rotation waits for a RotationDecision until ``deadline``."""
    yield from _send(
        saga,
        APPROVAL_WAITING,
        "approval",
        f"waiting for a decision until {deadline.isoformat()}; no decision by then rejects it",
        deadline=deadline.isoformat(),
    )


def decided(saga: Saga, decision: Decision, timed_out: bool) -> Generator[Any, Any, None]:
    """The decision arrived (approved or rejected) or the deadline passed (rejected)."""
    if timed_out:
        detail = "no decision before the deadline: rejected"
    elif decision.approved:
        detail = f"approved by {decision.approver}"
    else:
        detail = f"rejected by {decision.approver}" + (f": {decision.reason}" if decision.reason else "")
    yield from _send(saga, DECIDED, "approval", detail, decision=decision.to_dict())


def failed(
    saga: Saga, error: StepError, compensation: Sequence[dict[str, str]], *, promoted: bool
) -> Generator[Any, Any, None]:
    """The rotation failed for good. ``compensated`` when undos ran and every one of them
    succeeded, so the previous state is back; ``failed`` otherwise: nothing to undo, an undo
    failed (the undo results say which), or the failure came after promotion (the new value is
    in force and only the pending value was discarded)."""
    undone = tuple(UndoResult(u["undo"], u["result"], u.get("detail", "")) for u in compensation)
    restored = bool(undone) and all(u.result == "done" for u in undone) and not promoted
    yield from _send(
        saga,
        COMPENSATED if restored else FAILED,
        error.step,
        f"{error.error_class}: {error.message}",
        compensation=undone,
        promoted=promoted,
    )


def rolled_forward(saga: Saga, error: StepError, undone: dict[str, str]) -> Generator[Any, Any, None]:
    """A step after apply failed, the target's undo could not restore the previous value, and
    the new value (which logs in) was promoted instead: the secret works, but whatever broke the
    undo (an admin credential, say) needs a person."""
    yield from _send(
        saga,
        ROLLED_FORWARD,
        error.step,
        f"{error.error_class}: {error.message}; the previous value could not be restored "
        f"({undone.get('detail', '')}), so the new value, which logs in, was promoted",
        compensation=(UndoResult(undone["undo"], undone["result"], undone.get("detail", "")),),
        promoted=True,
    )


def unmanaged_credential(saga: Saga, not_removed: Sequence[str]) -> Generator[Any, Any, None]:
    """Retiring left credentials this hub did not issue (``notRemoved``); nothing when none."""
    if not not_removed:
        return
    yield from _send(
        saga,
        UNMANAGED_CREDENTIAL,
        "retire",
        "the previous credential was not issued by this hub and is still valid: "
        "remove it by hand once nothing uses it",
        not_removed=tuple(not_removed),
    )
