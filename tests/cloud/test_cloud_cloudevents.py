"""Event Grid in the CloudEvents 1.0 delivery schema: OPTIONS handshake, structured-mode delivery.

Same test topology as test_cloud_eventgrid (retry schedule x0.002); the CloudEvents subscriptions
are added through the admin endpoint, so they are validated when created, as in Azure.
"""

from __future__ import annotations

import json
import time

import pytest

from local.cloud.process import LocalCloud, LocalCloudError
from tests.cloud.support import SUB1, VAULT1, secret_client
from tests.cloud.webhook import Behaviour, Webhook, wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

SOURCE = f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.KeyVault/vaults/test1-kv"
NEAR = "Microsoft.KeyVault.SecretNearExpiry"
EXPIRED = "Microsoft.KeyVault.SecretExpired"
EXPIRY = [NEAR, EXPIRED]
CLOUD_EVENTS = "CloudEventSchemaV1_0"


def _subscribe(cloud: LocalCloud, webhook: Webhook, name: str, **options: object) -> None:
    cloud.admin.add_event_subscription(
        name=name,
        vault="test1-kv",
        endpoint=f"{webhook.url}/{name}",
        included_event_types=EXPIRY,
        event_delivery_schema=CLOUD_EVENTS,
        **options,  # type: ignore[arg-type]
    )


def test_a_cloudevents_subscription_is_validated_with_options_and_gets_one_cloudevent_per_request(
    cloud: LocalCloud, webhook: Webhook
) -> None:
    _subscribe(cloud, webhook, "ce")
    handshakes = webhook.options("/ce")
    assert len(handshakes) == 1
    assert handshakes[0].headers["WebHook-Request-Origin"] == "eventgrid.azure.net"
    assert webhook.validations("/ce") == []  # no SubscriptionValidationEvent for this schema

    made = secret_client().set_secret("ce-secret", "v")
    emitted = cloud.admin.emit_event(vault="test1-kv", secret="ce-secret", event_type="SecretNearExpiry")
    delivery = wait_for(lambda: webhook.notifications("/ce"))[0]

    assert delivery.headers["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["aeg-subscription-name"] == "CE"
    assert delivery.headers["aeg-delivery-count"] == "0"
    # Structured mode: the body is one CloudEvent object, not an array.
    assert delivery.body == {
        "id": emitted["id"],
        "source": SOURCE,
        "subject": "ce-secret",
        "type": NEAR,
        "time": emitted["eventTime"],
        "specversion": "1.0",
        "data": {
            "Id": f"{VAULT1}/secrets/ce-secret/{made.properties.version}",
            "VaultName": "test1-kv",
            "ObjectType": "Secret",
            "ObjectName": "ce-secret",
            "Version": made.properties.version,
            "NBF": None,
            "EXP": None,
        },
    }
    listed = {
        s["name"]: s for s in cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]
    }
    assert listed["ce"]["event_delivery_schema"] == CLOUD_EVENTS
    assert listed["all-events"]["event_delivery_schema"] == "EventGridSchema"  # the default


def test_a_webhook_allowing_any_origin_passes_the_handshake(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/ce-star", Behaviour(allowed_origin="star"))
    _subscribe(cloud, webhook, "ce-star")
    assert len(webhook.options("/ce-star")) == 1


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [("refuse", "response code 403"), ("other", "WebHook-Allowed-Origin 'example.com'")],
)
def test_a_webhook_that_does_not_allow_event_grid_is_not_subscribed(
    cloud: LocalCloud, webhook: Webhook, behaviour: str, detail: str
) -> None:
    path = f"/ce-{behaviour}"
    webhook.behave(path, Behaviour(allowed_origin=behaviour))
    with pytest.raises(LocalCloudError) as refused:
        _subscribe(cloud, webhook, path[1:])
    assert "Webhook validation handshake failed" in str(refused.value)
    assert "Http OPTIONS request failed" in str(refused.value)
    assert detail in str(refused.value)
    names = [s["name"] for s in cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]]
    assert path[1:] not in names


def test_an_unknown_delivery_schema_is_refused(cloud: LocalCloud, webhook: Webhook) -> None:
    with pytest.raises(LocalCloudError) as refused:
        cloud.admin.add_event_subscription(
            name="custom", vault="test1-kv", endpoint=f"{webhook.url}/custom", event_delivery_schema="Custom"
        )
    assert "event_delivery_schema 'Custom' is not one of EventGridSchema, CloudEventSchemaV1_0" in str(
        refused.value
    )
    assert webhook.options("/custom") == []
    assert webhook.validations("/custom") == []


def test_cloudevents_are_retried_and_dead_lettered_like_event_grid_events(
    cloud: LocalCloud, webhook: Webhook
) -> None:
    webhook.behave("/ce-flaky", Behaviour(failures=[503, 500]))
    _subscribe(cloud, webhook, "ce-flaky")
    webhook.behave("/ce-broken", Behaviour(failures=[500] * 10))
    _subscribe(cloud, webhook, "ce-broken", max_delivery_attempts=2)
    secret_client().set_secret("ce-retried", "v")

    event = cloud.admin.emit_event(vault="test1-kv", secret="ce-retried", event_type="SecretExpired")

    flaky = wait_for(lambda: webhook.notifications("/ce-flaky")[2:] and webhook.notifications("/ce-flaky"))
    assert [r.body["id"] for r in flaky] == [event["id"]] * 3
    assert [r.headers["aeg-delivery-count"] for r in flaky] == ["0", "1", "2"]
    letter = wait_for(lambda: [d for d in cloud.admin.dead_letters() if d["id"] == event["id"]])[0]
    assert letter["subscription"] == "ce-broken"
    assert letter["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert letter["deliveryAttempts"] == 2
    assert letter["type"] == EXPIRED
    assert letter["source"] == SOURCE
    assert len(webhook.notifications("/ce-broken")) == 2
    on_disk = [json.loads(line) for line in (cloud.data_dir / "deadletter.jsonl").read_text().splitlines()]
    assert event["id"] in [d["id"] for d in on_disk]


def test_deleting_a_subscription_drops_its_pending_deliveries(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/ce-deleted", Behaviour(failures=[503] * 10))
    _subscribe(cloud, webhook, "ce-deleted")
    secret_client().set_secret("ce-dropped", "v")
    cloud.admin.set_eventgrid(retry_schedule_scale=0.05)  # 0.5 s, then 1.5 s to the next attempts
    try:
        cloud.admin.emit_event(vault="test1-kv", secret="ce-dropped", event_type="SecretNearExpiry")
        wait_for(lambda: webhook.notifications("/ce-deleted"))
        cloud.admin.remove_event_subscription("ce-deleted")
        time.sleep(2.5)
    finally:
        cloud.admin.set_eventgrid(retry_schedule_scale=0.002)
    assert len(webhook.notifications("/ce-deleted")) == 1
    assert not [d for d in cloud.admin.dead_letters() if d.get("subscription") == "ce-deleted"]
