"""Every Key Vault secret operation through the real sync SecretClient, TLS verification on."""

from __future__ import annotations

import re
import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import ApiVersion, SecretClient

from tests.cloud.support import VAULT1, VAULT2, credential, secret_client

pytestmark = pytest.mark.usefixtures("cloud_env")

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_set_then_get_latest_and_a_version() -> None:
    client = secret_client()
    expires = int(time.time()) + 86400
    first = client.set_secret("db-password", "first", content_type="text/plain", tags={"owner": "team-a"})
    second = client.set_secret(
        "db-password", "second", not_before=None, expires_on=_dt(expires), tags={"owner": "team-b"}
    )

    assert HEX32.match(first.properties.version or "")
    assert HEX32.match(second.properties.version or "")
    assert first.properties.version != second.properties.version
    assert second.id == f"{VAULT1}/secrets/db-password/{second.properties.version}"
    latest = client.get_secret("db-password")
    assert latest.value == "second"
    assert latest.properties.version == second.properties.version
    assert latest.properties.expires_on is not None
    assert int(latest.properties.expires_on.timestamp()) == expires
    assert latest.properties.tags == {"owner": "team-b"}
    assert latest.properties.recovery_level == "Recoverable+Purgeable"
    assert latest.properties.recoverable_days == 90
    assert latest.properties.enabled is True
    assert latest.properties.created_on is not None
    assert latest.properties.updated_on is not None
    older = client.get_secret("db-password", first.properties.version)
    assert older.value == "first"
    assert older.properties.content_type == "text/plain"
    assert older.properties.tags == {"owner": "team-a"}


def test_names_are_case_insensitive_and_keep_their_first_spelling() -> None:
    client = secret_client()
    client.set_secret("MixedCase-Name", "v1")
    client.set_secret("mixedcase-name", "v2")
    got = client.get_secret("MIXEDCASE-NAME")
    assert got.value == "v2"
    assert got.name == "MixedCase-Name"


def test_list_secrets_pages_with_maxresults_and_next_link() -> None:
    client = secret_client()
    for i in range(12):
        client.set_secret(f"paged-{i:02d}", f"value-{i}")
    pages = list(client.list_properties_of_secrets(max_page_size=5).by_page())
    names = [p.name for page in pages for p in page]
    assert [n for n in names if n and n.startswith("paged-")] == [f"paged-{i:02d}" for i in range(12)]
    assert all(len(list(page)) <= 5 for page in client.list_properties_of_secrets(max_page_size=5).by_page())
    assert len(names) == len(set(names))
    item = next(p for p in client.list_properties_of_secrets() if p.name == "paged-03")
    assert item.id == f"{VAULT1}/secrets/paged-03"  # list items carry no version
    assert item.version is None


def test_list_versions_pages_and_carries_versioned_ids() -> None:
    client = secret_client()
    made = [client.set_secret("versioned", f"v{i}").properties.version for i in range(7)]
    listed = [p.version for p in client.list_properties_of_secret_versions("versioned", max_page_size=3)]
    assert listed == made
    for props in client.list_properties_of_secret_versions("versioned"):
        assert props.id == f"{VAULT1}/secrets/versioned/{props.version}"


def test_update_properties_of_latest_and_of_a_version() -> None:
    client = secret_client()
    first = client.set_secret("updatable", "one")
    client.set_secret("updatable", "two")
    updated = client.update_secret_properties("updatable", content_type="application/json", tags={"k": "v"})
    assert updated.content_type == "application/json"
    assert updated.tags == {"k": "v"}
    assert client.get_secret("updatable").properties.tags == {"k": "v"}
    client.update_secret_properties("updatable", first.properties.version, enabled=False)
    assert client.get_secret("updatable").value == "two"  # the current version is untouched

    with pytest.raises(HttpResponseError) as denied:
        client.get_secret("updatable", first.properties.version)
    assert denied.value.status_code == 403
    assert denied.value.error is not None
    assert denied.value.error.code == "Forbidden"
    assert "SecretDisabled" in str(denied.value)

    client.update_secret_properties("updatable", first.properties.version, enabled=True)
    assert client.get_secret("updatable", first.properties.version).value == "one"


