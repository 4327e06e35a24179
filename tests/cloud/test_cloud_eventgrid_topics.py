"""Event Grid custom topics of the local cloud, through the real EventGridPublisherClient.

The test topology has ``test-events`` (westeurope) and ``other-events`` (northeurope), both with
the CloudEvents 1.0 input schema; ``officer`` is EventGrid Data Sender on both, ``reader`` on
neither. What a topic accepted is read back through the admin API.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from local.cloud.process import LocalCloud
from tests.cloud.support import SUB1, credential

TEST_EVENTS = "https://test-events.westeurope-1.eventgrid.azure.net/api/events"
OTHER_EVENTS = "https://other-events.northeurope-1.eventgrid.azure.net/api/events"
TOPIC_ID = f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.EventGrid/topics/test-events"
BATCH = "application/cloudevents-batch+json; charset=utf-8"


def publisher(identity: str, endpoint: str = TEST_EVENTS) -> EventGridPublisherClient:
    return EventGridPublisherClient(endpoint, credential(identity), retry_total=0)


def an_event(**fields: Any) -> CloudEvent[dict[str, Any]]:
    return CloudEvent(
        source="/tests/cloud",
        type="Tests.Something",
        subject="/vaults/test1-kv/secrets/db",
        data={"n": 1, **fields},
        time=datetime(2026, 12, 3, 8, 0, tzinfo=UTC),
    )


def received(cloud: LocalCloud, topic: str = "test-events") -> list[dict[str, Any]]:
    return cloud.admin.topic_events(topic)


def post(body: Any, *, token: str | None, content_type: str = BATCH, **headers: str) -> requests.Response:
    all_headers = {"Content-Type": content_type, **headers}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(TEST_EVENTS + "?api-version=2018-01-01", data=data, headers=all_headers, timeout=10)


def eventgrid_token(identity: str = "officer") -> str:
    return credential(identity).get_token("https://eventgrid.azure.net/.default").token


@pytest.fixture(autouse=True)
def _empty_topics(cloud: LocalCloud, cloud_env: dict[str, str]) -> None:
    for name in ("test-events", "other-events"):
        cloud.admin.clear_topic_events(name)


def test_a_data_sender_publishes_cloud_events_and_the_topic_keeps_them(cloud: LocalCloud) -> None:
    first, second = an_event(n=1), an_event(n=2)
    publisher("officer").send([first, second])

    got = received(cloud)
    assert [r["event"]["id"] for r in got] == [first.id, second.id]
    event = got[0]["event"]
    assert event["specversion"] == "1.0"
    assert event["type"] == "Tests.Something"
    assert event["source"] == "/tests/cloud"
    assert event["subject"] == "/vaults/test1-kv/secrets/db"
    assert event["data"] == {"n": 1}
    assert datetime.fromisoformat(event["time"].replace("Z", "+00:00")) == datetime(
        2026, 12, 3, 8, 0, tzinfo=UTC
    )
    assert got[0]["identity"] == "officer"
    listing = cloud.admin.topics()
    assert listing["test-events"]["received"] == 2
    assert listing["test-events"]["arm_id"] == TOPIC_ID
    assert listing["test-events"]["endpoint"] == TEST_EVENTS


def test_a_topic_in_another_region_has_its_own_host_and_certificate(cloud: LocalCloud) -> None:
    publisher("officer", OTHER_EVENTS).send(an_event())
    assert len(received(cloud, "other-events")) == 1
    assert received(cloud) == []


def test_a_principal_without_the_data_sender_role_gets_azure_s_401(cloud: LocalCloud) -> None:
    with pytest.raises(ClientAuthenticationError) as refused:
        publisher("reader").send(an_event())
    assert refused.value.status_code == 401
    assert refused.value.error is not None
    assert refused.value.error.code == "Unauthorized"
    assert f"does not have permission to send data to {TOPIC_ID}" in str(refused.value)
    assert received(cloud) == []


@pytest.mark.parametrize(
    ("token", "headers", "expected"),
    [
        pytest.param(None, {}, "authorization header is missing", id="no-token"),
        pytest.param("not-a-jwt", {}, "is invalid", id="forged-token"),
        pytest.param("vault", {}, "expected 'https://eventgrid.azure.net'", id="token-for-key-vault"),
        pytest.param(
            None, {"aeg-sas-key": "c29tZS1rZXk="}, "local authentication is disabled", id="access-key"
        ),
    ],
)
def test_a_request_without_an_event_grid_token_gets_401(
    cloud: LocalCloud, token: str | None, headers: dict[str, str], expected: str
) -> None:
    if token == "vault":
        token = credential("officer").get_token("https://vault.azure.net/.default").token
    answer = post([an_event_dict()], token=token, **headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "Unauthorized"
    assert expected in answer.json()["error"]["message"]
    assert received(cloud) == []


def an_event_dict(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/tests/cloud",
        "type": "Tests.Something",
        "data": {"n": 1},
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param([an_event_dict(id=None)], BATCH, "'id'", id="no-id"),
        pytest.param([an_event_dict(source="")], BATCH, "'source'", id="empty-source"),
        pytest.param([an_event_dict(specversion="0.3")], BATCH, "specversion", id="cloudevents-0.3"),
        pytest.param([an_event_dict(time="yesterday")], BATCH, "'time'", id="bad-time"),
        pytest.param([an_event_dict(data_base64="AA==")], BATCH, "both", id="data-and-base64"),
        pytest.param([an_event_dict(Subject="x")], BATCH, "attribute name", id="upper-case-attribute"),
        pytest.param([], BATCH, "non-empty array", id="empty-batch"),
        pytest.param(b"[{", BATCH, "not valid JSON", id="not-json"),
        pytest.param(
            [{"id": "1", "subject": "s", "eventType": "t", "eventTime": "2026-12-03T08:00:00Z", "data": {}}],
            "application/json",
            "CloudEvents",
            id="event-grid-schema",
        ),
    ],
)
def test_malformed_cloud_events_get_400_and_nothing_is_kept(
    cloud: LocalCloud, body: Any, content_type: str, expected: str
) -> None:
    answer = post(body, token=eventgrid_token(), content_type=content_type)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["details"][0]["code"] == "InputJsonInvalid"
    assert expected in error["message"]
    assert received(cloud) == []


def test_one_bad_event_refuses_the_whole_batch(cloud: LocalCloud) -> None:
    answer = post([an_event_dict(), an_event_dict(type=None)], token=eventgrid_token())
    assert answer.status_code == 400
    assert received(cloud) == []


def test_a_body_over_one_megabyte_gets_413(cloud: LocalCloud) -> None:
    answer = post([an_event_dict(data={"pad": "x" * (1024 * 1024)})], token=eventgrid_token())
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "PayloadTooLarge"


def test_a_topic_the_topology_does_not_have_does_not_resolve(cloud: LocalCloud) -> None:
    with pytest.raises(ServiceRequestError):
        publisher("officer", "https://nope.westeurope-1.eventgrid.azure.net/api/events").send(an_event())


def test_only_post_to_api_events_is_served(cloud: LocalCloud) -> None:
    token = eventgrid_token()
    other_path = requests.post(
        TEST_EVENTS.replace("/api/events", "/api/other"),
        data=b"[]",
        headers={"Authorization": f"Bearer {token}", "Content-Type": BATCH},
        timeout=10,
    )
    assert other_path.status_code == 404
    get = requests.get(TEST_EVENTS, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert get.status_code == 405


def test_the_sdk_reports_a_refusal_as_an_http_error_with_the_status(cloud: LocalCloud) -> None:
    # What the hub logs about a refused publish: the class and the status.
    with pytest.raises(HttpResponseError) as refused:
        publisher("reader").send(an_event())
    assert type(refused.value).__name__ == "ClientAuthenticationError"
    assert refused.value.status_code == 401
