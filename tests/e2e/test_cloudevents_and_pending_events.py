"""Event Grid fidelity through the whole stack: a subscription delivering CloudEvents 1.0 rotates a
secret as the Event Grid schema does, and an event whose delivery is pending while the hub is down
and the local cloud restarts still rotates the secret, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    EVENTGRID_WEBHOOK,
    HostLog,
    assert_consistent,
    assert_no_value_leaked,
    instance_ids,
    quiet_expiry_scan,
    seed,
    versions_of,
)

from local.scenario import wait_for
from local.stack import POSTGRESQL, LocalStack, Seeded


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), databases=(POSTGRESQL,)) as running:
        # Only the tests raise events: the periodic NearExpiry scan would race them.
        quiet_expiry_scan(running)
        yield running


def _subscription(stack: LocalStack, name: str) -> dict[str, Any]:
    assert stack.cloud is not None
    listed = stack.cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]
    return next(s for s in listed if s["name"] == name)


def _rotated_once(stack: LocalStack, seeded: Seeded, done: dict[str, Any]) -> None:
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == done["output"]["new_version"]
    assert len(versions_of(stack, seeded)) == 2
    assert instance_ids(stack, stack.rotation_id(seeded)) == {stack.rotation_id(seeded)}
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_a_cloudevents_subscription_rotates_the_secret(stack: LocalStack) -> None:
    assert stack.cloud is not None
    log = HostLog(stack)
    # The spoke's subscription, switched to the CloudEvents schema: Azure validates it now, with the
    # OPTIONS handshake the hub's Event Grid webhook answers.
    stack.cloud.admin.add_event_subscription(
        name="spoke2-to-hub",
        vault="spoke2-kv",
        endpoint=f"{stack.hub_url}{EVENTGRID_WEBHOOK}",
        included_event_types=["Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"],
        event_delivery_schema="CloudEventSchemaV1_0",
    )
    assert _subscription(stack, "spoke2-to-hub")["event_delivery_schema"] == "CloudEventSchemaV1_0"
    log.wait_for("event grid CloudEvents handshake for function on_secret_event")
    seeded = seed(stack, "spoke2-kv", prefix="ce")

    event = stack.cloud.admin.emit_event(
        vault=seeded.vault, secret=seeded.name, event_type="SecretNearExpiry"
    )
    done = wait_for(stack, stack.rotation_id(seeded))

    _rotated_once(stack, seeded, done)
    outcomes = [a["outcome"] for a in stack.cloud.admin.deliveries() if a["event_id"] == event["id"]]
    assert outcomes == ["Accepted"]  # the host's 202, for one CloudEvent in one request
    assert f"event {event['id']} (Microsoft.KeyVault.SecretNearExpiry) handled" in log.text()


@pytest.mark.slow
def test_an_event_pending_across_a_cloud_restart_rotates_the_secret_once(stack: LocalStack) -> None:
    assert stack.cloud is not None
    assert stack.host is not None
    seeded = seed(stack, "spoke1-kv", prefix="pending")
    stack.host.stop()  # the hub is down: Event Grid cannot connect and keeps the event
    stack.cloud.admin.set_eventgrid(retry_schedule_scale=0.3)  # the 2nd attempt 3 s after the 1st

    raised = [e for e in stack.cloud.admin.scan_now() if e["subject"] == seeded.name]
    assert [e["eventType"] for e in raised] == ["Microsoft.KeyVault.SecretNearExpiry"]
    event_id = raised[0]["id"]
    first = stack.cloud.admin.deliveries()
    # The topology's subscription is validated lazily: the handshake itself cannot connect.
    assert [a["outcome"] for a in first if a["event_id"] == event_id] in ([], ["ValidationFailed"])
    assert _subscription(stack, "spoke1-to-hub")["pending"] == 1

    stack.cloud.restart()  # same data dir and ports: the hub's env stays valid
    quiet_expiry_scan(stack)
    stack.cloud.admin.set_eventgrid(retry_schedule_scale=0.01)  # later retries come quickly
    log = HostLog(stack)
    stack.host.start()

    done = wait_for(stack, stack.rotation_id(seeded), timeout=120)

    _rotated_once(stack, seeded, done)
    log.wait_for(f"event {event_id} (Microsoft.KeyVault.SecretNearExpiry) handled")
    assert log.text().count(f"event {event_id} ") == 1  # delivered to the hub once
    outcomes = [a["outcome"] for a in stack.cloud.admin.deliveries() if a["event_id"] == event_id]
    assert outcomes[-1] == "Accepted"
    assert outcomes.count("Accepted") == 1
    assert _subscription(stack, "spoke1-to-hub")["pending"] == 0
    assert [d for d in stack.cloud.admin.dead_letters() if d["id"] == event_id] == []
