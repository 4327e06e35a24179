"""Storage accounts: ARM through StorageManagementClient, the blob endpoints through BlobServiceClient.

Both SDKs run unchanged against the real host names (management.azure.com,
``<account>.blob.core.windows.net``) through the proxy; the blob endpoints are Azurite, which checks
every Shared Key signature itself. The tests of this module share one cloud and run in order; the
last one checks that no key value ever reached a log.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import StorageAccountRegenerateKeyParameters
from azure.mgmt.web import WebSiteManagementClient
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from local.cloud import azurite
from local.cloud.certs import TlsFiles
from local.cloud.process import REPO_ROOT, LocalCloud
from local.cloud.topology import TopologyError, parse
from tests.cloud.support import SUB1, SUB2, TOPOLOGY, credential, secret_client
from tests.cloud.webhook import wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

ACCOUNT = "teststore01"
NO_SHARED_KEY = "nokeystore01"
OTHER = "otherstore01"  # in rg-test2 (subscription 2): nobody has a role on it
ACCOUNT_ID = (
    f"/subscriptions/{SUB1}/resourceGroups/rg-test1/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
)

# Every key value the tests saw, for the final check that none reached a log.
SEEN_KEYS: set[str] = set()


def mgmt(
    identity: str = "storage-operator", subscription: str = SUB1, **kwargs: Any
) -> StorageManagementClient:
    return StorageManagementClient(credential(identity), subscription, **kwargs)


def blob_service(account: str, key: str, **kwargs: Any) -> BlobServiceClient:
    return BlobServiceClient(
        f"https://{account}.blob.core.windows.net",
        credential={"account_name": account, "account_key": key},
        **kwargs,
    )


def connection_string(account: str, key: str) -> str:
    return f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};EndpointSuffix=core.windows.net"


def admin_keys(cloud: LocalCloud, account: str = ACCOUNT) -> dict[str, str]:
    keys = cloud.admin.storage_keys(account)
    SEEN_KEYS.update(keys.values())
    return keys


def listed_keys(
    client: StorageManagementClient, account: str = ACCOUNT, group: str = "rg-test1"
) -> dict[str, str]:
    result = client.storage_accounts.list_keys(group, account)
    keys = {str(k.key_name): str(k.value) for k in result.keys_property or []}
    SEEN_KEYS.update(keys.values())
    return keys


def azurite_info(cloud: LocalCloud) -> dict[str, Any]:
    info = cloud.admin.azurite()
    assert info is not None
    return info


def container_names(client: BlobServiceClient) -> list[str]:
    return [c.name for c in client.list_containers()]


@pytest.fixture
def orders(cloud: LocalCloud, cloud_env: dict[str, str]) -> None:
    """The container ``orders`` with ``hello.txt`` in teststore01."""
    with blob_service(ACCOUNT, admin_keys(cloud)["key1"]) as client:
        container = client.get_container_client("orders")
        if not container.exists():
            container.create_container()
        container.upload_blob("hello.txt", b"hello", overwrite=True)


# -- topology, installation (no cloud) ------------------------------------------------------------


def _topology_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(TOPOLOGY.read_text())
    return doc


ENV = {
    "WEBHOOK_URL": "http://127.0.0.1:1",
    "PYTHON": "python3",
    "PROBE_MARKER": "m",
    "PROBE_UNHEALTHY_FILE": "/x",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["subscriptions"][0]["resource_groups"][0]["storage_accounts"][0].update(
                name="Bad_Name"
            ),
            "not a valid storage account name",
        ),
        (
            lambda d: d["subscriptions"][1]["resource_groups"][0]["storage_accounts"][0].update(
                name="teststore01"
            ),
            "declared twice",
        ),
        (
            lambda d: d["subscriptions"][0]["resource_groups"][0]["storage_accounts"][0].update(
                allow_shared_key_access="yes"
            ),
            "must be true or false",
        ),
        (lambda d: d["role_assignments"][0].update(scope="storage:nosuchstore"), "unknown storage account"),
    ],
)
def test_invalid_storage_accounts_name_the_bad_entry(change: Any, message: str) -> None:
    doc = _topology_doc()
    change(doc)
    with pytest.raises(TopologyError, match=message):
        parse(doc, ENV)


def test_storage_scopes_resolve_to_arm_ids() -> None:
    topology = parse(_topology_doc(), ENV)
    assert topology.storage_accounts[ACCOUNT].arm_id == ACCOUNT_ID
    assert topology.storage_accounts[NO_SHARED_KEY].allow_shared_key_access is False
    assert any(a.scope == ACCOUNT_ID for a in topology.role_assignments)


def test_bootstrap_installs_the_version_the_cloud_looks_for(tmp_path: Path) -> None:
    bootstrap = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()
    assert f"azurite_version={azurite.AZURITE_VERSION}" in bootstrap
    assert azurite.azurite_package().name == "azurite"  # installed here by make setup
    with pytest.raises(azurite.AzuriteNotInstalled, match="run make setup"):
        azurite.azurite_package(tmp_path)
    command = azurite.blob_command("node", _tls(tmp_path), tmp_path, 1234)
    assert {"--disableTelemetry", "--skipApiVersionCheck", "--silent"} <= set(command)


def test_the_cloud_does_not_start_without_azurite_and_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, **ENV, "LOCAL_CLOUD_NODE_PREFIX": str(tmp_path / "no-node")}
    done = subprocess.run(
        [sys.executable, "-m", "local.cloud", "--topology", str(TOPOLOGY), "--data", str(tmp_path / "d")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"Azurite {azurite.AZURITE_VERSION}" in done.stderr
    assert "run make setup" in done.stderr
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(azurite.AzuriteNotInstalled, match=r"Node\.js"):
        azurite.node_binary()


def _tls(directory: Path) -> TlsFiles:
    return TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")


# -- ARM ------------------------------------------------------------------------------------------


def test_get_reports_the_account_its_blob_endpoint_and_shared_key_setting() -> None:
    account = mgmt().storage_accounts.get_properties("rg-test1", ACCOUNT)
    assert account.id == ACCOUNT_ID
    assert account.name == ACCOUNT
    assert account.type == "Microsoft.Storage/storageAccounts"
    assert account.location == "westeurope"
    assert account.kind == "StorageV2"
    assert account.properties is not None
    assert account.properties.allow_shared_key_access is True
    assert account.properties.primary_endpoints is not None
    assert account.properties.primary_endpoints.blob == f"https://{ACCOUNT}.blob.core.windows.net/"
    assert account.properties.provisioning_state == "Succeeded"
    assert account.properties.key_creation_time is not None
    assert account.properties.key_creation_time.key1 is not None
    legacy = mgmt().storage_accounts.get_properties("RG-TEST1", NO_SHARED_KEY.upper())  # ARM ignores case
    assert legacy.properties is not None
    assert legacy.properties.allow_shared_key_access is False


def test_list_keys_gives_both_keys_as_azure_makes_them(cloud: LocalCloud) -> None:
    result = mgmt().storage_accounts.list_keys("rg-test1", ACCOUNT)
    keys = result.keys_property or []
    assert [k.key_name for k in keys] == ["key1", "key2"]
    assert all(k.permissions == "FULL" for k in keys)
    assert all(isinstance(k.creation_time, dt.datetime) for k in keys)
    for key in keys:
        assert key.value is not None
        SEEN_KEYS.add(key.value)
        assert len(key.value) == 88
        assert len(base64.b64decode(key.value, validate=True)) == 64
    assert {str(k.key_name): k.value for k in keys} == admin_keys(cloud)


@pytest.mark.usefixtures("orders")
def test_both_keys_and_connection_strings_work_on_the_blob_endpoint(cloud: LocalCloud) -> None:
    keys = admin_keys(cloud)
    with blob_service(ACCOUNT, keys["key1"]) as client:
        assert "orders" in container_names(client)
    with blob_service(ACCOUNT, keys["key2"]) as client:
        assert "orders" in container_names(client)
    with BlobServiceClient.from_connection_string(connection_string(ACCOUNT, keys["key2"])) as client:
        assert client.url == f"https://{ACCOUNT}.blob.core.windows.net/"
        blob = client.get_blob_client("orders", "hello.txt")
        assert blob.download_blob().readall() == b"hello"
    assert azurite_info(cloud)["running"] is True


@pytest.mark.usefixtures("orders")
def test_regenerating_a_key_refuses_it_at_once_and_keeps_the_other(cloud: LocalCloud) -> None:
    before = admin_keys(cloud)
    old_key1_client = blob_service(ACCOUNT, before["key1"], retry_total=0)
    key2_client = blob_service(ACCOUNT, before["key2"])
    assert "orders" in container_names(old_key1_client)  # both clients hold pooled connections now
    assert "orders" in container_names(key2_client)
    starts = azurite_info(cloud)["starts"]

    started = time.monotonic()
    result = mgmt().storage_accounts.regenerate_key(
        "rg-test1", ACCOUNT, StorageAccountRegenerateKeyParameters(key_name="key1")
    )
    took = time.monotonic() - started
    after = {str(k.key_name): str(k.value) for k in result.keys_property or []}
    SEEN_KEYS.update(after.values())
    assert after["key1"] != before["key1"]
    assert after["key2"] == before["key2"]
    assert after == admin_keys(cloud) == listed_keys(mgmt())

    # Right after the answer: the old key1 is refused by Azurite as Azure refuses it ...
    with pytest.raises(ClientAuthenticationError) as refused:
        container_names(old_key1_client)
    assert refused.value.status_code == 403
    assert refused.value.error_code == "AuthenticationFailed"
    assert "The MAC signature found in the HTTP request" in str(refused.value)
    # ... key2 keeps working (its pooled connection to the old Azurite is gone: the SDK reconnects),
    # the new key1 works, and the data is still there.
    assert "orders" in container_names(key2_client)
    with blob_service(ACCOUNT, after["key1"]) as fresh:
        assert fresh.get_blob_client("orders", "hello.txt").download_blob().readall() == b"hello"
    info = azurite_info(cloud)
    assert info["starts"] == starts + 1
    assert info["last_restart_seconds"] < took < 15
    old_key1_client.close()
    key2_client.close()


@pytest.mark.usefixtures("orders")
def test_regenerate_key2_by_connection_string_and_an_unknown_key_name(cloud: LocalCloud) -> None:
    before = admin_keys(cloud)
    result = mgmt().storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": "key2"})
    after = {str(k.key_name): str(k.value) for k in result.keys_property or []}
    SEEN_KEYS.update(after.values())
    assert after["key1"] == before["key1"]
    assert after["key2"] != before["key2"]
    with (
        pytest.raises(ClientAuthenticationError),
        BlobServiceClient.from_connection_string(
            connection_string(ACCOUNT, before["key2"]), retry_total=0
        ) as old,
    ):
        container_names(old)
    with BlobServiceClient.from_connection_string(connection_string(ACCOUNT, after["key2"])) as new:
        assert "orders" in container_names(new)
    with pytest.raises(HttpResponseError) as bad:
        mgmt().storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": "key3"})
    assert bad.value.status_code == 400
    assert bad.value.error is not None
    assert bad.value.error.code == "InvalidValuesForRequestParameters"
    assert admin_keys(cloud) == after


def test_rbac_key_operator_lists_keys_but_needs_reader_for_the_account() -> None:
    key_operator = mgmt("key-operator")
    assert set(listed_keys(key_operator)) == {"key1", "key2"}
    with pytest.raises(HttpResponseError) as no_read:
        key_operator.storage_accounts.get_properties("rg-test1", ACCOUNT)
    assert no_read.value.status_code == 403
    assert no_read.value.error is not None
    assert no_read.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.Storage/storageAccounts/read' over scope" in str(no_read.value)

    reader = mgmt("reader")
    assert reader.storage_accounts.get_properties("rg-test1", ACCOUNT).name == ACCOUNT
    for call in (
        lambda: reader.storage_accounts.list_keys("rg-test1", ACCOUNT),
        lambda: reader.storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": "key1"}),
    ):
        with pytest.raises(HttpResponseError) as denied:
            call()
        assert denied.value.status_code == 403
        assert denied.value.error is not None
        assert denied.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.Storage/storageAccounts/regenerateKey/action'" in str(denied.value)
    assert f"over scope '{ACCOUNT_ID}'" in str(denied.value)


def test_rbac_no_role_means_403_even_for_an_account_that_does_not_exist() -> None:
    for client, group, name in (
        (mgmt("outsider"), "rg-test1", ACCOUNT),
        (mgmt("storage-operator", SUB2), "rg-test2", OTHER),
        (mgmt("storage-operator"), "rg-test1", "nosuchstore01"),
    ):
        for operation in (client.storage_accounts.get_properties, client.storage_accounts.list_keys):
            with pytest.raises(HttpResponseError) as denied:
                operation(group, name)
            assert denied.value.status_code == 403
            assert denied.value.error is not None
            assert denied.value.error.code == "AuthorizationFailed"


def test_unknown_account_and_group_are_not_found_for_a_caller_with_rights() -> None:
    admin = mgmt("platform-admin")  # Reader and Key Operator on all of subscription 1
    for call in (
        lambda: admin.storage_accounts.get_properties("rg-test1", "nosuchstore01"),
        lambda: admin.storage_accounts.list_keys("rg-test1", "nosuchstore01"),
        lambda: admin.storage_accounts.regenerate_key("rg-test1", "nosuchstore01", {"keyName": "key1"}),
    ):
        with pytest.raises(ResourceNotFoundError) as missing:
            call()
        assert missing.value.error is not None
        assert missing.value.error.code == "ResourceNotFound"
        assert "The Resource 'Microsoft.Storage/storageAccounts/nosuchstore01' under resource group" in str(
            missing.value
        )
    with pytest.raises(ResourceNotFoundError) as group:
        admin.storage_accounts.get_properties("rg-nowhere", ACCOUNT)
    assert group.value.error is not None
    assert group.value.error.code == "ResourceGroupNotFound"


@pytest.mark.usefixtures("orders")  # Azurite runs, so a regenerated key restarts it
def test_faults_are_retried_by_the_sdk(cloud: LocalCloud) -> None:
    client = mgmt()
    cloud.admin.inject_fault(kind="throttle", target=ACCOUNT, operation="list_keys", count=2)
    started = time.monotonic()
    assert set(listed_keys(client)) == {"key1", "key2"}
    assert time.monotonic() - started >= 2  # Retry-After: 1, twice
    assert cloud.admin.faults() == []

    cloud.admin.inject_fault(kind="unavailable", target=ACCOUNT, operation="get_storage_account", count=1)
    assert client.storage_accounts.get_properties("rg-test1", ACCOUNT).name == ACCOUNT

    # A throttled regenerateKey is retried (POST too, since Retry-After is sent) and happens once.
    before = admin_keys(cloud)
    starts = azurite_info(cloud)["starts"]
    cloud.admin.inject_fault(kind="throttle", target=ACCOUNT, operation="regenerate_key", count=1)
    result = client.storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": "key1"})
    after = {str(k.key_name): str(k.value) for k in result.keys_property or []}
    SEEN_KEYS.update(after.values())
    assert after["key1"] != before["key1"]
    assert after == admin_keys(cloud)
    assert azurite_info(cloud)["starts"] == starts + 1

    cloud.admin.inject_fault(kind="throttle", target=ACCOUNT, operation="*", count=5)
    with pytest.raises(HttpResponseError) as exhausted:
        mgmt(retry_total=1).storage_accounts.get_properties("rg-test1", ACCOUNT)
    assert exhausted.value.status_code == 429
    assert exhausted.value.response is not None
    assert exhausted.value.response.headers["Retry-After"] == "1"


@pytest.mark.usefixtures("orders")
def test_an_account_without_shared_key_access_refuses_keys_and_key_sas(cloud: LocalCloud) -> None:
    keys = listed_keys(mgmt(), NO_SHARED_KEY)  # the keys exist and can be listed, as in Azure
    assert keys == admin_keys(cloud, NO_SHARED_KEY)
    for client in (
        blob_service(NO_SHARED_KEY, keys["key1"]),
        BlobServiceClient.from_connection_string(connection_string(NO_SHARED_KEY, keys["key2"])),
    ):
        with pytest.raises(HttpResponseError) as refused, client:
            container_names(client)
        assert refused.value.status_code == 403
        assert refused.value.error_code == "KeyBasedAuthenticationNotPermitted"
        assert "Key based authentication is not permitted on this storage account." in str(refused.value)
    sas = generate_account_sas(
        NO_SHARED_KEY,
        keys["key1"],
        ResourceTypes(service=True),
        AccountSasPermissions(list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    with pytest.raises(HttpResponseError) as sas_refused:
        container_names(BlobServiceClient(f"https://{NO_SHARED_KEY}.blob.core.windows.net", credential=sas))
    assert sas_refused.value.status_code == 403
    assert sas_refused.value.error_code == "KeyBasedAuthenticationNotPermitted"
    # The same kind of SAS works on an account that allows Shared Key.
    ok_key = admin_keys(cloud)["key1"]
    ok_sas = generate_account_sas(
        ACCOUNT,
        ok_key,
        ResourceTypes(service=True),
        AccountSasPermissions(list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    assert "orders" in container_names(
        BlobServiceClient(f"https://{ACCOUNT}.blob.core.windows.net", credential=ok_sas)
    )


def test_blob_hosts_of_no_account_do_not_resolve_and_other_services_are_not_served(cloud: LocalCloud) -> None:
    with pytest.raises(ServiceRequestError):
        container_names(blob_service("nosuchstore01", base64.b64encode(b"k" * 64).decode(), retry_total=0))
    proxies = {"https": cloud.client_env["HTTPS_PROXY"]}
    for host, status in (
        ("nosuchstore01.blob.core.windows.net", "502"),
        (f"{ACCOUNT}.queue.core.windows.net", "403"),
    ):
        with pytest.raises(requests.exceptions.ProxyError, match=status):
            requests.get(f"https://{host}/", proxies=proxies, timeout=10)


def test_the_admin_api_lists_accounts_without_key_values(cloud: LocalCloud) -> None:
    accounts = cloud.admin.storage_accounts()
    assert set(accounts) == {ACCOUNT, NO_SHARED_KEY, OTHER}
    entry = accounts[ACCOUNT]
    assert entry["arm_id"] == ACCOUNT_ID
    assert entry["blob_endpoint"] == f"https://{ACCOUNT}.blob.core.windows.net/"
    assert entry["allow_shared_key_access"] is True
    assert [k["key_name"] for k in entry["keys"]] == ["key1", "key2"]
    assert accounts[NO_SHARED_KEY]["allow_shared_key_access"] is False
    listing = json.dumps(cloud.admin.call("GET", "/admin/storage/accounts"))
    for name in accounts:
        for value in admin_keys(cloud, name).values():
            assert value not in listing
    assert cloud.info["storage_accounts"][OTHER]["arm_id"].endswith(
        "/resourceGroups/rg-test2/providers/Microsoft.Storage/storageAccounts/otherstore01"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("orders")
def test_azurite_dies_with_a_killed_cloud_and_keys_and_blobs_survive(cloud: LocalCloud) -> None:
    keys = admin_keys(cloud)
    listed = listed_keys(mgmt())
    pid = azurite_info(cloud)["pid"]
    assert pid is not None
    cloud.kill()  # SIGKILL: Azurite gets SIGTERM from the kernel, saves its metadata and exits
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=15)
    cloud.restart()  # same ports: the clients' environment stays valid
    assert admin_keys(cloud) == keys
    assert listed_keys(mgmt()) == listed
    assert azurite_info(cloud)["running"] is False  # it starts on first use
    with blob_service(ACCOUNT, keys["key1"]) as client:
        assert client.get_blob_client("orders", "hello.txt").download_blob().readall() == b"hello"


# -- the blob-consumer site ---------------------------------------------------------------------


def _health(cloud: LocalCloud) -> tuple[int, dict[str, Any]]:
    url = cloud.admin.sites()["blob-consumer-app"]["url"]
    answer = requests.get(f"{url}/health", timeout=60, proxies={"http": ""})
    return answer.status_code, answer.json()


@pytest.fixture
def web_apps(cloud: LocalCloud) -> Iterator[Any]:
    client = WebSiteManagementClient(credential("site-operator"), SUB1)
    yield client.web_apps
    client.web_apps.stop("rg-test1", "blob-consumer-app")


def test_the_blob_consumer_site_follows_its_connection_string(cloud: LocalCloud, web_apps: Any) -> None:
    vault = secret_client("officer")
    keys = admin_keys(cloud)
    v1 = vault.set_secret(
        "teststore01-connection", connection_string(ACCOUNT, keys["key1"])
    ).properties.version
    web_apps.start("rg-test1", "blob-consumer-app")
    wait_for(lambda: _reachable(cloud), timeout=60)
    assert _health(cloud) == (200, {"ok": True, "version": v1})

    # The key its connection string holds is regenerated: its next health check is refused.
    mgmt().storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": "key1"})
    assert _health(cloud) == (503, {"ok": False, "version": v1, "error": "AuthenticationFailed"})
    # ARM still says Running (the configured state); the site is just not healthy.
    assert web_apps.get("rg-test1", "blob-consumer-app").state == "Running"
    assert cloud.admin.sites()["blob-consumer-app"]["healthy"] is False

    # A restart alone does not help while the vault still holds the old connection string ...
    pid = cloud.admin.sites()["blob-consumer-app"]["pid"]
    web_apps.restart("rg-test1", "blob-consumer-app")  # not synchronous: it would wait for health
    assert cloud.admin.sites()["blob-consumer-app"]["pid"] != pid
    wait_for(lambda: _reachable(cloud), timeout=60)
    assert _health(cloud)[0] == 503

    # ... a new version with the other key, then a restart, does.
    new = admin_keys(cloud)
    v2 = vault.set_secret(
        "teststore01-connection", connection_string(ACCOUNT, new["key2"])
    ).properties.version
    web_apps.restart("rg-test1", "blob-consumer-app", synchronous=True)
    assert _health(cloud) == (200, {"ok": True, "version": v2})
    with blob_service(ACCOUNT, new["key1"]) as client:
        assert "health" in container_names(client)  # the site created its container


def _reachable(cloud: LocalCloud) -> bool:
    try:
        _health(cloud)
    except requests.ConnectionError:
        return False
    return True


# -- last: the logs -----------------------------------------------------------------------------


@pytest.mark.usefixtures("orders")  # keys used on Azurite's requests too
def test_no_key_value_reaches_a_log(cloud: LocalCloud) -> None:
    # Every key value this process saw: the earlier tests' (when they ran in it), and enough of
    # its own that the check never rests on which tests ran before it (pytest-xdist may split them).
    for account in (ACCOUNT, NO_SHARED_KEY, OTHER):
        admin_keys(cloud, account)
    for key_name in ("key1", "key2"):
        regenerated = mgmt().storage_accounts.regenerate_key("rg-test1", ACCOUNT, {"keyName": key_name})
        SEEN_KEYS.update(str(k.value) for k in regenerated.keys_property or [])
    assert len(SEEN_KEYS) >= 8
    logs = [cloud.log_file, cloud.data_dir / "azurite.log", *sorted((cloud.data_dir / "sites").glob("*.log"))]
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in logs if p.exists())
    assert "azurite blob service listening" in text
    for value in SEEN_KEYS:
        assert value not in text
        assert value[:20] not in text
    assert not re.search(r"AccountKey=[A-Za-z0-9+/]{20}", text)
    key_file = cloud.data_dir / "storage-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
