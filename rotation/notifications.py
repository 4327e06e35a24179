"""Notifications: what the hub tells people about a rotation, and the shapes it tells it in.

A ``Notification`` holds only what the rotation's custom status already holds: names, the step,
the error's class and message, the decision as the orchestration recorded it, the undo results,
the credentials left behind. Never a secret value. The orchestrator builds it (its time is the
orchestration's, so a replay builds the same one) and the ``notify`` activity delivers it
(``rotation/notify_delivery.py``) as a CloudEvent to an Event Grid custom topic and, optionally,
to a Teams workflow or a Slack incoming webhook. The payload builders here are pure: the links
to the hub come from ``ROTATION_PUBLIC_BASE_URL``, handed in by the caller.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote

from azure.core.messaging import CloudEvent

from rotation.errors import InvalidRequest
from rotation.model import Record, check_vault_name

APPROVAL_WAITING = "approval-waiting"
DECIDED = "decided"
FAILED = "failed"
COMPENSATED = "compensated"
# Reserved: nothing emits it yet (roll-forward after a failed promotion is another issue).
ROLLED_FORWARD = "rolled-forward"
UNMANAGED_CREDENTIAL = "unmanaged-credential"
PREFLIGHT_FAILED = "preflight-failed"

# The CloudEvent type of each kind; subscribers filter on these.
EVENT_TYPES: dict[str, str] = {
    APPROVAL_WAITING: "KeyVaultRotationHub.ApprovalWaiting",
    DECIDED: "KeyVaultRotationHub.RotationDecided",
    FAILED: "KeyVaultRotationHub.RotationFailed",
    COMPENSATED: "KeyVaultRotationHub.RotationCompensated",
    ROLLED_FORWARD: "KeyVaultRotationHub.RotationRolledForward",
    UNMANAGED_CREDENTIAL: "KeyVaultRotationHub.UnmanagedCredential",
    PREFLIGHT_FAILED: "KeyVaultRotationHub.PreflightFailed",
}
# The CloudEvent source when ROTATION_PUBLIC_BASE_URL is not set (a URI reference, as CloudEvents asks).
DEFAULT_SOURCE = "/keyvault-rotation-hub"
APPROVALS_ROUTE = "/api/approvals"
STATUS_ROUTE = "/api/rotations/"
# Keeps an error message from a card readable (the status already cuts messages at 400).
_MAX_TEXT = 600


@dataclass(frozen=True)
class UndoResult(Record):
    """One compensation as the custom status reports it (``compensation`` entries)."""

    undo: str
    result: str
    detail: str = ""


@dataclass(frozen=True)
class Notification(Record):
    """One thing people should know about one secret's rotation.

    ``rotation_id`` is empty for a preflight (no rotation runs); ``time`` is ISO 8601 UTC.
    ``decision`` is ``Decision.to_dict()`` as the orchestration recorded it, taken as it is.
    """

    kind: str
    vault: str
    secret: str
    rotation_id: str
    step: str
    detail: str
    time: str
    target: str = ""
    deadline: str | None = None
    decision: dict[str, Any] | None = None
    compensation: tuple[UndoResult, ...] = ()
    not_removed: tuple[str, ...] = ()
    # A failure after promotion: the new value is in force and was not reverted.
    promoted: bool = False

    def __post_init__(self) -> None:
        if self.kind not in EVENT_TYPES:
            raise InvalidRequest(f"{self.kind!r} is not a notification kind ({', '.join(EVENT_TYPES)})")
        object.__setattr__(self, "vault", check_vault_name(self.vault))

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Raises InvalidRequest naming the field that is missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("Notification must be an object")
        decision = data.get("decision")
        if decision is not None and not isinstance(decision, Mapping):
            raise InvalidRequest("Notification.decision must be an object")
        # The decision is whatever Decision.to_dict() holds in this version of the hub: kept as a
        # plain object rather than parsed, so fields added to Decision pass through unchanged.
        record = super().from_dict({k: v for k, v in data.items() if k != "decision"})
        return dataclasses.replace(record, decision=dict(decision) if decision is not None else None)

    @property
    def event_type(self) -> str:
        return EVENT_TYPES[self.kind]

    @property
    def subject(self) -> str:
        return f"/vaults/{self.vault}/secrets/{self.secret}"

    @property
    def event_id(self) -> str:
        """Stable per notification: a retried delivery carries the same id, so subscribers can
        drop the duplicate."""
        return str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{self.subject}/{self.rotation_id}/{self.kind}/{self.time}")
        )

    @property
    def title(self) -> str:
        where = f"{self.vault}/{self.secret}"
        if self.kind == APPROVAL_WAITING:
            return f"Rotation of {where} waits for approval"
        if self.kind == DECIDED:
            return f"Rotation of {where} {_decision_word(self.decision)}"
        if self.kind == FAILED:
            return f"Rotation of {where} failed in step {self.step}"
        if self.kind == COMPENSATED:
            return f"Rotation of {where} failed in step {self.step} and was undone"
        if self.kind == ROLLED_FORWARD:
            return f"Rotation of {where} was rolled forward"
        if self.kind == UNMANAGED_CREDENTIAL:
            return f"Rotation of {where} left a credential it did not issue"
        return f"Preflight of {where} found a problem"


def _decision_word(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return "was decided"
    if decision.get("approved") is True:
        return "was approved"
    if decision.get("approver") == "timeout":
        return "timed out waiting for approval"
    return "was rejected"


def links(notification: Notification, base_url: str) -> dict[str, str]:
    """Where to act: the approval page for a rotation that waits, the status of the rotation.

    Empty without a base URL (``ROTATION_PUBLIC_BASE_URL`` unset)."""
    if not base_url:
        return {}
    found: dict[str, str] = {}
    if notification.kind == APPROVAL_WAITING:
        found["approvals"] = base_url + APPROVALS_ROUTE
    if notification.rotation_id:
        found["status"] = base_url + STATUS_ROUTE + quote(notification.rotation_id, safe="")
    return found


def event_data(notification: Notification, base_url: str) -> dict[str, Any]:
    """The CloudEvent's ``data``: the notification in the casing of the hub's HTTP API."""
    data: dict[str, Any] = {
        "kind": notification.kind,
        "vault": notification.vault,
        "secret": notification.secret,
        "rotationId": notification.rotation_id,
        "step": notification.step,
        "detail": notification.detail,
        "time": notification.time,
    }
    optional: dict[str, Any] = {
        "target": notification.target,
        "deadline": notification.deadline,
        "decision": notification.decision,
        "compensation": [u.to_dict() for u in notification.compensation],
        "notRemoved": list(notification.not_removed),
        "promoted": notification.promoted,
        "links": links(notification, base_url),
    }
    data.update({k: v for k, v in optional.items() if v})
    return data


def cloud_event(notification: Notification, *, base_url: str) -> CloudEvent[dict[str, Any]]:
    """The notification as a CloudEvent 1.0 for an Event Grid custom topic (CloudEvents schema)."""
    moment = datetime.fromisoformat(notification.time)
    return CloudEvent(
        source=base_url or DEFAULT_SOURCE,
        type=notification.event_type,
        subject=notification.subject,
        data=event_data(notification, base_url),
        id=notification.event_id,
        time=moment if moment.tzinfo else moment.replace(tzinfo=UTC),
        datacontenttype="application/json",
    )


def _facts(notification: Notification) -> list[tuple[str, str]]:
    """The label/value pairs both chat formats show, in reading order."""
    facts = [("Vault", notification.vault), ("Secret", notification.secret)]
    if notification.target:
        facts.append(("Target", notification.target))
    if notification.rotation_id:
        facts.append(("Rotation", notification.rotation_id))
    facts.append(("Step", notification.step))
    if notification.deadline:
        facts.append(("Decide before", notification.deadline))
    if notification.decision:
        who = str(notification.decision.get("approver", ""))
        reason = str(notification.decision.get("reason", ""))
        facts.append(("Decided by", who + (f" ({reason})" if reason else "")))
    if notification.compensation:
        facts.append(
            (
                "Undone",
                "; ".join(
                    f"{u.undo}: {u.result}" + (f" ({u.detail})" if u.detail else "")
                    for u in notification.compensation
                ),
            )
        )
    if notification.promoted:
        facts.append(("Promoted", "yes: the new value is in force and was not reverted"))
    if notification.not_removed:
        facts.append(("Not removed", ", ".join(notification.not_removed)))
    facts.append(("Time", notification.time))
    return [(label, _short(value)) for label, value in facts]


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _actions(notification: Notification, base_url: str) -> list[tuple[str, str]]:
    found = links(notification, base_url)
    titles = {"approvals": "Open the approval page", "status": "Rotation status"}
    return [(titles[name], url) for name, url in found.items()]


def teams_payload(notification: Notification, *, base_url: str) -> dict[str, Any]:
    """A message for a Teams workflow ("When a Teams webhook request is received"): one Adaptive
    Card attachment, which the workflow's "Post card in a chat or channel" action posts."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "size": "Medium",
                "weight": "Bolder",
                "text": notification.title,
                "wrap": True,
            },
            {"type": "TextBlock", "text": _short(notification.detail), "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in _facts(notification)],
            },
        ],
    }
    actions = _actions(notification, base_url)
    if actions:
        card["actions"] = [{"type": "Action.OpenUrl", "title": title, "url": url} for title, url in actions]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notification: Notification, *, base_url: str) -> dict[str, Any]:
    """A message for a Slack incoming webhook: ``text`` (notifications, clients without blocks)
    and ``blocks`` (header, detail, fields, buttons)."""
    facts = _facts(notification)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notification.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(_short(notification.detail))}},
    ]
    # A section holds at most 10 fields.
    for start in range(0, len(facts), 10):
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"}
                    for label, value in facts[start : start + 10]
                ],
            }
        )
    actions = _actions(notification, base_url)
    if actions:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": title}, "url": url}
                    for title, url in actions
                ],
            }
        )
    return {"text": _slack_escape(f"{notification.title}: {_short(notification.detail)}"), "blocks": blocks}


def webhook_payload(notification: Notification, *, webhook_format: str, base_url: str) -> dict[str, Any]:
    """The payload for ``ROTATION_NOTIFY_WEBHOOK_FORMAT`` (``teams`` or ``slack``)."""
    if webhook_format == "slack":
        return slack_payload(notification, base_url=base_url)
    return teams_payload(notification, base_url=base_url)


def preflight_failed(
    *, vault: str, secret: str, target: str, failing_checks: Mapping[str, str], time: str
) -> Notification:
    """The notification of a preflight (dry run) that found a secret whose rotation would fail:
    ``failing_checks`` maps each failing check's name to its reason (never a value)."""
    detail = "; ".join(f"{name}: {reason}" for name, reason in failing_checks.items())
    return Notification(
        kind=PREFLIGHT_FAILED,
        vault=vault,
        secret=secret,
        rotation_id="",
        step="preflight",
        detail=detail or "a check failed",
        time=time,
        target=target,
    )
