"""Managed identity (App Service protocol) and RBAC, through the real credentials and clients."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import CredentialUnavailableError, DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from local.cloud.process import LocalCloud
from tests.cloud.support import CLIENT_IDS, PRINCIPAL_IDS, TENANT, VAULT1, VAULT2, credential, secret_client

pytestmark = pytest.mark.usefixtures("cloud_env")


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def test_managed_identity_token_names_the_identity_and_expires() -> None:
    before = int(time.time())
    token = credential("reader").get_token("https://vault.azure.net/.default")
    claims = _claims(token.token)
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["appid"] == CLIENT_IDS["reader"]
    assert claims["oid"] == PRINCIPAL_IDS["reader"]
    assert claims["tid"] == TENANT
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert before + 3500 <= token.expires_on <= before + 3700  # the topology's 1 h lifetime


def test_default_azure_credential_uses_azure_client_id(cloud: LocalCloud) -> None:
    assert cloud.client_env["AZURE_CLIENT_ID"] == CLIENT_IDS["officer"]
    client = SecretClient(VAULT1, DefaultAzureCredential())
    client.set_secret("via-default-credential", "ok")
    assert client.get_secret("via-default-credential").value == "ok"
    token = DefaultAzureCredential().get_token("https://management.azure.com/.default")
    assert _claims(token.token)["appid"] == CLIENT_IDS["officer"]
    assert _claims(token.token)["aud"] == "https://management.azure.com"


def test_unknown_client_id_is_unavailable() -> None:
    unknown = ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000001")
    with pytest.raises(CredentialUnavailableError) as refused:
        unknown.get_token("https://vault.azure.net/.default")
    assert "No User Assigned or Delegated Managed Identity found" in str(refused.value)


def test_wrong_identity_header_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(CredentialUnavailableError) as refused:
        ManagedIdentityCredential(client_id=CLIENT_IDS["officer"]).get_token(
            "https://vault.azure.net/.default"
        )
    assert "401" in str(refused.value)


def test_identity_endpoint_answers_app_service_error_shapes(cloud: LocalCloud) -> None:
    endpoint = cloud.client_env["IDENTITY_ENDPOINT"]
    header = {"X-IDENTITY-HEADER": cloud.client_env["IDENTITY_HEADER"]}
    base = {"api-version": "2019-08-01", "client_id": CLIENT_IDS["officer"]}
    missing = requests.get(endpoint, params={**base, "resource": "https://vault.azure.net"}, timeout=5)
    assert missing.status_code == 400
    assert set(missing.json()) == {"statusCode", "message", "correlationId"}
    unknown = requests.get(
        endpoint, params={**base, "resource": "https://example.org"}, headers=header, timeout=5
    )
    assert unknown.status_code == 400
    assert "AADSTS500011" in unknown.json()["message"]
    ok = requests.get(
        endpoint, params={**base, "resource": "https://vault.azure.net"}, headers=header, timeout=5
    )
    assert ok.status_code == 200
    assert set(ok.json()) >= {"access_token", "expires_on", "resource", "token_type"}
    by_object_id = requests.get(
        endpoint,
        params={
            "api-version": "2019-08-01",
            "resource": "https://vault.azure.net",
            "object_id": PRINCIPAL_IDS["reader"],
        },
        headers=header,
        timeout=5,
    )
    assert _claims(by_object_id.json()["access_token"])["appid"] == CLIENT_IDS["reader"]


def test_secrets_officer_may_do_everything_on_its_vault() -> None:
    client = secret_client("officer")
    client.set_secret("officer-secret", "v")
    client.update_secret_properties("officer-secret", tags={"a": "b"})
    client.backup_secret("officer-secret")
    client.begin_delete_secret("officer-secret").wait(timeout=10)
    client.purge_deleted_secret("officer-secret")


def test_secrets_user_reads_but_may_not_write() -> None:
    secret_client("officer").set_secret("shared", "readable")
    reader = secret_client("reader")
    assert reader.get_secret("shared").value == "readable"
    assert "shared" in [p.name for p in reader.list_properties_of_secrets()]
    for attempt in (
        lambda: reader.set_secret("shared", "overwritten"),
        lambda: reader.update_secret_properties("shared", enabled=False),
        lambda: reader.begin_delete_secret("shared"),
        lambda: reader.backup_secret("shared"),
    ):
        with pytest.raises(HttpResponseError) as denied:
            attempt()
        assert denied.value.status_code == 403
        assert denied.value.error is not None
        assert denied.value.error.code == "Forbidden"
        assert "ForbiddenByRbac" in str(denied.value)
    assert secret_client("officer").get_secret("shared").value == "readable"
    assert secret_client("officer").get_secret("shared").properties.enabled is True


def test_denial_names_the_caller_and_the_action() -> None:
    with pytest.raises(HttpResponseError) as denied:
        secret_client("reader").set_secret("shared-2", "x")
    message = str(denied.value)
    assert f"appid={CLIENT_IDS['reader']};oid={PRINCIPAL_IDS['reader']}" in message
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action'" in message


def test_reader_has_no_role_on_the_other_vault_and_outsider_has_none_at_all() -> None:
    for identity, vault in (("reader", VAULT2), ("outsider", VAULT1)):
        with pytest.raises(HttpResponseError) as denied:
            secret_client(identity, vault_url=vault).get_secret("anything")
        assert denied.value.status_code == 403
        assert "ForbiddenByRbac" in str(denied.value)


def test_role_on_the_resource_group_covers_its_vaults_only() -> None:
    group_officer = secret_client("group-officer")
    group_officer.set_secret("from-group-role", "inherited")
    assert group_officer.get_secret("from-group-role").value == "inherited"
    with pytest.raises(HttpResponseError) as denied:
        secret_client("group-officer", vault_url=VAULT2).set_secret("x", "y")
    assert denied.value.status_code == 403
