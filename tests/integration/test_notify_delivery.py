"""rotation.notify_delivery.deliver in this process against the local cloud: the real
EventGridPublisherClient with the hub's managed identity to the custom topics, the real
SecretClient reading the webhook URL from the hub's vault, a webhook receiver on 127.0.0.1.

Asserted is what a subscriber sees (the topic's events, the webhook's requests), what the
activity reports, and that a topic or a webhook in trouble costs a bounded number of attempts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from local.stack import HUB_VAULT, NOTIFY_TOPIC, LocalStack
from rotation.notifications import APPROVAL_WAITING, Notification, preflight_failed
from rotation.notify_delivery import Delivery, deliver
from rotation.settings import Settings

OPS_ALERTS = "ops-alerts"  # the hub holds no EventGrid Data Sender there
WEBHOOK = "chat-webhook"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[Any] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/XXXXsecretXXXX"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), with_host=False, databases=()) as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def clean(stack: LocalStack, receiver: Receiver) -> Iterator[None]:
    assert stack.cloud is not None
    stack.cloud.admin.clear_faults()
    for topic in (NOTIFY_TOPIC, OPS_ALERTS):
        stack.cloud.admin.clear_topic_events(topic)
    receiver.bodies.clear()
    receiver.status = 200
    stack.secret_client(HUB_VAULT).set_secret(WEBHOOK, receiver.url)
    yield
    stack.cloud.admin.clear_faults()


def settings(stack: LocalStack, **extra: str) -> Settings:
    return Settings.from_environ({**os.environ, **stack.app_settings(), **extra})


WAITING = Notification(
    kind=APPROVAL_WAITING,
    vault="spoke1-kv",
    secret="db-password",
    rotation_id="rotate_spoke1-kv_db-password_0123456789abcdef0123456789abcdef",
    step="approval",
    detail="waiting for a decision",
    time="2026-12-03T08:15:00+00:00",
    deadline="2026-12-06T08:15:00+00:00",
)


def test_the_topic_and_a_slack_webhook_both_get_the_notification(
    stack: LocalStack, receiver: Receiver
) -> None:
    assert stack.cloud is not None
    configured = settings(
        stack, ROTATION_NOTIFY_WEBHOOK_SECRET=f"{HUB_VAULT}/{WEBHOOK}", ROTATION_NOTIFY_WEBHOOK_FORMAT="slack"
    )
    assert deliver(WAITING, configured) == Delivery(topic="sent", webhook="sent")

    [received] = stack.cloud.admin.topic_events(NOTIFY_TOPIC)
    assert received["identity"] == "hub-rotation-identity"
    event = received["event"]
    assert (event["type"], event["source"], event["subject"]) == (
        "KeyVaultRotationHub.ApprovalWaiting",
        stack.hub_url,
        "/vaults/spoke1-kv/secrets/db-password",
    )
    assert event["data"]["links"]["approvals"] == f"{stack.hub_url}/api/approvals"
    [slack] = receiver.bodies
    assert slack["text"].startswith("Rotation of spoke1-kv/db-password waits for approval")
    assert slack["blocks"][0]["type"] == "header"


def test_without_settings_nothing_is_sent(stack: LocalStack, receiver: Receiver) -> None:
    assert stack.cloud is not None
    assert deliver(WAITING, settings(stack, ROTATION_NOTIFY_TOPIC_ENDPOINT="")) == Delivery("off", "off")
    assert stack.cloud.admin.topic_events(NOTIFY_TOPIC) == []
    assert receiver.bodies == []


def test_a_topic_that_refuses_the_hub_is_a_warning_and_the_webhook_still_gets_it(
    stack: LocalStack, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    assert stack.cloud is not None
    configured = settings(
        stack,
        ROTATION_NOTIFY_TOPIC_ENDPOINT=stack.topic_endpoint(OPS_ALERTS),
        ROTATION_NOTIFY_WEBHOOK_SECRET=f"{HUB_VAULT}/{WEBHOOK}",
    )
    with caplog.at_level(logging.WARNING, logger="rotation.notify_delivery"):
        delivery = deliver(WAITING, configured)

    assert delivery == Delivery(topic="failed: ClientAuthenticationError (HTTP 401)", webhook="sent")
    assert stack.cloud.admin.topic_events(OPS_ALERTS) == []
    assert len(receiver.bodies) == 1
    [warning] = [r for r in caplog.records if r.name == "rotation.notify_delivery"]
    assert warning.levelno == logging.WARNING
    assert "not published to the Event Grid topic" in warning.getMessage()


def test_a_topic_answering_503_costs_four_attempts_then_gives_up(stack: LocalStack) -> None:
    assert stack.cloud is not None
    fault = stack.cloud.admin.inject_fault(
        kind="unavailable", target=NOTIFY_TOPIC, operation="publish_events", count=10
    )
    delivery = deliver(WAITING, settings(stack))

    assert delivery.topic == "failed: HttpResponseError (HTTP 503)"
    [left] = [f for f in stack.cloud.admin.faults() if f["id"] == fault["id"]]
    assert left["remaining"] == 10 - 4  # one attempt and three retries, not the SDK's default ten


def test_a_throttled_topic_gets_the_event_on_a_retry(stack: LocalStack) -> None:
    assert stack.cloud is not None
    stack.cloud.admin.inject_fault(
        kind="throttle", target=NOTIFY_TOPIC, operation="publish_events", count=1, retry_after_seconds=1
    )
    assert deliver(WAITING, settings(stack)).topic == "sent"
    assert len(stack.cloud.admin.topic_events(NOTIFY_TOPIC)) == 1


def test_an_unreadable_webhook_secret_is_a_warning_naming_it(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings(stack, ROTATION_NOTIFY_WEBHOOK_SECRET=f"{HUB_VAULT}/no-such-webhook")
    with caplog.at_level(logging.WARNING, logger="rotation.notify_delivery"):
        delivery = deliver(WAITING, configured)
    assert delivery.topic == "sent"
    assert delivery.webhook == "failed: NotFound"
    assert "no-such-webhook" in caplog.text


def test_a_webhook_refusing_with_4xx_is_reported_without_its_url(
    stack: LocalStack, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 404
    configured = settings(stack, ROTATION_NOTIFY_WEBHOOK_SECRET=f"{HUB_VAULT}/{WEBHOOK}")
    with caplog.at_level(logging.DEBUG):
        delivery = deliver(WAITING, configured)
    assert delivery.webhook == "failed: HTTP 404"
    assert len(receiver.bodies) == 1
    # Not even urllib3's DEBUG line of the request names the path: the URL is a secret.
    assert "XXXXsecretXXXX" not in caplog.text
    assert "POST <notification webhook path> HTTP/1.1" in caplog.text


def test_a_preflight_notification_goes_out_the_same_way(stack: LocalStack) -> None:
    assert stack.cloud is not None
    found = preflight_failed(
        vault="spoke2-kv",
        secret="orders-db",
        target="postgresql-login",
        failing_checks={"target": "password authentication failed for the admin"},
        time="2026-12-03T03:00:00+00:00",
    )
    assert deliver(found, settings(stack)).topic == "sent"
    [received] = stack.cloud.admin.topic_events(NOTIFY_TOPIC)
    assert received["event"]["type"] == "KeyVaultRotationHub.PreflightFailed"
    assert received["event"]["data"]["rotationId"] == ""
