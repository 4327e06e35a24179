"""The incident's domain pieces: what is in scope, the concurrency keys and bounds, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from orchestrators.incident import MAX_VAULTS_SHOWN, vaults_shown
from orchestrators.saga import StepError
from rotation import metadata
from rotation.errors import InvalidRequest, NotFound, TransientError, retry_after_header, retry_after_of
from rotation.incidents import IncidentItem, IncidentScope, Slots, next_to_start, select, server_of
from rotation.model import VaultId
from rotation.settings import Settings, SettingsError
from rotation.vault import VersionInfo

SUB = "11111111-2222-3333-4444-555555555555"
VAULT = VaultId(SUB, "rg", "spoke-kv")
PG = {
    metadata.TARGET: "postgresql-login",
    metadata.PROVIDER: "db1.example.com:5432/orders",
    metadata.CREDENTIAL: "orders_app",
}


def info(name: str, tags: dict[str, str], *, enabled: bool = True, version: str = "") -> VersionInfo:
    return VersionInfo(
        name=name, version=version, enabled=enabled, expires_on=None, created_on=None, tags=tags
    )


def current_of(listed: list[VersionInfo]) -> dict[str, VersionInfo]:
    return {i.name: info(i.name, dict(i.tags), version=f"{abs(hash(i.name)):032x}"[:32]) for i in listed}


def test_the_scope_holds_tagged_valid_secrets_and_names_the_invalid_ones() -> None:
    listed = [
        info("orders-db", PG),
        info("orders-db-pending", PG),  # a companion: never in scope
        info("untagged", {}),
        info("broken", {metadata.TARGET: "postgresql-login"}),  # lacks provider and credential
        info("disabled", PG, enabled=False),
        info("gone", PG),
    ]
    current = current_of(listed)

    def read(name: str) -> VersionInfo:
        if name == "gone":
            raise NotFound("secret 'gone' in vault 'spoke-kv': not found")
        return current[name]

    found = select(VAULT, listed, IncidentScope(vaults=(VAULT.arm_id,)), read)
    assert [(i.secret_name, i.version, i.server) for i in found.items] == [
        ("orders-db", current["orders-db"].version, "db1.example.com:5432")
    ]
    assert {e.secret_name: e.reason for e in found.excluded} == {
        "broken": "secret 'broken' is tagged rotation-target but lacks rotation-provider, rotation-credential",
        "disabled": "the current version is disabled",
        "gone": "secret 'gone' in vault 'spoke-kv': not found",
    }


def test_the_filters_narrow_the_scope_by_tag_kind_and_server() -> None:
    listed = [
        info("a", {**PG, "team": "orders"}),
        info("b", {**PG, "team": "billing"}),
        info("c", {**PG, metadata.PROVIDER: "db2.example.com:5432/x", "team": "orders"}),
    ]
    current = current_of(listed)
    by_tag = select(VAULT, listed, IncidentScope((VAULT.arm_id,), tags=("team=orders",)), current.__getitem__)
    assert [i.secret_name for i in by_tag.items] == ["a", "c"]
    by_server = select(
        VAULT, listed, IncidentScope((VAULT.arm_id,), servers=("db2.example.com:5432",)), current.__getitem__
    )
    assert [i.secret_name for i in by_server.items] == ["c"]
    by_kind = select(
        VAULT, listed, IncidentScope((VAULT.arm_id,), target_kinds=("mysql-login",)), current.__getitem__
    )
    assert by_kind.items == ()
    with pytest.raises(InvalidRequest, match="must be name=value"):
        select(VAULT, listed, IncidentScope((VAULT.arm_id,), tags=("team",)), current.__getitem__)


def test_the_server_is_host_and_port_an_arm_id_or_the_kind() -> None:
    assert server_of(PG) == "db1.example.com:5432"
    storage = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
    assert server_of({metadata.TARGET: "storage-account-key", metadata.PROVIDER: storage}) == storage.lower()
    assert server_of({metadata.TARGET: "entra-app-secret"}) == "entra-app-secret"


def test_next_to_start_fills_free_slots_in_order_within_both_bounds() -> None:
    def item(vault: str, name: str, server: str) -> IncidentItem:
        return IncidentItem(SUB, vault, name, "0" * 32, "postgresql-login", server)

    queue = [item("v1", "a", "s1"), item("v1", "b", "s1"), item("v1", "c", "s2"), item("v2", "d", "s2")]
    slots = Slots(max_per_vault=2, max_per_server=1)
    started = next_to_start(queue, slots)
    assert [i.secret_name for i in started] == ["a", "c"]  # b waits for s1, d for s2
    assert [i.secret_name for i in queue] == ["b", "d"]
    slots.release(started[1])
    assert [i.secret_name for i in next_to_start(queue, slots)] == ["d"]


@pytest.mark.parametrize("raw", ["0", "51", "-1", "two", "1.5"])
def test_incident_bounds_out_of_range_are_refused_by_name(raw: str) -> None:
    with pytest.raises(SettingsError, match="ROTATION_INCIDENT_MAX_PER_VAULT"):
        Settings.from_environ({"ROTATION_INCIDENT_MAX_PER_VAULT": raw})


def test_incident_bounds_default_and_are_read() -> None:
    defaults = Settings.from_environ({})
    assert (defaults.incident_max_per_vault, defaults.incident_max_per_server) == (4, 2)
    read = Settings.from_environ(
        {"ROTATION_INCIDENT_MAX_PER_VAULT": "50", "ROTATION_INCIDENT_MAX_PER_SERVER": "1"}
    )
    assert (read.incident_max_per_vault, read.incident_max_per_server) == (50, 1)


def test_retry_after_headers_in_seconds_milliseconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_header({"Retry-After": "7"}) == 7
    assert retry_after_header({"retry-after-ms": "1500", "Retry-After": "7"}) == 1.5
    assert (
        retry_after_header(
            {"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)}, now=now
        )
        == 30
    )
    assert retry_after_header({"Retry-After": "soon"}) is None
    assert retry_after_header({"Retry-After": "0"}) is None
    assert retry_after_header(None) is None


def test_a_throttled_error_carries_its_retry_after_to_the_orchestrator() -> None:
    error = TransientError(
        "secret 'x' in vault 'v': Key Vault answered 429 Throttled", retry_after_seconds=12
    )
    assert str(error).endswith("[retry-after=12s]")
    assert retry_after_of(str(error)) == 12
    step = StepError.from_exception("stage", Exception(str(error)))
    assert (step.transient, step.retry_after_seconds) == (True, 12)
    assert retry_after_of("[retry-after=99999s]") == 3600
    assert StepError.from_exception("stage", TransientError("no header")).retry_after_seconds is None


def test_the_status_shows_at_most_fifty_vaults_the_busy_ones_first() -> None:
    idle = {"total": 1, "done": 1, "failed": 0, "skipped": 0, "running": 0, "waiting": 0}
    per_vault = {f"idle-{n:03}": dict(idle) for n in range(60)}
    per_vault["zz-failed"] = idle | {"failed": 1, "done": 0}
    per_vault["zz-running"] = idle | {"running": 1, "done": 0}
    shown, omitted = vaults_shown(per_vault)
    assert (len(shown), omitted) == (MAX_VAULTS_SHOWN, 12)
    assert {"zz-failed", "zz-running"} <= set(shown)
    assert vaults_shown({"a": idle}) == ({"a": idle}, 0)
