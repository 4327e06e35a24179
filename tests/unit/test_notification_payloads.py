"""The notification record and its three shapes: CloudEvent 1.0, Teams workflow card, Slack message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from rotation.errors import InvalidRequest
from rotation.notifications import (
    APPROVAL_WAITING,
    COMPENSATED,
    DECIDED,
    EVENT_TYPES,
    FAILED,
    PREFLIGHT_FAILED,
    UNMANAGED_CREDENTIAL,
    Notification,
    UndoResult,
    cloud_event,
    event_data,
    links,
    preflight_failed,
    slack_payload,
    teams_payload,
    webhook_payload,
)

BASE = "https://func-rotation-hub.azurewebsites.net"
ROTATION = "rotate_spoke1-kv_db-password_0123456789abcdef0123456789abcdef"
TIME = "2026-12-03T08:15:00+00:00"


def notification(kind: str = FAILED, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "kind": kind,
        "vault": "spoke1-kv",
        "secret": "db-password",
        "rotation_id": ROTATION,
        "step": "verify",
        "detail": "VerificationFailed: login app_user refuses the new password",
        "time": TIME,
    }
    values.update(fields)
    return Notification(**values)


WAITING = notification(
    APPROVAL_WAITING, step="approval", detail="waiting", deadline="2026-12-06T08:15:00+00:00"
)
COMPENSATED_FAILURE = notification(
    COMPENSATED,
    compensation=(
        UndoResult("revert_target", "done", "put the previous password back"),
        UndoResult("discard_pending", "done", "disabled version 1234"),
    ),
)


def test_every_kind_has_its_event_type() -> None:
    assert set(EVENT_TYPES) == {
        "approval-waiting",
        "decided",
        "failed",
        "compensated",
        "rolled-forward",
        "unmanaged-credential",
        "preflight-failed",
    }
    assert all(t.startswith("KeyVaultRotationHub.") for t in EVENT_TYPES.values())
    assert EVENT_TYPES[FAILED] == "KeyVaultRotationHub.RotationFailed"


def test_the_record_round_trips_through_the_durable_boundary() -> None:
    decided = notification(
        DECIDED,
        step="approval",
        detail="approved by alice",
        # Whatever Decision.to_dict() holds passes through: another issue adds fields to it.
        decision={
            "approved": True,
            "approver": "alice",
            "reason": "",
            "principalId": "abc",
            "verified": True,
        },
    )
    for record in (
        decided,
        COMPENSATED_FAILURE,
        WAITING,
        notification(UNMANAGED_CREDENTIAL, not_removed=("k1",)),
    ):
        plain = json.loads(json.dumps(record.to_dict()))
        assert Notification.from_dict(plain) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "exploded"}, "not a notification kind"),
        ({"vault": "not a vault"}, "not a valid Key Vault name"),
        ({"decision": "approved"}, "decision must be an object"),
        ({"time": 5}, "time must be of type str"),
        ({"compensation": [{"undo": "x"}]}, "result is missing"),
    ],
)
def test_a_malformed_record_is_refused_by_name(change: dict[str, Any], message: str) -> None:
    plain = notification().to_dict() | change
    with pytest.raises(InvalidRequest, match=message):
        Notification.from_dict(plain)


def test_the_cloud_event_carries_type_source_subject_time_and_the_data() -> None:
    event = cloud_event(COMPENSATED_FAILURE, base_url=BASE)
    assert event.specversion == "1.0"
    assert event.type == "KeyVaultRotationHub.RotationCompensated"
    assert event.source == BASE
    assert event.subject == "/vaults/spoke1-kv/secrets/db-password"
    assert event.time == datetime(2026, 12, 3, 8, 15, tzinfo=UTC)
    assert event.datacontenttype == "application/json"
    assert event.data == {
        "kind": "compensated",
        "vault": "spoke1-kv",
        "secret": "db-password",
        "rotationId": ROTATION,
        "step": "verify",
        "detail": "VerificationFailed: login app_user refuses the new password",
        "time": TIME,
        "compensation": [
            {"undo": "revert_target", "result": "done", "detail": "put the previous password back"},
            {"undo": "discard_pending", "result": "done", "detail": "disabled version 1234"},
        ],
        "links": {"status": f"{BASE}/api/rotations/{ROTATION}"},
    }


def test_the_event_id_is_stable_per_notification_and_differs_between_them() -> None:
    assert cloud_event(WAITING, base_url="").id == cloud_event(WAITING, base_url=BASE).id
    assert cloud_event(WAITING, base_url="").id != cloud_event(COMPENSATED_FAILURE, base_url="").id
    later = notification(APPROVAL_WAITING, time="2026-12-04T08:15:00+00:00")
    assert cloud_event(later, base_url="").id != cloud_event(notification(APPROVAL_WAITING), base_url="").id


def test_without_a_base_url_the_source_is_the_hub_s_name_and_there_are_no_links() -> None:
    event = cloud_event(WAITING, base_url="")
    assert event.source == "/keyvault-rotation-hub"
    assert event.data is not None
    assert "links" not in event.data
    assert links(WAITING, "") == {}
    assert "actions" not in teams_payload(WAITING, base_url="")["attachments"][0]["content"]
    assert all(block["type"] != "actions" for block in slack_payload(WAITING, base_url="")["blocks"])


def test_a_naive_orchestration_time_is_taken_as_utc() -> None:
    event = cloud_event(notification(time="2026-12-03T08:15:00"), base_url="")
    assert event.time == datetime(2026, 12, 3, 8, 15, tzinfo=UTC)


def test_links_point_at_the_approval_page_and_the_status_route() -> None:
    assert links(WAITING, BASE) == {
        "approvals": f"{BASE}/api/approvals",
        "status": f"{BASE}/api/rotations/{ROTATION}",
    }
    assert links(COMPENSATED_FAILURE, BASE) == {"status": f"{BASE}/api/rotations/{ROTATION}"}
    preflight = preflight_failed(
        vault="spoke1-kv",
        secret="db",
        target="postgresql-login",
        failing_checks={"target": "refused"},
        time=TIME,
    )
    assert links(preflight, BASE) == {}


def test_optional_fields_appear_only_when_set() -> None:
    data = event_data(notification(), BASE)
    assert set(data) == {"kind", "vault", "secret", "rotationId", "step", "detail", "time", "links"}
    promoted = event_data(notification(promoted=True, not_removed=("key1",)), BASE)
    assert promoted["promoted"] is True
    assert promoted["notRemoved"] == ["key1"]


def test_the_teams_payload_is_one_adaptive_card_attachment() -> None:
    payload = teams_payload(WAITING, base_url=BASE)
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["version"] == "1.4"
    title, detail, facts = card["body"]
    assert title == {
        "type": "TextBlock",
        "size": "Medium",
        "weight": "Bolder",
        "text": "Rotation of spoke1-kv/db-password waits for approval",
        "wrap": True,
    }
    assert detail["text"] == "waiting"
    shown = {fact["title"]: fact["value"] for fact in facts["facts"]}
    assert shown["Vault"] == "spoke1-kv"
    assert shown["Secret"] == "db-password"
    assert shown["Rotation"] == ROTATION
    assert shown["Step"] == "approval"
    assert shown["Decide before"] == "2026-12-06T08:15:00+00:00"
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the approval page", "url": f"{BASE}/api/approvals"},
        {"type": "Action.OpenUrl", "title": "Rotation status", "url": f"{BASE}/api/rotations/{ROTATION}"},
    ]
    assert webhook_payload(WAITING, webhook_format="teams", base_url=BASE) == payload


def test_the_slack_payload_has_text_and_blocks_with_escaped_text() -> None:
    hostile = notification(detail="TargetError: login <b>&amp</b> refused", step="apply")
    payload = slack_payload(hostile, base_url=BASE)
    assert payload["text"] == (
        "Rotation of spoke1-kv/db-password failed in step apply: TargetError: login &lt;b&gt;&amp;amp&lt;/b&gt; refused"
    )
    header, detail, fields, actions = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": hostile.title}}
    assert detail["text"] == {
        "type": "mrkdwn",
        "text": "TargetError: login &lt;b&gt;&amp;amp&lt;/b&gt; refused",
    }
    assert {"type": "mrkdwn", "text": "*Vault*\nspoke1-kv"} in fields["fields"]
    assert len(fields["fields"]) <= 10
    assert actions["elements"] == [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Rotation status"},
            "url": f"{BASE}/api/rotations/{ROTATION}",
        }
    ]
    assert webhook_payload(hostile, webhook_format="slack", base_url=BASE) == payload


def test_slack_fields_are_split_into_sections_of_ten() -> None:
    busy = notification(
        target="postgresql-login",
        deadline="2026-12-06T08:15:00+00:00",
        decision={"approved": False, "approver": "carol", "reason": "freeze"},
        compensation=(UndoResult("discard_pending", "done"),),
        promoted=True,
        not_removed=("k1",),
    )
    sections = [b for b in slack_payload(busy, base_url="")["blocks"] if "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 1]


def test_titles_say_what_happened() -> None:
    assert notification(DECIDED, decision={"approved": True, "approver": "a"}).title.endswith("was approved")
    assert notification(DECIDED, decision={"approved": False, "approver": "a"}).title.endswith("was rejected")
    assert notification(DECIDED, decision={"approved": False, "approver": "timeout"}).title.endswith(
        "timed out waiting for approval"
    )
    assert (
        COMPENSATED_FAILURE.title == "Rotation of spoke1-kv/db-password failed in step verify and was undone"
    )
    assert notification(UNMANAGED_CREDENTIAL).title.endswith("left a credential it did not issue")


def test_a_long_error_message_is_cut_for_the_chat_but_kept_whole_in_the_event() -> None:
    long = notification(detail="x" * 2000)
    card = teams_payload(long, base_url="")["attachments"][0]["content"]
    assert len(card["body"][1]["text"]) == 600
    assert cloud_event(long, base_url="").data["detail"] == "x" * 2000  # type: ignore[index]


def test_a_preflight_notification_names_the_failing_checks() -> None:
    found = preflight_failed(
        vault="spoke1-kv",
        secret="db-password",
        target="postgresql-login",
        failing_checks={"vault-access": "no setSecret on spoke1-kv", "target": "login refused"},
        time=TIME,
    )
    assert found.kind == PREFLIGHT_FAILED
    assert found.rotation_id == ""
    assert found.step == "preflight"
    assert found.detail == "vault-access: no setSecret on spoke1-kv; target: login refused"
    event = cloud_event(found, base_url=BASE)
    assert event.type == "KeyVaultRotationHub.PreflightFailed"
    assert event.data is not None
    assert event.data["target"] == "postgresql-login"
    assert "Rotation" not in {
        f["title"]
        for f in teams_payload(found, base_url=BASE)["attachments"][0]["content"]["body"][2]["facts"]
    }
