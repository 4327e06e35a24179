"""App Service through ARM: WebSiteManagementClient against sites that are real local processes."""

from __future__ import annotations

import os
import signal
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


@pytest.fixture
def running(cloud: LocalCloud) -> None:
    """Each test starts with the site running and healthy."""
    client = web()
    client.web_apps.start("rg-test1", "probe-app")
    wait_for(lambda: client.web_apps.get("rg-test1", "probe-app").state == "Running", timeout=20)


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
    client.web_apps.start("rg-test1", "probe-app")
    wait_for(lambda: client.web_apps.get("rg-test1", "probe-app").state == "Running", timeout=20)
    assert _probe(cloud)["pid"] != pid


@pytest.mark.usefixtures("running")
def test_synchronous_restart_replaces_the_process_and_returns_when_healthy(cloud: LocalCloud) -> None:
    before = _probe(cloud)["pid"]
    client = web()
    client.web_apps.restart("rg-test1", "probe-app", synchronous=True)
    assert client.web_apps.get("rg-test1", "probe-app").state == "Running"
    assert _probe(cloud)["pid"] != before
    assert cloud.admin.sites()["probe-app"]["restarts"] >= 1


@pytest.mark.usefixtures("running")
def test_a_failing_health_check_is_not_running(cloud: LocalCloud) -> None:
    unhealthy = Path(cloud.extra_env["PROBE_UNHEALTHY_FILE"])
    unhealthy.touch()
    try:
        assert web().web_apps.get("rg-test1", "probe-app").state == "Stopped"
        assert cloud.admin.sites()["probe-app"]["pid"] is not None  # alive, but not healthy
    finally:
        unhealthy.unlink()
    assert web().web_apps.get("rg-test1", "probe-app").state == "Running"


@pytest.mark.usefixtures("running")
def test_a_crashed_process_is_not_running(cloud: LocalCloud) -> None:
    os.kill(cloud.admin.sites()["probe-app"]["pid"], signal.SIGKILL)
    wait_for(lambda: web().web_apps.get("rg-test1", "probe-app").state == "Stopped", timeout=10)


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