def test_disabled_latest_version_is_forbidden_for_get() -> None:
    client = secret_client()
    client.set_secret("disabled-latest", "x", enabled=False)
    with pytest.raises(HttpResponseError) as denied:
        client.get_secret("disabled-latest")
    assert denied.value.status_code == 403
    assert "Operation get is not allowed on a disabled secret" in str(denied.value)


def test_delete_recover_purge_and_the_deleted_name_conflict() -> None:
    client = secret_client()
    client.set_secret("to-delete", "bye")
    poller = client.begin_delete_secret("to-delete")
    deleted = poller.result()
    assert deleted.recovery_id == f"{VAULT1}/deletedsecrets/to-delete"
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date is not None
    poller.wait(timeout=10)
    assert poller.done()

    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("to-delete")
    assert missing.value.error is not None
    assert missing.value.error.code == "SecretNotFound"
    assert client.get_deleted_secret("to-delete").name == "to-delete"
    assert "to-delete" in [d.name for d in client.list_deleted_secrets()]

    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("to-delete", "again")
    assert conflict.value.status_code == 409
    assert "deleted but recoverable" in str(conflict.value)

    recovered = client.begin_recover_deleted_secret("to-delete").result()
    assert recovered.name == "to-delete"
    assert client.get_secret("to-delete").value == "bye"

    client.begin_delete_secret("to-delete").wait(timeout=10)
    client.purge_deleted_secret("to-delete")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("to-delete")
    assert client.set_secret("to-delete", "reborn").value == "reborn"


def test_backup_and_restore_bring_back_every_version() -> None:
    client = secret_client()
    versions = [client.set_secret("backed-up", f"v{i}").properties.version for i in range(3)]
    blob = client.backup_secret("backed-up")
    assert isinstance(blob, bytes)
    assert b"v0" not in blob
    with pytest.raises(ResourceExistsError):
        client.restore_secret_backup(blob)  # the name is in use
    client.begin_delete_secret("backed-up").wait(timeout=10)
    client.purge_deleted_secret("backed-up")

    restored = client.restore_secret_backup(blob)
    assert restored.name == "backed-up"
    assert restored.version == versions[-1]
    assert [p.version for p in client.list_properties_of_secret_versions("backed-up")] == versions
    assert client.get_secret("backed-up", versions[0]).value == "v0"


def test_purge_protection_forbids_purge_and_reports_its_recovery_level() -> None:
    client = secret_client(vault_url=VAULT2)
    made = client.set_secret("protected", "x")
    assert made.properties.recovery_level == "CustomizedRecoverable"
    assert made.properties.recoverable_days == 7
    client.begin_delete_secret("protected").wait(timeout=10)
    with pytest.raises(HttpResponseError) as refused:
        client.purge_deleted_secret("protected")
    assert refused.value.status_code == 403
    assert "purge protection is enabled" in str(refused.value)


def test_vaults_are_told_apart_by_host() -> None:
    secret_client(vault_url=VAULT1).set_secret("same-name", "in-vault-1")
    secret_client(vault_url=VAULT2).set_secret("same-name", "in-vault-2")
    assert secret_client(vault_url=VAULT1).get_secret("same-name").value == "in-vault-1"
    assert secret_client(vault_url=VAULT2).get_secret("same-name").value == "in-vault-2"


@pytest.mark.parametrize("api_version", [*ApiVersion, None])
def test_every_api_version_the_sdk_sends_is_accepted(api_version: ApiVersion | None) -> None:
    kwargs = {"api_version": api_version} if api_version else {}
    client = SecretClient(VAULT1, credential("officer"), **kwargs)
    name = f"api-{(api_version or 'default').replace('.', '-')}"
    client.set_secret(name, "ok")
    assert client.get_secret(name).value == "ok"


def test_a_value_of_exactly_25_kb_is_accepted() -> None:
    client = secret_client()
    assert len(client.set_secret("big", "x" * 25 * 1024).value or "") == 25 * 1024


def _dt(ts: int):  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC)
