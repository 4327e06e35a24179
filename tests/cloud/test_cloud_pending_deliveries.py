"""Pending Event Grid deliveries survive a restart (or a crash) of the local cloud, and arrive once.

The cloud runs the test topology plus one topology subscription in the CloudEvents schema (so it
is there again after the restart, and validated lazily by the OPTIONS handshake).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.cloud.process import LocalCloud
from tests.cloud.support import TOPOLOGY, secret_client
from tests.cloud.webhook import Behaviour, Webhook, wait_for


@pytest.fixture
def hook() -> Iterator[Webhook]:
    started = Webhook().start()
    yield started
    started.stop()


@pytest.fixture
def restarting_cloud(tmp_path: Path, hook: Webhook, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCloud]:
    doc = json.loads(TOPOLOGY.read_text(encoding="utf-8"))
    doc["event_subscriptions"].append(
        {
            "name": "ce-hub",
            "vault": "test1-kv",
            "endpoint": "${WEBHOOK_URL}/ce-hub",
            "included_event_types": ["Microsoft.KeyVault.SecretNearExpiry"],
            "event_delivery_schema": "CloudEventSchemaV1_0",
        }
    )
    topology = tmp_path / "topology.json"
    topology.write_text(json.dumps(doc), encoding="utf-8")
    env = {
        "WEBHOOK_URL": hook.url,
        "PYTHON": sys.executable,
        "PROBE_MARKER": "m",
        "PROBE_UNHEALTHY_FILE": str(tmp_path / "unhealthy"),
    }
    started = LocalCloud(data_dir=tmp_path / "data", topology=topology, env=env).start()
    for name, value in started.client_env.items():
        monkeypatch.setenv(name, value)
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "kill"])
def test_a_delivery_pending_across_a_restart_arrives_once_afterwards(
    restarting_cloud: LocalCloud, hook: Webhook, how: str
) -> None:
    hook.behave("/ce-hub", Behaviour(failures=[503]))
    secret_client().set_secret("waiting", "v")
    # 10 s x 0.4: the retry is due 4 s after the failed first attempt, well after the cloud is down.
    restarting_cloud.admin.set_eventgrid(retry_schedule_scale=0.4)
    event = restarting_cloud.admin.emit_event(
        vault="test1-kv", secret="waiting", event_type="SecretNearExpiry"
    )
    first = wait_for(lambda: hook.notifications("/ce-hub"))
    assert [r.headers["aeg-delivery-count"] for r in first] == ["0"]
    # The failed attempt is on record in the cloud (not only received by the webhook) before it stops.
    wait_for(lambda: [a for a in restarting_cloud.admin.deliveries() if a["event_id"] == event["id"]])
    pending = {
        s["name"]: s["pending"]
        for s in restarting_cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]
    }
    assert pending["ce-hub"] == 1

    if how == "kill":
        restarting_cloud.kill()  # a crash: nothing is flushed or cancelled in order
    restarting_cloud.restart()

    delivered = wait_for(lambda: hook.notifications("/ce-hub")[1:], timeout=20)
    assert [(r.body["id"], r.headers["aeg-delivery-count"]) for r in delivered] == [(event["id"], "1")]
    assert delivered[0].body["type"] == "Microsoft.KeyVault.SecretNearExpiry"
    # The attempt counter and the schedule came back from the data dir: the retry was not early.
    assert delivered[0].at - first[0].at >= 4.0 * 0.9
    wait_for(
        lambda: [
            s
            for s in restarting_cloud.admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]
            if s["name"] == "ce-hub" and s["pending"] == 0
        ]
    )
    assert len(hook.options("/ce-hub")) >= 1  # the OPTIONS handshake, again after the restart
    assert [a["outcome"] for a in restarting_cloud.admin.deliveries() if a["event_id"] == event["id"]] == [
        "OK"
    ]
    assert [d for d in restarting_cloud.admin.dead_letters() if d["id"] == event["id"]] == []
    assert [r.body["id"] for r in hook.notifications("/ce-hub")].count(event["id"]) == 2  # 503, then once


@pytest.mark.slow
def test_admin_subscription_changes_and_their_pending_deliveries_survive_a_restart(
    restarting_cloud: LocalCloud, hook: Webhook
) -> None:
    admin = restarting_cloud.admin
    admin.add_event_subscription(
        name="added",
        vault="test1-kv",
        endpoint=f"{hook.url}/added",
        included_event_types=["Microsoft.KeyVault.SecretExpired"],
        event_delivery_schema="CloudEventSchemaV1_0",
    )
    admin.remove_event_subscription("all-events")  # one of the topology's
    hook.behave("/added", Behaviour(failures=[503]))
    secret_client().set_secret("expired-meanwhile", "v")
    admin.set_eventgrid(retry_schedule_scale=0.4)
    event = admin.emit_event(vault="test1-kv", secret="expired-meanwhile", event_type="SecretExpired")
    # The failed attempt is on record in the cloud (not only received by the webhook) before the crash.
    wait_for(lambda: [a for a in admin.deliveries() if a["event_id"] == event["id"]])

    restarting_cloud.kill()
    restarting_cloud.restart()  # same ports
    admin = restarting_cloud.admin

    delivered = wait_for(lambda: hook.notifications("/added")[1:], timeout=20)
    assert [(r.body["id"], r.headers["aeg-delivery-count"]) for r in delivered] == [(event["id"], "1")]
    listed = {s["name"]: s for s in admin.call("GET", "/admin/eventgrid/subscriptions")["subscriptions"]}
    assert "all-events" not in listed  # a deleted topology subscription stays deleted
    assert listed["added"]["event_delivery_schema"] == "CloudEventSchemaV1_0"
    assert listed["added"]["validated"] is True
    assert len(hook.options("/added")) == 1  # validated when created, not again after the restart
    assert hook.notifications("/all-events") == []
