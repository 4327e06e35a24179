"""Entra ID's token endpoint through azure-identity's ClientSecretCredential (MSAL underneath), unchanged.

The application's token then works against the local Key Vault like any other principal's, through
the role assignments that name the application. The sp-consumer site signs in the same way.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.web import WebSiteManagementClient

from local.cloud.process import LocalCloud
from tests.cloud.support import (
    APPS,
    GRAPH_SCOPE,
    SUB1,
    TENANT,
    UNOWNED_APP_EXPIRED_SECRET,
    VAULT1,
    VAULT2,
    credential,
    graph_call,
    graph_client,
    secret_client,
)
from tests.cloud.webhook import wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

OWNED_APP_ID, OWNED_OBJECT_ID, OWNED_SP_ID = APPS["owned-app"]
TOKEN_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
VAULT_SCOPE = "https://vault.azure.net/.default"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _token(client_id: str, secret: str, scope: str = VAULT_SCOPE, tenant: str = TENANT) -> str:
    """A token from a new credential each time, so nothing comes from MSAL's cache."""
    with ClientSecretCredential(tenant, client_id, secret) as app_credential:
        return app_credential.get_token(scope).token


def _refusal(client_id: str, secret: str, scope: str = VAULT_SCOPE, tenant: str = TENANT) -> str:
    with pytest.raises(ClientAuthenticationError) as refused:
        _token(client_id, secret, scope, tenant)
    return str(refused.value)


def _raw(data: dict[str, str], url: str = TOKEN_URL) -> requests.Response:
    return requests.post(url, data=data, timeout=10)


def _assert_entra_error(answer: requests.Response, status: int, error: str, code: int) -> None:
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    }
    assert body["error"] == error
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert body["error_codes"] == [code]


@pytest.fixture
def owner() -> Any:
    return graph_client("graph-owner")


@pytest.fixture
def new_password(cloud: LocalCloud, owner: Any) -> Iterator[dict[str, Any]]:
    """A password credential added to owned-app through Graph now (removed afterwards, if still there)."""
    answer = graph_call(
        owner, "POST", f"/applications/{OWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}
    )
    assert answer.status_code == 200
    added: dict[str, Any] = answer.json()
    yield added
    keys = [p["key_id"] for p in cloud.admin.application("owned-app")["password_credentials"]]
    if added["keyId"] in keys:
        cloud.admin.remove_application_password("owned-app", added["keyId"])


def test_the_seeded_secret_gets_a_token_with_the_application_claims(cloud: LocalCloud) -> None:
    initial = cloud.admin.initial_secret("owned-app")
    before = int(time.time())
    with ClientSecretCredential(TENANT, OWNED_APP_ID, initial["secret_text"]) as app_credential:
        access = app_credential.get_token(VAULT_SCOPE)
    claims = _claims(access.token)
    assert claims["aud"] == "https://vault.azure.net"
    assert (claims["appid"], claims["oid"], claims["sub"]) == (OWNED_APP_ID, OWNED_SP_ID, OWNED_SP_ID)
    assert (claims["tid"], claims["idtyp"]) == (TENANT, "app")
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert "roles" not in claims
    assert "xms_mirid" not in claims
    assert before + 3500 <= access.expires_on <= before + 3700
    log = cloud.log_file.read_text(encoding="utf-8")
    # What MSAL asks for: the tenant's OpenID configuration, then the token (no instance discovery).
    assert f"GET login.microsoftonline.com /{TENANT}/v2.0/.well-known/openid-configuration 200" in log
    assert f"POST login.microsoftonline.com /{TENANT}/oauth2/v2.0/token 200 identity=owned-app" in log


def test_a_new_secret_reads_its_vault_until_it_is_removed(
    cloud: LocalCloud, owner: Any, new_password: dict[str, Any]
) -> None:
    secret_client("officer").set_secret("for-the-application", "readable")
    with ClientSecretCredential(TENANT, OWNED_APP_ID, new_password["secretText"]) as app_credential:
        assert SecretClient(VAULT1, app_credential).get_secret("for-the-application").value == "readable"
        with pytest.raises(HttpResponseError) as denied:
            SecretClient(VAULT1, app_credential).set_secret("for-the-application", "written")
        assert denied.value.status_code == 403  # Secrets User: read only
        with pytest.raises(HttpResponseError) as other_vault:
            SecretClient(VAULT2, app_credential).get_secret("anything")
        assert other_vault.value.status_code == 403
    log = cloud.log_file.read_text(encoding="utf-8")
    assert "GET test1-kv.vault.azure.net /secrets/for-the-application/ 200 identity=owned-app" in log

    removed = graph_call(
        owner, "POST", f"/applications/{OWNED_OBJECT_ID}/removePassword", {"keyId": new_password["keyId"]}
    )
    assert removed.status_code == 204
    assert "AADSTS7000215" in _refusal(OWNED_APP_ID, new_password["secretText"])


