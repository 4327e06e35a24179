"""Injected faults, seen and handled by the SDKs' own retry policies as they would be in Azure.

``raw_response_hook`` runs after azure-core's RetryPolicy for every attempt, so it shows each
response the client saw: the 429s and 503s, then the success.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.mgmt.web import WebSiteManagementClient

from local.cloud.process import LocalCloud, LocalCloudError
from tests.cloud.support import SUB1, credential, secret_client
from tests.cloud.webhook import wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")


class Seen:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def __call__(self, response: Any) -> None:
        self.statuses.append(response.http_response.status_code)


@pytest.fixture(scope="module", autouse=True)
def seeded(cloud_env: dict[str, str]) -> None:
    secret_client().set_secret("faulty", "steady")


def test_throttled_get_is_retried_after_retry_after(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(
        target="test1-kv", operation="get_secret", kind="throttle", count=2, retry_after_seconds=1
    )
    seen = Seen()
    started = time.monotonic()
    assert secret_client().get_secret("faulty", raw_response_hook=seen).value == "steady"
    assert seen.statuses == [429, 429, 200]
    assert time.monotonic() - started >= 2.0  # the SDK waited Retry-After each time
    assert cloud.admin.faults() == []


def test_throttled_put_and_patch_are_retried_because_retry_after_is_sent(cloud: LocalCloud) -> None:
    client = secret_client()
    cloud.admin.inject_fault(
        target="test1-kv", operation="set_secret", kind="throttle", retry_after_seconds=1
    )
    seen = Seen()
    assert client.set_secret("faulty-write", "v", raw_response_hook=seen).value == "v"
    assert seen.statuses == [429, 200]
    cloud.admin.inject_fault(
        target="test1-kv", operation="update_secret", kind="throttle", retry_after_seconds=1
    )
    seen = Seen()
    client.update_secret_properties("faulty-write", tags={"k": "v"}, raw_response_hook=seen)
    assert seen.statuses == [429, 200]
    assert client.get_secret("faulty-write").properties.tags == {"k": "v"}


def test_unavailable_is_retried_with_backoff(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(target="test1-kv", operation="get_secret", kind="unavailable", count=2)
    seen = Seen()
    assert secret_client().get_secret("faulty", raw_response_hook=seen).value == "steady"
    assert seen.statuses == [503, 503, 200]


def test_throttling_beyond_the_retry_budget_surfaces_as_429(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(
        target="test1-kv", operation="get_secret", kind="throttle", count=5, retry_after_seconds=0
    )
    with pytest.raises(HttpResponseError) as throttled:
        secret_client(retry_total=1).get_secret("faulty")
    assert throttled.value.status_code == 429
    assert throttled.value.error is not None
    assert throttled.value.error.code == "Throttled"
    assert "VaultRequestTypeLimitReached" in str(throttled.value)


def test_a_dropped_connection_is_retried_for_a_get(cloud: LocalCloud) -> None:
    client = secret_client()
    client.get_secret("faulty")  # settle the challenge and token first
    cloud.admin.inject_fault(target="test1-kv", operation="get_secret", kind="drop")
    seen = Seen()
    assert client.get_secret("faulty", raw_response_hook=seen).value == "steady"
    assert seen.statuses == [200]  # the dropped attempt never produced a response
    assert cloud.admin.faults() == []


def test_a_dropped_connection_is_not_retried_for_a_post(cloud: LocalCloud) -> None:
    client = secret_client()
    client.get_secret("faulty")
    cloud.admin.inject_fault(target="test1-kv", operation="backup_secret", kind="drop", count=2)
    # urllib3 reports a reset tunnel as a proxy error; azure-core does not retry it for a POST.
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        client.backup_secret("faulty")
    assert [f["remaining"] for f in cloud.admin.faults()] == [1]  # exactly one attempt was made


def test_added_latency_is_felt_and_only_for_the_next_n_calls(cloud: LocalCloud) -> None:
    client = secret_client()
    client.get_secret("faulty")
    cloud.admin.inject_fault(
        target="test1-kv", operation="get_secret", kind="latency", latency_ms=400, count=1
    )
    started = time.monotonic()
    client.get_secret("faulty")
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    client.get_secret("faulty")
    assert time.monotonic() - started < 0.4


def test_faults_are_per_vault_and_per_operation(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(target="test2-kv", operation="get_secret", kind="unavailable", count=3)
    cloud.admin.inject_fault(target="test1-kv", operation="list_secrets", kind="unavailable", count=3)
    seen = Seen()
    secret_client().get_secret("faulty", raw_response_hook=seen)
    assert seen.statuses == [200]
    assert sorted(f["target"] for f in cloud.admin.faults()) == ["test1-kv", "test2-kv"]


def test_arm_restart_throttled_then_done(cloud: LocalCloud) -> None:
    client = WebSiteManagementClient(credential("site-operator"), SUB1)
    cloud.admin.inject_fault(target="probe-app", operation="restart", kind="throttle", retry_after_seconds=1)
    seen = Seen()
    client.web_apps.restart("rg-test1", "probe-app", raw_response_hook=seen)
    assert seen.statuses == [429, 200]
    wait_for(lambda: cloud.admin.sites()["probe-app"]["healthy"], timeout=20)


def test_arm_get_unavailable_then_done(cloud: LocalCloud) -> None:
    client = WebSiteManagementClient(credential("site-operator"), SUB1)
    cloud.admin.inject_fault(target="probe-app", operation="get_site", kind="unavailable")
    seen = Seen()
    assert client.web_apps.get("rg-test1", "probe-app", raw_response_hook=seen).name == "probe-app"
    assert seen.statuses == [503, 200]


def test_identity_endpoint_faults_are_retried_by_the_credential(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(target="identity", operation="get_token", kind="unavailable")
    token = credential("reader").get_token("https://vault.azure.net/.default")
    assert token.token
    assert cloud.admin.faults() == []


def test_a_bad_fault_spec_is_refused(cloud: LocalCloud) -> None:
    with pytest.raises(LocalCloudError):
        cloud.admin.inject_fault(kind="meteor")
    with pytest.raises(LocalCloudError):
        cloud.admin.inject_fault(kind="throttle", operation="fly")
