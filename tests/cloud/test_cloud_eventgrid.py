"""Event Grid: Key Vault events into a real webhook, with handshake, filters, retries, dead letters.

The test topology compresses Azure's retry schedule by 0.002 (10 s -> 20 ms) and scans for
expiry only when asked, so every scenario runs in well under a second of waiting.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
import urllib.request

import pytest

from local.cloud.process import LocalCloud, LocalCloudError
from tests.cloud.support import SUB1, VAULT1, secret_client
from tests.cloud.webhook import Behaviour, Webhook, wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

TOPIC = f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.KeyVault/vaults/test1-kv"
NEAR = "Microsoft.KeyVault.SecretNearExpiry"
EXPIRED = "Microsoft.KeyVault.SecretExpired"
NEW = "Microsoft.KeyVault.SecretNewVersionCreated"
EXPIRY = [NEAR, EXPIRED]  # keeps the set_secret calls of a test from using up its failures


def _events(webhook: Webhook, path: str, subject: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for r in webhook.notifications(path) for e in r.body if e["subject"] == subject]


def _exp(seconds_from_now: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(time.time()) + seconds_from_now, dt.UTC)


def test_new_version_is_delivered_after_the_validation_handshake(webhook: Webhook) -> None:
    made = secret_client().set_secret("evented", "v1", expires_on=_exp(86400))
    received = wait_for(
        lambda: [r for r in webhook.notifications("/all-events") if r.body[0]["subject"] == "evented"]
    )
    assert len(webhook.validations("/all-events")) == 1
    validation = webhook.validations("/all-events")[0].body[0]
    assert validation["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert validation["data"]["validationUrl"].startswith("http://127.0.0.1:")

    delivery = received[0]
    assert isinstance(delivery.body, list)
    assert len(delivery.body) == 1
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["aeg-subscription-name"] == "ALL-EVENTS"
    assert delivery.headers["aeg-delivery-count"] == "0"
    event = delivery.body[0]
    assert event["eventType"] == NEW
    assert event["topic"] == TOPIC
    assert event["subject"] == "evented"
    assert event["dataVersion"] == "1"
    assert event["metadataVersion"] == "1"
    assert event["eventTime"].endswith("Z")
    assert event["data"] == {
        "Id": f"{VAULT1}/secrets/evented/{made.properties.version}",
        "VaultName": "test1-kv",
        "ObjectType": "Secret",
        "ObjectName": "evented",
        "Version": made.properties.version,
        "NBF": None,
        "EXP": int(made.properties.expires_on.timestamp()),  # type: ignore[union-attr]
    }


def test_near_expiry_then_expired_are_each_sent_once(cloud: LocalCloud, webhook: Webhook) -> None:
    client = secret_client()
    version = client.set_secret("expiring", "v", expires_on=_exp(600)).properties.version
    first = [e for e in cloud.admin.scan_now() if e["subject"] == "expiring"]
    assert [e["eventType"] for e in first] == [NEAR]
    assert first[0]["data"]["Version"] == version
    assert [e for e in cloud.admin.scan_now() if e["subject"] == "expiring"] == []

    client.update_secret_properties("expiring", version, expires_on=_exp(-1))
    second = [e for e in cloud.admin.scan_now() if e["subject"] == "expiring"]
    assert [e["eventType"] for e in second] == [EXPIRED]
    assert [e for e in cloud.admin.scan_now() if e["subject"] == "expiring"] == []
    wait_for(
        lambda: len([e for e in _events(webhook, "/all-events", "expiring") if e["eventType"] != NEW]) == 2
    )


def test_only_the_current_version_and_only_inside_the_window_count(cloud: LocalCloud) -> None:
    client = secret_client()
    client.set_secret("rotated-away", "old", expires_on=_exp(60))
    client.set_secret("rotated-away", "new", expires_on=_exp(86400))  # outside the 1 h window
    client.set_secret("no-expiry", "v")
    assert [e for e in cloud.admin.scan_now() if e["subject"] in ("rotated-away", "no-expiry")] == []


def test_the_periodic_scan_runs_on_its_own(cloud: LocalCloud, webhook: Webhook) -> None:
    secret_client().set_secret("scanned-by-timer", "v", expires_on=_exp(300))
    cloud.admin.set_eventgrid(scan_interval_seconds=0.2)
    try:
        wait_for(
            lambda: [e for e in _events(webhook, "/all-events", "scanned-by-timer") if e["eventType"] == NEAR]
        )
    finally:
        cloud.admin.set_eventgrid(scan_interval_seconds=3600)


def test_the_near_expiry_window_is_configurable(cloud: LocalCloud) -> None:
    secret_client().set_secret("far-away", "v", expires_on=_exp(5 * 86400))
    assert [e for e in cloud.admin.scan_now() if e["subject"] == "far-away"] == []
    cloud.admin.set_eventgrid(near_expiry_window_seconds=30 * 86400)  # Azure's 30 days
    try:
        assert [e["eventType"] for e in cloud.admin.scan_now() if e["subject"] == "far-away"] == [NEAR]
    finally:
        cloud.admin.set_eventgrid(near_expiry_window_seconds=3600)


def test_subscriptions_filter_by_event_type(cloud: LocalCloud, webhook: Webhook) -> None:
    cloud.admin.add_event_subscription(
        name="near-only", vault="test1-kv", endpoint=f"{webhook.url}/near-only", included_event_types=[NEAR]
    )
    assert len(webhook.validations("/near-only")) == 1  # validated when created, as in Azure
    secret_client().set_secret("filtered", "v")
    event = cloud.admin.emit_event(vault="test1-kv", secret="filtered", event_type="SecretNearExpiry")
    received = wait_for(lambda: webhook.notifications("/near-only"))
    assert [r.body[0]["id"] for r in received] == [event["id"]]
    time.sleep(0.2)
    assert all(r.body[0]["eventType"] == NEAR for r in webhook.notifications("/near-only"))


def test_failed_deliveries_are_retried_on_the_schedule(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/flaky", Behaviour(failures=[500, 503, 429]))
    cloud.admin.add_event_subscription(
        name="flaky", vault="test1-kv", endpoint=f"{webhook.url}/flaky", included_event_types=EXPIRY
    )
    secret_client().set_secret("retried", "v")
    event = cloud.admin.emit_event(vault="test1-kv", secret="retried", event_type="SecretNearExpiry")
    mine = wait_for(lambda: webhook.notifications("/flaky")[3:] and webhook.notifications("/flaky"))
    assert {r.body[0]["id"] for r in mine} == {event["id"]}
    assert [r.headers["aeg-delivery-count"] for r in mine] == ["0", "1", "2", "3"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(mine)]
    # 10 s, 30 s and 60 s of Azure's schedule, times the topology's 0.002
    assert gaps[0] >= 0.02 * 0.9
    assert gaps[1] >= 0.06 * 0.9
    assert gaps[2] >= 0.12 * 0.9
    outcomes = [
        a["outcome"]
        for a in cloud.admin.deliveries()
        if a["event_id"] == event["id"] and a["subscription"] == "flaky"
    ]
    assert outcomes == ["InternalServerError", "ServiceUnavailable", "TooManyRequests", "OK"]


def test_dead_letter_after_the_last_attempt(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/broken", Behaviour(failures=[500] * 10))
    cloud.admin.add_event_subscription(
        name="broken",
        vault="test1-kv",
        endpoint=f"{webhook.url}/broken",
        included_event_types=EXPIRY,
        max_delivery_attempts=3,
    )
    secret_client().set_secret("undeliverable", "v")
    event = cloud.admin.emit_event(vault="test1-kv", secret="undeliverable", event_type="SecretExpired")
    letters = wait_for(lambda: [d for d in cloud.admin.dead_letters() if d["id"] == event["id"]])
    assert len(webhook.notifications("/broken")) == 3
    letter = letters[0]
    assert letter["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert letter["deliveryAttempts"] == 3
    assert letter["lastDeliveryOutcome"] == "InternalServerError"
    assert letter["eventType"] == EXPIRED
    assert letter["data"]["ObjectName"] == "undeliverable"
    assert {"publishTime", "lastDeliveryAttemptTime"} <= set(letter)
    on_disk = [json.loads(line) for line in (cloud.data_dir / "deadletter.jsonl").read_text().splitlines()]
    assert event["id"] in [d["id"] for d in on_disk]


def test_bad_request_is_dead_lettered_without_retry(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/rejects", Behaviour(failures=[400]))
    cloud.admin.add_event_subscription(
        name="rejects", vault="test1-kv", endpoint=f"{webhook.url}/rejects", included_event_types=EXPIRY
    )
    secret_client().set_secret("rejected", "v")
    event = cloud.admin.emit_event(vault="test1-kv", secret="rejected", event_type="SecretNearExpiry")
    letter = wait_for(lambda: [d for d in cloud.admin.dead_letters() if d["id"] == event["id"]])[0]
    assert letter["deliveryAttempts"] == 1
    assert letter["lastDeliveryOutcome"] == "BadRequest"
    time.sleep(0.3)
    assert len(webhook.notifications("/rejects")) == 1


def test_duplicates_switch_delivers_the_same_event_twice(cloud: LocalCloud, webhook: Webhook) -> None:
    cloud.admin.add_event_subscription(
        name="dupes", vault="test1-kv", endpoint=f"{webhook.url}/dupes", included_event_types=EXPIRY
    )
    secret_client().set_secret("duplicated", "v")
    cloud.admin.set_eventgrid(duplicates=True)
    try:
        event = cloud.admin.emit_event(vault="test1-kv", secret="duplicated", event_type="SecretNearExpiry")
        copies = wait_for(
            lambda: [r for r in webhook.notifications("/dupes") if r.body[0]["id"] == event["id"]][1:] or None
        )
        assert copies
        assert [r.body[0]["id"] for r in webhook.notifications("/dupes")].count(event["id"]) == 2
    finally:
        cloud.admin.set_eventgrid(duplicates=False)


def test_a_webhook_that_fails_the_handshake_is_not_subscribed(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/refuser", Behaviour(handshake="refuse"))
    with pytest.raises(LocalCloudError) as refused:
        cloud.admin.add_event_subscription(
            name="refuser", vault="test1-kv", endpoint=f"{webhook.url}/refuser"
        )
    assert "Webhook validation handshake failed" in str(refused.value)
    assert "refuser" not in [
        s["name"] for s in cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]
    ]


def test_manual_validation_through_the_validation_url(cloud: LocalCloud, webhook: Webhook) -> None:
    webhook.behave("/manual", Behaviour(handshake="silent"))
    errors: list[Exception] = []

    def subscribe() -> None:
        try:
            cloud.admin.add_event_subscription(
                name="manual", vault="test1-kv", endpoint=f"{webhook.url}/manual"
            )
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=subscribe)
    worker.start()
    validation = wait_for(lambda: webhook.validations("/manual"))[0].body[0]
    with urllib.request.urlopen(validation["data"]["validationUrl"], timeout=5) as answer:
        assert answer.status == 200
    worker.join(10)
    assert errors == []
    names = [s["name"] for s in cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]]
    assert "manual" in names


def test_emit_for_an_unknown_secret_is_refused(cloud: LocalCloud) -> None:
    with pytest.raises(LocalCloudError) as refused:
        cloud.admin.emit_event(vault="test1-kv", secret="never-set", event_type="SecretNearExpiry")
    assert "404" in str(refused.value)