def test_a_wrong_secret_is_refused_as_entra_does() -> None:
    assert "AADSTS7000215" in _refusal(OWNED_APP_ID, "not-the-secret")
    answer = _raw(
        {
            "client_id": OWNED_APP_ID,
            "client_secret": "not-the-secret",
            "scope": VAULT_SCOPE,
            "grant_type": "client_credentials",
        }
    )
    _assert_entra_error(answer, 401, "invalid_client", 7000215)
    assert (
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value"
        in (answer.json()["error_description"])
    )
    assert f"'{OWNED_APP_ID}'" in answer.json()["error_description"]


def test_an_expired_credential_is_refused() -> None:
    unowned_app_id = APPS["unowned-app"][0]
    assert "AADSTS7000222" in _refusal(unowned_app_id, UNOWNED_APP_EXPIRED_SECRET)
    answer = _raw(
        {
            "client_id": unowned_app_id,
            "client_secret": UNOWNED_APP_EXPIRED_SECRET,
            "scope": VAULT_SCOPE,
            "grant_type": "client_credentials",
        }
    )
    _assert_entra_error(answer, 401, "invalid_client", 7000222)


def test_an_unknown_client_and_an_unknown_tenant(cloud: LocalCloud) -> None:
    unknown_client = str(uuid.uuid4())
    assert "AADSTS700016" in _refusal(unknown_client, "whatever")
    answer = _raw(
        {
            "client_id": unknown_client,
            "client_secret": "x",
            "scope": VAULT_SCOPE,
            "grant_type": "client_credentials",
        }
    )
    _assert_entra_error(answer, 400, "unauthorized_client", 700016)

    unknown_tenant = str(uuid.uuid4())
    secret = cloud.admin.initial_secret("owned-app")["secret_text"]
    # MSAL stops at the tenant's OpenID configuration, which Entra refuses for an unknown tenant.
    assert "Unable to get authority configuration" in _refusal(OWNED_APP_ID, secret, tenant=unknown_tenant)
    discovery = requests.get(
        f"https://login.microsoftonline.com/{unknown_tenant}/v2.0/.well-known/openid-configuration",
        timeout=10,
    )
    _assert_entra_error(discovery, 400, "invalid_tenant", 90002)
    answer = _raw(
        {
            "client_id": OWNED_APP_ID,
            "client_secret": secret,
            "scope": VAULT_SCOPE,
            "grant_type": "client_credentials",
        },
        url=f"https://login.microsoftonline.com/{unknown_tenant}/oauth2/v2.0/token",
    )
    _assert_entra_error(answer, 400, "invalid_request", 90002)


def test_scopes_must_be_a_known_resource_with_default(cloud: LocalCloud) -> None:
    secret = cloud.admin.initial_secret("owned-app")["secret_text"]
    base = {"client_id": OWNED_APP_ID, "client_secret": secret, "grant_type": "client_credentials"}
    _assert_entra_error(
        _raw({**base, "scope": "https://vault.azure.net/user_impersonation"}), 400, "invalid_scope", 1002012
    )
    _assert_entra_error(
        _raw({**base, "scope": "https://example.org/.default"}), 400, "invalid_resource", 500011
    )
    ok = _raw({**base, "scope": GRAPH_SCOPE})
    assert ok.status_code == 200
    assert set(ok.json()) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert ok.json()["token_type"] == "Bearer"
    assert _claims(ok.json()["access_token"])["aud"] == "https://graph.microsoft.com"
    v1 = _raw({**base, "resource": "https://vault.azure.net"}, url=TOKEN_URL.replace("/v2.0/token", "/token"))
    assert v1.status_code == 200
    assert v1.json()["resource"] == "https://vault.azure.net"
    assert _claims(v1.json()["access_token"])["aud"] == "https://vault.azure.net"
    # The application has no Graph permission: its Graph token carries no roles and Graph says no.
    assert "roles" not in _claims(ok.json()["access_token"])
    denied = requests.get(
        f"https://graph.microsoft.com/v1.0/applications/{OWNED_OBJECT_ID}",
        headers={"Authorization": f"Bearer {ok.json()['access_token']}"},
        timeout=10,
    )
    assert denied.status_code == 403


def test_a_new_credential_is_refused_until_it_has_propagated(cloud: LocalCloud, owner: Any) -> None:
    cloud.admin.set_entra(propagation_delay_seconds=3)
    added_keys: list[str] = []
    try:
        answer = graph_call(
            owner, "POST", f"/applications/{OWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}
        )
        added = time.monotonic()
        added_keys.append(answer.json()["keyId"])
        secret = answer.json()["secretText"]
        refusals = [_refusal(OWNED_APP_ID, secret)]

        def accepted() -> bool:
            try:
                _token(OWNED_APP_ID, secret)
            except ClientAuthenticationError as exc:
                refusals.append(str(exc))
                return False
            return True

        wait_for(accepted, timeout=15, interval=0.25)
        assert 2.5 <= time.monotonic() - added <= 10
        assert all("AADSTS7000215" in refusal for refusal in refusals)
        # Credentials seeded through the admin API count as long replicated.
        seeded = cloud.admin.add_application_password("owned-app", display_name="seeded", end=30)
        added_keys.append(seeded["key_id"])
        assert _token(OWNED_APP_ID, seeded["secret_text"])
    finally:
        cloud.admin.set_entra(propagation_delay_seconds=0)
        for key_id in added_keys:
            cloud.admin.remove_application_password("owned-app", key_id)
    assert cloud.admin.entra() == {"propagation_delay_seconds": 0.0}


