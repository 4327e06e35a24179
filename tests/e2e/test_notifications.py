"""Notifications on the whole stack: the hub publishes CloudEvents to the local cloud's Event Grid
custom topic as its own identity and posts to a chat webhook whose URL it reads from its own
vault (``hub-kv``), here a small aiohttp receiver on 127.0.0.1 answering as a Teams workflow
does (202). What is checked is what people would see: the events the topic received, the
requests the webhook received, and that neither a broken webhook nor a topic that refuses the
hub changes how a rotation ends. No value of any secret involved, nor the webhook URL (a secret
itself), appears in an event, a webhook request, the host's log or the task hub.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from e2e_helpers import (
    approve,
    durable_store_text,
    event_grid_event,
    post_events,
    quiet_expiry_scan,
    secret_values,
    seed,
    seed_admin,
    start_rotation,
    value_of,
    versions_of,
    wait_until,
)

from local.ports import free_port
from local.scenario import wait_for
from local.stack import HUB_VAULT, NOTIFY_TOPIC, LocalStack, Seeded
from rotation import metadata

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "chat-webhook"  # a secret's name
FAST_RETRIES = {"ROTATION_RETRY_MAX_ATTEMPTS": "2", "ROTATION_RETRY_FIRST_INTERVAL_SECONDS": "0.5"}
# The webhook poster's attempts per notification (rotation/webhooks.py ATTEMPTS).
WEBHOOK_ATTEMPTS = 4


class Receiver:
    """A chat webhook on 127.0.0.1: records each request and answers the next scripted status
    (202, as a Teams workflow answers, once the script is used up)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)  # the secret part of the URL, as in Slack's and Teams'
        self.requests: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()
        self.default_status = 202
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/workflows/{self.token}/triggers/manual/run"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            {"path": request.path, "content_type": request.content_type, "body": json.loads(body)}
        )
        status = self.statuses.popleft() if self.statuses else self.default_status
        return web.Response(status=status, text="")

    def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._thread.start()

        async def serve() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def about(self, rotation_id: str) -> list[dict[str, Any]]:
        """The Teams cards received about one rotation (its id is one of the card's facts)."""
        found = []
        for request in list(self.requests):
            card = request["body"]["attachments"][0]["content"]
            facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
            if facts.get("Rotation") == rotation_id:
                found.append(request)
        return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalStack]:
    settings = {
        **FAST_RETRIES,
        "ROTATION_NOTIFY_WEBHOOK_SECRET": f"{HUB_VAULT}/{WEBHOOK_SECRET}",
        "ROTATION_NOTIFY_WEBHOOK_FORMAT": "teams",
    }
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), app_settings=settings, databases=()) as running:
        quiet_expiry_scan(running)
        running.secret_client(HUB_VAULT).set_secret(WEBHOOK_SECRET, receiver.url)
        yield running


@pytest.fixture
def webhook_url(stack: LocalStack, receiver: Receiver) -> Iterator[None]:
    """Whatever a test points the webhook at, the next test finds it answering again."""
    yield
    receiver.statuses.clear()
    receiver.default_status = 202
    stack.secret_client(HUB_VAULT).set_secret(WEBHOOK_SECRET, receiver.url)


def topic_events(stack: LocalStack, rotation_id: str, topic: str = NOTIFY_TOPIC) -> list[dict[str, Any]]:
    assert stack.cloud is not None
    return [
        received
        for received in stack.cloud.admin.topic_events(topic)
        if received["event"]["data"].get("rotationId") == rotation_id
    ]


def wrong_admin_password(stack: LocalStack, admin: Seeded) -> None:
    """The admin secret's value no longer is the admin's password (someone changed it by hand)."""
    stack.secret_client(admin.vault).set_secret(
        admin.name,
        secrets.token_urlsafe(18),
        tags={metadata.CREDENTIAL: admin.login, metadata.PROVIDER: stack.database(admin.kind).provider()},
    )


def failing_rotation(stack: LocalStack) -> tuple[Seeded, Seeded, dict[str, Any]]:
    """A rotation whose admin password is wrong: apply fails for good, the undos run."""
    admin = seed_admin(stack)
    seeded = seed(stack, "spoke2-kv", admin=f"secret:{admin.name}")
    wrong_admin_password(stack, admin)
    failed = wait_for(stack, start_rotation(stack, seeded))
    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "apply"
    assert failed["status"]["failed"]["class"] == "AuthenticationFailed"
    assert versions_of(stack, seeded) == [seeded.version]
    return seeded, admin, failed


def waiting_rotation(stack: LocalStack) -> tuple[Seeded, str, dict[str, Any]]:
    seeded = seed(stack, "spoke1-kv", tags={metadata.APPROVAL: "required"})
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    rotation_id = stack.rotation_id(seeded)
    return seeded, rotation_id, wait_for(stack, rotation_id, step="approval", until=())


