"""The Event Grid webhook, driven with Event Grid's own payloads (EventGridEvent and CloudEvents schemas)."""

from __future__ import annotations

import json
import uuid

import pytest
from host_helpers import HostFactory, RunningHost, read_lines

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_secret_event"


@pytest.fixture(scope="module")
def host(module_host_factory: HostFactory) -> RunningHost:
    return module_host_factory()


def _event(event_type: str = "Microsoft.KeyVault.SecretNearExpiry", count: int = 2) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
        "subject": "db-password",
        "eventType": event_type,
        "eventTime": "2024-05-01T10:00:00.0000000Z",
        "data": {"Id": "https://kv1.vault.azure.net/secrets/db-password/abc", "count": count},
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def _cloud_event(count: int = 3) -> dict:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1",
        "type": "Microsoft.KeyVault.SecretNearExpiry",
        "subject": "db-password",
        "time": "2024-05-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"count": count},
    }


def _notify(host: RunningHost, body: object, content_type: str = "application/json"):
    return host.api.call(
        "POST", WEBHOOK, data=json.dumps(body).encode(),
        headers={"aeg-event-type": "Notification", "Content-Type": content_type},
    )  # fmt: skip


def test_subscription_validation_handshake(host: RunningHost) -> None:
    validation = [{
        "id": "2d1781af", "topic": "/subscriptions/x", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z", "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "dataVersion": "1", "metadataVersion": "1",
    }]  # fmt: skip
    reply = host.api.call(
        "POST", WEBHOOK, json_body=validation, headers={"aeg-event-type": "SubscriptionValidation"}
    )
    assert reply.status == 200
    assert reply.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    cloud = {"specversion": "1.0", "id": "1", "source": "s", "type": "Microsoft.EventGrid.SubscriptionValidationEvent",
             "data": json.dumps({"validationCode": "abc"})}  # fmt: skip
    reply = host.api.call(
        "POST", WEBHOOK, json_body=cloud, headers={"aeg-event-type": "SubscriptionValidation"}
    )
    assert reply.json() == {"validationResponse": "abc"}


def test_notification_runs_the_function_once_per_event(host: RunningHost) -> None:
    events = [_event(count=2), _event(count=4)]
    reply = _notify(host, events)
    assert reply.status == 202
    seen = read_lines(host.state_dir / "eventgrid.log")
    assert {f"EventGridEvent:{event['id']}" for event in events} <= set(seen)
    outputs = [host.api.wait(f"eg-{event['id']}")["output"] for event in events]
    assert outputs == [0 + 1, 0 + 1 + 2 + 3]


def test_cloud_events_single_and_batched(host: RunningHost) -> None:
    single = _cloud_event(count=3)
    assert _notify(host, single, "application/cloudevents+json; charset=utf-8").status == 202
    batch = [_cloud_event(count=1), _cloud_event(count=2)]
    assert _notify(host, batch, "application/cloudevents-batch+json; charset=utf-8").status == 202
    seen = read_lines(host.state_dir / "eventgrid.log")
    for event in [single, *batch]:
        assert f"CloudEvent:{event['id']}" in seen
    assert host.api.wait(f"eg-{single['id']}")["output"] == 3


def test_a_failing_event_makes_event_grid_retry(host: RunningHost) -> None:
    good, bad = _event(count=1), _event(event_type="Sample.Fail")
    reply = _notify(host, [good, bad])
    assert reply.status == 500
    assert "this event cannot be handled" in reply.text
    # Both events ran (in parallel, as the extension runs them); the good one did its work.
    seen = read_lines(host.state_dir / "eventgrid.log")
    assert f"EventGridEvent:{bad['id']}" in seen
    assert host.api.wait(f"eg-{good['id']}")["output"] == 0
    assert host.api.alive()


def test_other_event_types_and_bodies(host: RunningHost) -> None:
    assert (
        host.api.call("POST", WEBHOOK, json_body=[], headers={"aeg-event-type": "Unsubscribe"}).status == 202
    )
    missing = host.api.call("POST", WEBHOOK, json_body=[_event()])
    assert missing.status == 400
    not_objects = _notify(host, [1, 2])
    assert not_objects.status == 400
    no_code = host.api.call(
        "POST", WEBHOOK, json_body=[{"data": {}}], headers={"aeg-event-type": "SubscriptionValidation"}
    )
    assert no_code.status == 400
    assert "validationCode" in no_code.json()["Message"]


def test_admin_endpoint_runs_the_event_grid_function(host: RunningHost) -> None:
    event = _event(count=2)
    reply = host.api.call("POST", "/admin/functions/on_secret_event", json_body={"input": json.dumps(event)})
    assert reply.status == 202
    assert host.api.wait(f"eg-{event['id']}")["output"] == 1


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("eventgrid.azure.net", "eventgrid.azure.net"),
        ("eventgrid.azure.us", "eventgrid.azure.us"),  # another Azure cloud's origin is echoed
        ("attacker.example", "eventgrid.azure.net"),  # anything else gets the public cloud's
        (None, "eventgrid.azure.net"),
    ],
)
def test_cloudevents_options_handshake(host: RunningHost, origin: str | None, allowed: str) -> None:
    headers = {"WebHook-Request-Origin": origin} if origin is not None else {}
    reply = host.api.call("OPTIONS", WEBHOOK, headers=headers)
    assert reply.status == 200
    assert reply.headers["Webhook-Allowed-Origin"] == allowed
    unknown = host.api.call(
        "OPTIONS",
        WEBHOOK.replace("on_secret_event", "nope"),
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )
    assert unknown.status == 404