def test_token_endpoint_faults_are_retried_by_the_credential(cloud: LocalCloud) -> None:
    secret = cloud.admin.initial_secret("owned-app")["secret_text"]
    cloud.admin.inject_fault(target="entra", operation="get_token", kind="unavailable")
    assert _token(OWNED_APP_ID, secret)
    cloud.admin.inject_fault(target="entra", operation="get_token", kind="throttle", retry_after_seconds=1)
    started = time.monotonic()
    assert _token(OWNED_APP_ID, secret)
    assert time.monotonic() - started >= 1.0
    assert cloud.admin.faults() == []


def test_application_state_survives_a_restart(
    cloud: LocalCloud, owner: Any, new_password: dict[str, Any]
) -> None:
    initial = cloud.admin.initial_secret("owned-app")
    before = cloud.admin.application("owned-app")
    cloud.restart()
    assert cloud.admin.application("owned-app") == before
    assert cloud.admin.initial_secret("owned-app") == initial
    assert _token(OWNED_APP_ID, new_password["secretText"])
    assert _token(OWNED_APP_ID, initial["secret_text"])
    keys = [
        p["keyId"]
        for p in graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}").json()["passwordCredentials"]
    ]
    assert new_password["keyId"] in keys
    assert cloud.info["applications"]["owned-app"] == {
        "app_id": OWNED_APP_ID,
        "object_id": OWNED_OBJECT_ID,
        "service_principal_id": OWNED_SP_ID,
    }


def test_the_log_has_no_secret_and_no_token(cloud: LocalCloud, new_password: dict[str, Any]) -> None:
    token = _token(OWNED_APP_ID, new_password["secretText"])
    _refusal(OWNED_APP_ID, new_password["secretText"] + "x")
    log = cloud.log_file.read_text(encoding="utf-8")
    assert "oauth2/v2.0/token 401 identity=owned-app" in log
    for secret in (new_password["secretText"], cloud.admin.initial_secret("owned-app")["secret_text"]):
        assert secret not in log
    assert token.split(".")[2] not in log
    assert UNOWNED_APP_EXPIRED_SECRET not in log


# -- the sp-consumer site ---------------------------------------------------------------------


def _health(cloud: LocalCloud) -> tuple[int, dict[str, Any]]:
    url = cloud.admin.sites()["sp-consumer-app"]["url"]
    answer = requests.get(f"{url}/health", timeout=30, proxies={"http": ""})
    return answer.status_code, answer.json()


def test_the_sp_consumer_site_follows_its_application_secret(cloud: LocalCloud, owner: Any) -> None:
    web = WebSiteManagementClient(credential("site-operator"), SUB1)
    _, object_id, _ = APPS["consumer-client"]
    initial = cloud.admin.initial_secret("consumer-client")
    v1 = (
        secret_client("officer")
        .set_secret("consumer-client-secret", initial["secret_text"])
        .properties.version
    )
    try:
        web.web_apps.start("rg-test1", "sp-consumer-app")
        wait_for(lambda: _reachable(cloud), timeout=60)
        assert _health(cloud) == (200, {"ok": True, "version": v1})

        # Rotate through Graph as the hub will: add a password, then remove the previous one.
        added = graph_call(
            owner, "POST", f"/applications/{object_id}/addPassword", {"passwordCredential": {}}
        )
        assert added.status_code == 200
        removed = graph_call(
            owner, "POST", f"/applications/{object_id}/removePassword", {"keyId": initial["key_id"]}
        )
        assert removed.status_code == 204
        assert _health(cloud) == (503, {"ok": False, "version": v1, "error": "ClientAuthenticationError"})
        # ARM still says Running (the configured state); its front end passes the app's 503 on.
        assert web.web_apps.get("rg-test1", "sp-consumer-app").state == "Running"
        assert cloud.admin.sites()["sp-consumer-app"]["healthy"] is False

        # A restart alone does not help while the vault still holds the removed secret ...
        pid = cloud.admin.sites()["sp-consumer-app"]["pid"]
        web.web_apps.restart("rg-test1", "sp-consumer-app", synchronous=True)
        assert cloud.admin.sites()["sp-consumer-app"]["pid"] != pid
        wait_for(lambda: _reachable(cloud), timeout=60)
        assert _health(cloud)[0] == 503

        # ... the new secret in the vault and a restart do.
        v2 = (
            secret_client("officer")
            .set_secret("consumer-client-secret", added.json()["secretText"])
            .properties.version
        )
        web.web_apps.restart("rg-test1", "sp-consumer-app", synchronous=True)
        assert _health(cloud) == (200, {"ok": True, "version": v2})
    finally:
        web.web_apps.stop("rg-test1", "sp-consumer-app")
        cloud.admin.reset_application("consumer-client")


def _reachable(cloud: LocalCloud) -> bool:
    try:
        _health(cloud)
    except requests.ConnectionError:
        return False
    return True