def assert_no_secret_anywhere(stack: LocalStack, receiver: Receiver, *seeded: Seeded) -> None:
    """No value the secrets ever held, nor the webhook URL's secret part, in the topic's events,
    the webhook's requests, the host's log or the task hub's store."""
    assert stack.host is not None
    assert stack.cloud is not None
    published = json.dumps(stack.cloud.admin.topic_events(NOTIFY_TOPIC))
    posted = json.dumps([r["body"] for r in receiver.requests])  # the path holds the URL: it is its own
    log = stack.host.log_path.read_text(errors="replace")
    store = durable_store_text(stack)
    values = [value for s in seeded for value in secret_values(stack, s)]
    assert values
    for value in [*values, receiver.token, value_of(stack, HUB_VAULT, WEBHOOK_SECRET)]:
        for where, text in (
            ("topic", published),
            ("webhook", posted),
            ("host log", log),
            ("task hub", store),
        ):
            assert value not in text, f"a secret value is in the {where}"


def test_a_failed_rotation_is_announced_on_the_topic_and_at_the_webhook(
    stack: LocalStack, receiver: Receiver, webhook_url: None
) -> None:
    seeded, admin, failed = failing_rotation(stack)
    rotation_id = str(failed["id"])

    [received] = topic_events(stack, rotation_id)
    assert received["identity"] == "hub-rotation-identity"
    event = received["event"]
    status = failed["status"]
    restored = all(u["result"] == "done" for u in status["compensation"])
    assert event["type"] == (
        "KeyVaultRotationHub.RotationCompensated" if restored else "KeyVaultRotationHub.RotationFailed"
    )
    assert event["specversion"] == "1.0"
    assert event["source"] == stack.hub_url
    assert event["subject"] == f"/vaults/spoke2-kv/secrets/{seeded.name}"
    data = event["data"]
    assert (data["vault"], data["secret"], data["rotationId"], data["step"]) == (
        "spoke2-kv",
        seeded.name,
        rotation_id,
        "apply",
    )
    assert data["detail"] == f"AuthenticationFailed: {status['failed']['message']}"
    assert data["compensation"] == status["compensation"]
    assert data["links"] == {"status": f"{stack.hub_url}/api/rotations/{rotation_id}"}

    [posted] = receiver.about(rotation_id)
    assert posted["path"] == f"/workflows/{receiver.token}/triggers/manual/run"
    assert posted["content_type"] == "application/json"
    card = posted["body"]["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"].startswith(f"Rotation of spoke2-kv/{seeded.name} failed in step apply")
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Rotation status",
            "url": f"{stack.hub_url}/api/rotations/{rotation_id}",
        }
    ]
    assert_no_secret_anywhere(stack, receiver, seeded, admin)


def test_an_approval_is_announced_when_it_waits_and_when_it_is_decided(
    stack: LocalStack, receiver: Receiver, webhook_url: None
) -> None:
    seeded, rotation_id, waiting = waiting_rotation(stack)
    wait_until(lambda: len(topic_events(stack, rotation_id)) == 1, "the waiting notice on the topic")
    [notice] = topic_events(stack, rotation_id)
    assert notice["event"]["type"] == "KeyVaultRotationHub.ApprovalWaiting"
    data = notice["event"]["data"]
    assert data["deadline"] == waiting["status"]["awaitingDecisionUntil"]
    assert data["links"]["approvals"] == f"{stack.hub_url}/api/approvals"
    wait_until(lambda: len(receiver.about(rotation_id)) == 1, "the waiting card at the webhook")
    card = receiver.about(rotation_id)[0]["body"]["attachments"][0]["content"]
    assert card["actions"][0] == {
        "type": "Action.OpenUrl",
        "title": "Open the approval page",
        "url": f"{stack.hub_url}/api/approvals",
    }

    approve(stack, rotation_id)
    ended = wait_for(stack, rotation_id)

    assert ended["runtimeStatus"] == "Completed"
    assert ended["output"]["result"] == "rotated"
    events = [r["event"] for r in topic_events(stack, rotation_id)]
    assert [e["type"] for e in events] == [
        "KeyVaultRotationHub.ApprovalWaiting",
        "KeyVaultRotationHub.RotationDecided",
    ]
    assert events[1]["data"]["decision"] == ended["output"]["decision"]
    assert events[1]["data"]["detail"] == f"approved by {ended['output']['decision']['approver']}"
    assert len({e["id"] for e in events}) == 2
    assert [
        r["body"]["attachments"][0]["content"]["body"][0]["text"] for r in receiver.about(rotation_id)
    ] == [
        f"Rotation of spoke1-kv/{seeded.name} waits for approval",
        f"Rotation of spoke1-kv/{seeded.name} was approved",
    ]
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    assert_no_secret_anywhere(stack, receiver, seeded)


