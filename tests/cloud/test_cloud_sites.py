"""App Service through ARM: WebSiteManagementClient against sites that are real local processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.mgmt.web import WebSiteManagementClient

from local.cloud.process import LocalCloud
from tests.cloud.support import CLIENT_IDS, PRINCIPAL_IDS, SUB1, SUB2, credential, secret_client
from tests.cloud.webhook import wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

SITE_ID = f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.Web/sites/probe-app"


def web(identity: str = "site-operator", subscription: str = SUB1) -> WebSiteManagementClient:
    return WebSiteManagementClient(credential(identity), subscription)


def _probe(cloud: LocalCloud, query: str = "") -> dict[str, Any]:
    url = cloud.admin.sites()["probe-app"]["url"]
    answer: dict[str, Any] = requests.get(f"{url}/probe{query}", timeout=30, proxies={"http": ""}).json()
    return answer


def front_end(path: str, site: str = "probe-app") -> requests.Response:
    """A request to the site's default host name, through App Service's (local) front end."""
    return requests.get(f"https://{site}.azurewebsites.net{path}", timeout=30, allow_redirects=False)


def _healthy(site: str = "probe-app") -> bool:
    return front_end("/health", site).status_code == 200


@pytest.fixture
def running(cloud: LocalCloud) -> None:
    """Each test starts with the site running and healthy."""
    client = web()
    client.web_apps.start("rg-test1", "probe-app")
    wait_for(_healthy, timeout=20)


@pytest.mark.usefixtures("running")
def test_get_reports_a_running_site() -> None:
    site = web().web_apps.get("rg-test1", "probe-app")
    assert site.id == SITE_ID
    assert site.name == "probe-app"
    assert site.state == "Running"
    assert site.default_host_name == "probe-app.azurewebsites.net"
    assert site.type == "Microsoft.Web/sites"


@pytest.mark.usefixtures("running")
def test_stop_and_start_follow_the_process(cloud: LocalCloud) -> None:
    client = web()
    pid = cloud.admin.sites()["probe-app"]["pid"]
    client.web_apps.stop("rg-test1", "probe-app")
    assert client.web_apps.get("rg-test1", "probe-app").state == "Stopped"
    assert cloud.admin.sites()["probe-app"]["pid"] is None
    with pytest.raises(requests.ConnectionError):
        _probe(cloud)
    stopped = front_end("/health")
    assert stopped.status_code == 403
    assert "This web app is stopped" in stopped.text
    client.web_apps.start("rg-test1", "probe-app")
    # ARM reports the configured state at once, whether or not the app answers yet.
    assert client.web_apps.get("rg-test1", "probe-app").state == "Running"
    wait_for(_healthy, timeout=20)
    assert _probe(cloud)["pid"] != pid


@pytest.mark.usefixtures("running")
def test_synchronous_restart_replaces_the_process_and_returns_when_it_listens(cloud: LocalCloud) -> None:
    before = _probe(cloud)["pid"]
    client = web()
    client.web_apps.restart("rg-test1", "probe-app", synchronous=True)
    assert client.web_apps.get("rg-test1", "probe-app").state == "Running"
    assert _probe(cloud)["pid"] != before
    assert cloud.admin.sites()["probe-app"]["restarts"] >= 1


@pytest.mark.usefixtures("running")
def test_a_failing_health_check_shows_at_the_front_end_not_in_the_state(cloud: LocalCloud) -> None:
    unhealthy = Path(cloud.extra_env["PROBE_UNHEALTHY_FILE"])
    unhealthy.touch()
    try:
        # As in Azure: state is what the site is configured to be; the app's answer comes through.
        assert web().web_apps.get("rg-test1", "probe-app").state == "Running"
        assert front_end("/health").status_code == 500
        assert cloud.admin.sites()["probe-app"]["healthy"] is False
    finally:
        unhealthy.unlink()
    assert front_end("/health").status_code == 200
    assert cloud.admin.sites()["probe-app"]["healthy"] is True


@pytest.mark.usefixtures("running")
def test_a_crashed_process_answers_503_while_the_state_stays_running(cloud: LocalCloud) -> None:
    os.kill(cloud.admin.sites()["probe-app"]["pid"], signal.SIGKILL)
    wait_for(lambda: front_end("/health").status_code == 503, timeout=10)
    assert web().web_apps.get("rg-test1", "probe-app").state == "Running"
    assert "Service Unavailable" in front_end("/probe").text


@pytest.mark.usefixtures("running")
def test_the_front_end_forwards_method_path_query_and_the_app_s_answer() -> None:
    answer = front_end("/probe?x=1")
    assert answer.status_code == 200
    assert answer.json()["site_name"] == "probe-app"
    assert front_end("/no-such-path").status_code == 404  # the app's own 404


def test_the_front_end_answers_503_while_a_restarted_app_starts(cloud: LocalCloud) -> None:
    # slow-app listens a second after its start and its health check answers 503 for 3 seconds.
    client = web()
    client.web_apps.restart("rg-test1", "slow-app")
    assert client.web_apps.get("rg-test1", "slow-app").state == "Running"
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and 200 not in seen:
        seen.add(front_end("/health", "slow-app").status_code)
    assert seen == {503, 200}
    client.web_apps.stop("rg-test1", "slow-app")


def test_an_unknown_site_host_does_not_resolve() -> None:
    with pytest.raises(requests.exceptions.ProxyError):
        front_end("/", "no-such-site")


def test_get_configuration_carries_the_health_check_path() -> None:
    assert web().web_apps.get_configuration("rg-test1", "probe-app").health_check_path == "/health"
    assert web().web_apps.get_configuration("rg-test1", "plain-app").health_check_path is None
    # The site's own GET leaves it null, as Azure does: the configuration is where it is read.
    assert web().web_apps.get("rg-test1", "probe-app").site_config.health_check_path is None


@pytest.mark.usefixtures("running")
def test_the_site_gets_its_own_identity_and_environment(cloud: LocalCloud) -> None:
    secret_client("officer").set_secret("site-readable", "seen-by-the-site")
    report = _probe(cloud, "?secret=site-readable")
    assert report["client_id"] == CLIENT_IDS["site-identity"]
    assert report["marker"] == "marker-from-topology"  # ${PROBE_MARKER} resolved at start
    assert report["site_name"] == "probe-app"
    assert report["secret"] == {"value": "seen-by-the-site"}


@pytest.mark.usefixtures("running")
def test_the_site_cannot_borrow_another_identity(cloud: LocalCloud) -> None:
    site = cloud.admin.sites()["probe-app"]
    answer = requests.get(
        cloud.client_env["IDENTITY_ENDPOINT"],
        params={
            "api-version": "2019-08-01",
            "resource": "https://vault.azure.net",
            "client_id": CLIENT_IDS["officer"],
        },
        headers={"X-IDENTITY-HEADER": _site_identity_header(cloud, site["name"])},
        timeout=5,
    )
    assert answer.status_code == 400
    assert "No User Assigned or Delegated Managed Identity found" in answer.json()["message"]


def _site_identity_header(cloud: LocalCloud, name: str) -> str:
    # The header is in the site's own environment, as App Service puts it there.
    pid = cloud.admin.sites()[name]["pid"]
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")  # noqa: SIM115
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"IDENTITY_HEADER="))


def test_website_contributor_is_needed_to_restart() -> None:
    with pytest.raises(HttpResponseError) as denied:
        web("reader").web_apps.restart("rg-test1", "probe-app")
    assert denied.value.status_code == 403
    assert denied.value.error is not None
    assert denied.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Web/sites/restart/action" in str(denied.value)
    with pytest.raises(HttpResponseError) as read_denied:
        web("reader").web_apps.get("rg-test1", "probe-app")
    assert read_denied.value.status_code == 403


def test_default_azure_credential_reaches_arm(cloud: LocalCloud) -> None:
    # The client identity (officer) has no role on the site: ARM says so, after authenticating it.
    client = WebSiteManagementClient(DefaultAzureCredential(), SUB1)
    with pytest.raises(HttpResponseError) as denied:
        client.web_apps.get("rg-test1", "probe-app")
    assert denied.value.error is not None
    assert denied.value.error.code == "AuthorizationFailed"
    assert f"The client '{PRINCIPAL_IDS['officer']}'" in str(denied.value)


def test_unknown_site_and_resource_group_are_not_found_for_a_caller_with_rights() -> None:
    admin = web("platform-admin")  # Website Contributor on the whole subscription
    with pytest.raises(ResourceNotFoundError) as site:
        admin.web_apps.get("rg-test1", "no-such-app")
    assert site.value.error is not None
    assert site.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as group:
        admin.web_apps.restart("rg-nowhere", "probe-app")
    assert group.value.error is not None
    assert group.value.error.code == "ResourceGroupNotFound"
    assert admin.web_apps.get("RG-TEST1", "Probe-App").name == "probe-app"  # ARM ignores case


def test_without_rights_not_found_is_never_revealed() -> None:
    for client in (web("site-operator"), web("platform-admin", SUB2)):
        with pytest.raises(HttpResponseError) as denied:
            client.web_apps.get("rg-test1", "no-such-app")
        assert denied.value.status_code == 403
        assert denied.value.error is not None
        assert denied.value.error.code == "AuthorizationFailed"


def test_missing_api_version_and_missing_token_get_arm_errors(cloud: LocalCloud) -> None:
    url = f"https://management.azure.com{SITE_ID}"
    no_token = requests.get(url, params={"api-version": "2025-05-01"}, timeout=10)
    assert no_token.status_code == 401
    assert no_token.json()["error"]["code"] == "AuthenticationFailed"
    assert "WWW-Authenticate" in no_token.headers
    token = credential("site-operator").get_token("https://management.azure.com/.default").token
    no_version = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    vault_token = credential("site-operator").get_token("https://vault.azure.net/.default").token
    wrong_audience = WebSiteManagementClient(_Static(vault_token), SUB1)
    with pytest.raises(ClientAuthenticationError) as refused:
        wrong_audience.web_apps.get("rg-test1", "probe-app")
    assert refused.value.error is not None
    assert refused.value.error.code == "InvalidAuthenticationTokenAudience"


class _Static:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        import time

        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)
