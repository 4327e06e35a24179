"""ARM's ``Microsoft.KeyVault/vaults`` GET, through the real KeyVaultManagementClient: what the hub
asks to learn which subscription a vault is really in (rotation/vault_location.py)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.keyvault import KeyVaultManagementClient

from local.cloud.process import LocalCloud
from tests.cloud.support import SUB1, SUB2, credential

pytestmark = pytest.mark.usefixtures("cloud_env")

TEST1_KV = f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.KeyVault/vaults/test1-kv"


def vaults(identity: str = "platform-admin", subscription: str = SUB1) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(credential(identity), subscription)


def test_a_reader_gets_the_vault_with_its_id_and_url() -> None:
    found = vaults().vaults.get("rg-test1", "test1-kv")  # platform-admin: Reader on SUB1
    assert found.id == TEST1_KV
    assert found.name == "test1-kv"
    assert found.type == "Microsoft.KeyVault/vaults"
    assert found.properties.vault_uri == "https://test1-kv.vault.azure.net/"
    assert found.properties.enable_rbac_authorization is True
    assert vaults().vaults.get("RG-TEST1", "Test1-KV").id == TEST1_KV  # ARM ignores case


def test_the_vault_is_found_only_where_it_is() -> None:
    with pytest.raises(ResourceNotFoundError) as elsewhere:
        vaults().vaults.get("rg-test1", "test2-kv")  # test2-kv lives in SUB2
    assert elsewhere.value.error is not None
    assert elsewhere.value.error.code == "ResourceNotFound"
    assert "Microsoft.KeyVault/vaults/test2-kv" in str(elsewhere.value)
    with pytest.raises(ResourceNotFoundError) as group:
        vaults().vaults.get("rg-test2", "test2-kv")
    assert group.value.error is not None
    assert group.value.error.code == "ResourceGroupNotFound"


def test_secrets_officer_alone_may_not_read_the_vault_and_learns_nothing() -> None:
    # officer: Key Vault Secrets Officer on test1-kv and test2-kv, no Reader.
    for client, group, name in (
        (vaults("officer"), "rg-test1", "test1-kv"),
        (vaults("officer", SUB2), "rg-test2", "test2-kv"),
        (vaults("officer"), "rg-test1", "no-such-kv"),
    ):
        with pytest.raises(HttpResponseError) as denied:
            client.vaults.get(group, name)
        assert denied.value.status_code == 403
        assert denied.value.error is not None
        assert denied.value.error.code == "AuthorizationFailed"
        assert "Microsoft.KeyVault/vaults/read" in str(denied.value)


def test_faults_apply_to_get_vault(cloud: LocalCloud) -> None:
    cloud.admin.inject_fault(kind="unavailable", target="test1-kv", operation="get_vault", count=1)
    client = KeyVaultManagementClient(credential("platform-admin"), SUB1, retry_total=0)
    with pytest.raises(HttpResponseError) as failed:
        client.vaults.get("rg-test1", "test1-kv")
    assert failed.value.status_code == 503
    assert client.vaults.get("rg-test1", "test1-kv").name == "test1-kv"