def test_no_notification_on_the_happy_path_without_approval(
    stack: LocalStack, receiver: Receiver, webhook_url: None
) -> None:
    seeded = seed(stack)
    ended = wait_for(stack, start_rotation(stack, seeded))

    assert ended["output"]["result"] == "rotated"
    assert topic_events(stack, str(ended["id"])) == []
    assert receiver.about(str(ended["id"])) == []


@pytest.mark.parametrize("broken", ["closed-port", "http-500"])
def test_a_webhook_that_fails_does_not_change_the_outcome(
    stack: LocalStack, receiver: Receiver, webhook_url: None, broken: str
) -> None:
    if broken == "closed-port":
        dead = f"http://127.0.0.1:{free_port()}/workflows/{receiver.token}/dead"
        stack.secret_client(HUB_VAULT).set_secret(WEBHOOK_SECRET, dead)
    else:
        receiver.default_status = 500
    before = len(receiver.requests)
    seeded, rotation_id, _ = waiting_rotation(stack)
    approve(stack, rotation_id)
    ended = wait_for(stack, rotation_id)

    assert ended["runtimeStatus"] == "Completed"
    assert ended["output"]["result"] == "rotated"
    assert stack.current_value_logs_in(seeded.vault, seeded.name)
    # The topic is told all the same.
    assert [r["event"]["data"]["kind"] for r in topic_events(stack, rotation_id)] == [
        "approval-waiting",
        "decided",
    ]
    if broken == "http-500":
        # Each of the two notifications: a few attempts with back-off, then given up.
        assert len(receiver.requests) - before == 2 * WEBHOOK_ATTEMPTS
        outcome = "HTTP 500"
    else:
        assert len(receiver.requests) == before
        outcome = "ServiceRequestError"
    assert stack.host is not None
    log = stack.host.log_path.read_text(errors="replace")
    warnings = [
        line for line in log.splitlines() if rotation_id in line and "not posted to the webhook" in line
    ]
    assert len(warnings) == 2, warnings
    assert all(f"hub-kv/{WEBHOOK_SECRET} (teams): {outcome}" in line for line in warnings)
    assert_no_secret_anywhere(stack, receiver, seeded)


def test_a_webhook_that_answers_500_once_gets_the_message_on_the_retry(
    stack: LocalStack, receiver: Receiver, webhook_url: None
) -> None:
    receiver.statuses.extend([503])
    _seeded, rotation_id, _ = waiting_rotation(stack)
    wait_until(lambda: len(receiver.about(rotation_id)) == 2, "the retried card")
    first, second = receiver.about(rotation_id)
    assert first["body"] == second["body"]
    approve(stack, rotation_id)
    assert wait_for(stack, rotation_id)["output"]["result"] == "rotated"


# -- a hub the topic refuses -----------------------------------------------------------------------


# The default topology's other topic: the hub holds no EventGrid Data Sender on it.
OPS_ALERTS = "https://ops-alerts.eastus-1.eventgrid.azure.net/api/events"


@pytest.fixture(scope="module")
def refused_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    settings = {**FAST_RETRIES, "ROTATION_NOTIFY_TOPIC_ENDPOINT": OPS_ALERTS}
    with LocalStack(Path(tmp_path_factory.mktemp("refused")), app_settings=settings, databases=()) as running:
        assert running.topic_endpoint("ops-alerts") == OPS_ALERTS
        quiet_expiry_scan(running)
        yield running


def test_a_hub_without_the_data_sender_role_is_refused_and_the_rotation_ends_as_it_would(
    refused_stack: LocalStack,
) -> None:
    stack = refused_stack
    _seeded, _, failed = failing_rotation(stack)
    rotation_id = str(failed["id"])
    assert all(u["result"] == "done" for u in failed["status"]["compensation"])
    assert stack.cloud is not None
    assert stack.cloud.admin.topic_events("ops-alerts") == []
    assert stack.cloud.admin.topic_events(NOTIFY_TOPIC) == []

    seeded_ok, approval_id, _ = waiting_rotation(stack)
    approve(stack, approval_id)
    ended = wait_for(stack, approval_id)
    assert ended["output"]["result"] == "rotated"
    assert stack.current_value_logs_in(seeded_ok.vault, seeded_ok.name)

    assert stack.host is not None
    log = stack.host.log_path.read_text(errors="replace")
    refused = [line for line in log.splitlines() if "not published to the Event Grid topic" in line]
    assert any(rotation_id in line for line in refused)
    assert sum(approval_id in line for line in refused) == 2
    assert all("ClientAuthenticationError (HTTP 401)" in line for line in refused)
    cloud_log = stack.cloud.log_file.read_text(errors="replace")
    assert (
        "ops-alerts.eastus-1.eventgrid.azure.net /api/events 401 identity=hub-rotation-identity" in cloud_log
    )
