"""ARM's permissions API (``{scope}/providers/Microsoft.Authorization/permissions``) through the
real AuthorizationManagementClient, and the admin API that adds and removes role assignments:
what a caller may do follows the RBAC model the rest of the cloud enforces."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient

from local.cloud.process import LocalCloud, LocalCloudError
from tests.cloud.support import SUB1, VAULT1, credential, secret_client

pytestmark = pytest.mark.usefixtures("cloud_env")

GROUP = "rg-test1"
OFFICER_ROLE = {
    "actions": ["Microsoft.KeyVault/vaults/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read"],
    "notActions": [],
    "dataActions": ["Microsoft.KeyVault/vaults/secrets/*"],
    "notDataActions": [],
}


def authorization(identity: str, subscription: str = SUB1) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(credential(identity), subscription, api_version="2022-04-01")


def on_vault(identity: str, vault: str = "test1-kv", group: str = GROUP) -> list[dict[str, list[str]]]:
    listed = authorization(identity).permissions.list_for_resource(
        group, "Microsoft.KeyVault", "", "vaults", vault
    )
    return [
        {
            "actions": list(p.actions or []),
            "notActions": list(p.not_actions or []),
            "dataActions": list(p.data_actions or []),
            "notDataActions": list(p.not_data_actions or []),
        }
        for p in listed
    ]


def test_the_caller_gets_the_roles_it_holds_on_the_resource() -> None:
    assert on_vault("officer") == [OFFICER_ROLE]
    [reader] = on_vault("reader")
    assert reader["actions"] == []
    assert reader["dataActions"] == [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ]
    assert on_vault("outsider") == []


def test_an_assignment_on_the_resource_group_counts_on_the_resources_below_it() -> None:
    assert on_vault("group-officer") == [OFFICER_ROLE]
    listed = authorization("group-officer").permissions.list_for_resource_group(GROUP)
    assert [list(p.data_actions or []) for p in listed] == [OFFICER_ROLE["dataActions"]]
    assert list(authorization("officer").permissions.list_for_resource_group(GROUP)) == [], (
        "an assignment on a vault does not count on its resource group"
    )


def test_an_unknown_resource_group_or_subscription_is_404_and_no_token_401() -> None:
    with pytest.raises(ResourceNotFoundError) as missing_group:
        on_vault("officer", group="rg-nowhere")
    assert missing_group.value.error is not None
    assert missing_group.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as missing_subscription:
        list(
            authorization(
                "officer", "0badc0de-0000-4000-8000-000000000000"
            ).permissions.list_for_resource_group(GROUP)
        )
    assert missing_subscription.value.error is not None
    assert missing_subscription.value.error.code == "SubscriptionNotFound"
    # Without a token (requests reaches management.azure.com through the cloud's proxy and CA).
    anonymous = requests.get(
        f"https://management.azure.com/subscriptions/{SUB1}/resourceGroups/{GROUP}"
        "/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
        timeout=10,
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "AuthenticationFailed"


def test_a_throttled_permissions_call_is_answered_429_and_retried(cloud: LocalCloud) -> None:
    fault = cloud.admin.inject_fault(
        kind="throttle", target="test1-kv", operation="list_permissions", count=1
    )
    assert on_vault("officer") == [OFFICER_ROLE]
    assert all(f["id"] != fault["id"] for f in cloud.admin.faults()), "the fault was used"


def test_removing_and_adding_a_role_assignment_changes_what_the_caller_may_do(cloud: LocalCloud) -> None:
    client: SecretClient = secret_client("reader", VAULT1)
    secret_client("officer", VAULT1).set_secret("rbac-admin-probe", "value")
    assert client.get_secret("rbac-admin-probe").value == "value"
    before = cloud.admin.role_assignments()
    assert {"principal": "reader", "role": "Key Vault Secrets User"}.items() <= next(
        a for a in before if a["principal"] == "reader"
    ).items()

    removed = cloud.admin.remove_role(
        identity="reader", role="Key Vault Secrets User", scope="vault:test1-kv"
    )
    try:
        assert removed["scope"].endswith("/vaults/test1-kv")
        assert on_vault("reader") == []
        with pytest.raises(HttpResponseError) as refused:
            client.get_secret("rbac-admin-probe")
        assert refused.value.status_code == 403
        with pytest.raises(LocalCloudError, match="404"):
            cloud.admin.remove_role(identity="reader", role="Key Vault Secrets User", scope="vault:test1-kv")
    finally:
        cloud.admin.assign_role(identity="reader", role="Key Vault Secrets User", scope="vault:test1-kv")
    assert client.get_secret("rbac-admin-probe").value == "value"
    assert sorted(map(str, cloud.admin.role_assignments())) == sorted(map(str, before))
    # Assigning it again changes nothing.
    cloud.admin.assign_role(identity="reader", role="Key Vault Secrets User", scope="vault:test1-kv")
    assert len(cloud.admin.role_assignments()) == len(before)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"identity": "nobody", "role": "Reader", "scope": "vault:test1-kv"}, "unknown identity"),
        ({"identity": "reader", "role": "Owner", "scope": "vault:test1-kv"}, "unknown role"),
        ({"identity": "reader", "role": "Reader", "scope": "vault:nowhere-kv"}, "unknown vault"),
        ({"role": "Reader", "scope": "vault:test1-kv"}, "exactly one of"),
    ],
)
def test_a_malformed_assignment_is_400_and_changes_nothing(
    cloud: LocalCloud, body: dict[str, str], says: str
) -> None:
    before = cloud.admin.role_assignments()
    with pytest.raises(LocalCloudError, match="400") as refused:
        cloud.admin.call("POST", "/admin/role-assignments", body)
    assert says in str(refused.value)
    assert cloud.admin.role_assignments() == before
