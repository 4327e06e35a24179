"""restart_consumer's wait, against the local cloud's App Service: the real WebSiteManagementClient
restarts the site, and the real health request goes to https://<site>.azurewebsites.net through
the site's front end, which answers 503 while the app starts (issue 15, item 7).

ARM's ``state`` is the configured state: "Running" the moment the restart is accepted. The step
must wait for the app itself: its health check path answering 2xx, or without one, any answer
below 500 at ``/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.mgmt.web import WebSiteManagementClient

from local.cloud.process import LocalCloud
from rotation.consumers import restart_and_wait
from rotation.errors import TransientError
from rotation.model import ConsumerRestarted
from rotation.site_health import http_status
from tests.cloud.conftest import cloud, cloud_env, webhook  # noqa: F401 (fixtures)
from tests.cloud.support import SUB1, credential

pytestmark = pytest.mark.usefixtures("cloud_env")


def site_id(name: str) -> str:
    return f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.Web/sites/{name}"


def web(_subscription: str = SUB1) -> WebSiteManagementClient:
    return WebSiteManagementClient(credential("site-operator"), SUB1)


class RecordingProbe:
    """The real health request; each answer is kept, with the state ARM reported at that moment."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.answers: list[tuple[int | str, str]] = []

    def __call__(self, url: str, timeout: float) -> int | str:
        status = http_status(url, timeout)
        self.answers.append((status, str(web().web_apps.get("rg-test1", self.site).state)))
        return status


def _restart(
    name: str, timeout: float, probe: Callable[[str, float], int | str] = http_status
) -> ConsumerRestarted:
    return restart_and_wait(
        site_id(name),
        client_for=web,
        ready_timeout_seconds=timeout,
        sleep=lambda s: time.sleep(0.2),
        probe=probe,
    )


def test_the_step_waits_while_the_restarted_app_answers_503_then_returns() -> None:
    # slow-app listens a second after its start, and its health check answers 503 for 3 seconds.
    probe = RecordingProbe("slow-app")
    started = time.monotonic()
    result = _restart("slow-app", 30, probe)
    try:
        waited = time.monotonic() - started
        statuses = [status for status, _ in probe.answers]
        assert statuses[-1] == 200
        assert 503 in statuses[:-1]
        # Meanwhile ARM said Running all along: the old wait on state returned at once.
        assert {state for _, state in probe.answers} == {"Running"}
        assert waited >= 2.5
        assert result.ready_by == "GET https://slow-app.azurewebsites.net/health answered 200"
    finally:
        web().web_apps.stop("rg-test1", "slow-app")


def test_an_app_that_fails_to_start_fails_the_step_with_what_it_answered() -> None:
    probe = RecordingProbe("broken-app")
    with pytest.raises(TransientError) as failed:
        _restart("broken-app", 3, probe)
    message = str(failed.value)
    assert "app 'broken-app'" in message
    assert "did not pass its health check '/health' within 3s of its restart" in message
    assert "GET https://broken-app.azurewebsites.net/health answered 503" in message
    assert probe.answers
    assert {state for _, state in probe.answers} == {"Running"}
    web().web_apps.stop("rg-test1", "broken-app")


def test_an_unhealthy_app_fails_with_its_own_answer(cloud: LocalCloud) -> None:  # noqa: F811
    unhealthy = Path(cloud.extra_env["PROBE_UNHEALTHY_FILE"])
    unhealthy.touch()
    try:
        with pytest.raises(TransientError) as failed:
            _restart("probe-app", 3)
    finally:
        unhealthy.unlink()
    assert "GET https://probe-app.azurewebsites.net/health answered 500" in str(failed.value)


def test_the_happy_path_returns_once_the_health_check_passes() -> None:
    result = _restart("probe-app", 30)
    assert result.ready_by == "GET https://probe-app.azurewebsites.net/health answered 200"
    assert web().web_apps.get("rg-test1", "probe-app").state == "Running"


def test_without_a_health_check_path_any_answer_below_500_at_the_root_will_do() -> None:
    try:
        result = _restart("plain-app", 30)
        # site_app.py answers 404 at "/": the app serves, it just has no page there.
        assert result.ready_by == "GET https://plain-app.azurewebsites.net/ answered 404"
    finally:
        web().web_apps.stop("rg-test1", "plain-app")
