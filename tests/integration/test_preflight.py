"""The preflight (rotation/preflight.py) in this process against the local cloud and real
PostgreSQL and MariaDB servers: the real SecretClient, AuthorizationManagementClient (ARM's
permissions API), WebSiteManagementClient, StorageManagementClient, the hub's Graph client and
the database drivers, as the hub's identity.

Each broken secret is reported with the check that fails and why, and nothing changes: the
vault's versions and names, the login's stored password (PostgreSQL's SCRAM verifier, MariaDB's
hash), the storage account's keys and the application's credentials are exactly as before. No
value ever appears in a report. The sweep's early warning: only a secret whose window opens
within ``ROTATION_PREFLIGHT_AHEAD_DAYS`` is checked.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.databases.postgresql import PostgresCluster
from local.ports import free_port
from local.stack import CONSUMER_SITE, MYSQL, POSTGRESQL, STORAGE_ACCOUNT, LocalStack, Seeded
from rotation import metadata
from rotation.errors import NotFound
from rotation.model import VaultId
from rotation.preflight import SecretReport, VaultPreflight, run_many
from rotation.settings import Settings
from starters.sweep import preflight_upcoming

VAULT = "spoke1-kv"
HEALTHY_VAULT = "spoke2-kv"  # only healthy secrets are seeded here
HUB = "hub-rotation-identity"
SECRETS_OFFICER = "Key Vault Secrets Officer"
WEBSITE_CONTRIBUTOR = "Website Contributor"
CHECKS = ["tags", "vault-access", "target", "consumers"]

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")), with_host=False, databases=(POSTGRESQL, MYSQL)
    ) as running:
        assert running.cloud is not None
        # Only the tests decide what happens: no NearExpiry event is delivered anywhere.
        running.cloud.admin.set_eventgrid(scan_interval_seconds=86400)
        yield running


@pytest.fixture(autouse=True)
def roles_restored(stack: LocalStack) -> Iterator[None]:
    """Every test leaves the role assignments as it found them (some remove the hub's roles)."""
    assert stack.cloud is not None
    before = stack.cloud.admin.role_assignments()
    yield
    after = stack.cloud.admin.role_assignments()
    for extra in (a for a in after if a not in before):
        stack.cloud.admin.remove_role(
            identity=extra["principal"], role=extra["role_id"], scope=extra["scope"]
        )
    for missing in (a for a in before if a not in after):
        stack.cloud.admin.assign_role(
            identity=missing["principal"], role=missing["role_id"], scope=missing["scope"]
        )
    assert sorted(map(str, stack.cloud.admin.role_assignments())) == sorted(map(str, before))


def settings_for(stack: LocalStack, **extra: str) -> Settings:
    return Settings.from_environ({**os.environ, **stack.app_settings(), **extra})


def vault_id(stack: LocalStack, vault: str = VAULT) -> VaultId:
    return VaultId.parse(stack.vault_arm_id(vault))


def preflight(stack: LocalStack, name: str, vault: str = VAULT) -> SecretReport:
    return VaultPreflight(vault_id(stack, vault), settings_for(stack)).run(name)


def checks(report: SecretReport) -> dict[str, tuple[bool, str]]:
    found = {c.name: (c.ok, c.detail) for c in report.checks}
    assert list(found) == CHECKS
    return found


def failing(report: SecretReport) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


# -- what "nothing changed" means ------------------------------------------------------------------


def vault_state(stack: LocalStack, vault: str = VAULT) -> dict[str, list[tuple[str, bool, str]]]:
    """Every secret of the vault with every version: (version, enabled, tags): a write of any
    kind (a new version, a companion, a disabled or re-tagged version) changes it."""
    client = stack.secret_client(vault)
    state: dict[str, list[tuple[str, bool, str]]] = {}
    for secret in client.list_properties_of_secrets():
        name = str(secret.name)
        state[name] = sorted(
            (str(v.version), bool(v.enabled), json.dumps(v.tags or {}, sort_keys=True))
            for v in client.list_properties_of_secret_versions(name)
        )
    return state


def stored_password(stack: LocalStack, kind: str, login: str) -> str:
    """What the server stores for the login's password (a verifier or hash): any change of it,
    even to the same password, changes this."""
    server = stack.database(kind)
    if isinstance(server, PostgresCluster):
        return server.psql(
            "SELECT rolpassword FROM pg_authid WHERE rolname = :'login'", variables={"login": login}
        )
    return repr(server.execute("SELECT authentication_string FROM mysql.user WHERE User = %s", (login,)))


class Untouched:
    """Snapshot of everything a preflight could change, compared after it."""

    def __init__(self, stack: LocalStack, *logins: tuple[str, str]) -> None:
        assert stack.cloud is not None
        self.stack = stack
        self.logins = logins
        self.before = self._now()

    def _now(self) -> dict[str, Any]:
        assert self.stack.cloud is not None
        return {
            "vaults": {v: vault_state(self.stack, v) for v in (VAULT, HEALTHY_VAULT)},
            "logins": {f"{k}/{login}": stored_password(self.stack, k, login) for k, login in self.logins},
            "storage": {a: self.stack.storage_keys(a) for a in (STORAGE_ACCOUNT, "legacystore01")},
            "applications": {
                name: sorted(p["key_id"] for p in app["password_credentials"])
                for name, app in self.stack.cloud.admin.applications().items()
            },
            "sites": {name: site["restarts"] for name, site in self.stack.cloud.admin.sites().items()},
        }

    def check(self) -> None:
        after = self._now()
        for part, before in self.before.items():
            assert after[part] == before, f"the preflight changed {part}"


def assert_no_value(report: SecretReport, *values: str) -> None:
    text = json.dumps(report.to_dict())
    for value in values:
        assert value
        assert value not in text


def value_of(stack: LocalStack, name: str, vault: str = VAULT) -> str:
    return stack.secret_client(vault).get_secret(name).value or ""


def seed_login(stack: LocalStack, *, kind: str = POSTGRESQL, vault: str = VAULT, **kwargs: Any) -> Seeded:
    name = unique(f"pf-{kind.split('-')[0]}")
    return stack.seed_login_secret(vault, name, login=name.replace("-", "_"), kind=kind, **kwargs)


def seed_admin(stack: LocalStack, *, kind: str = POSTGRESQL, vault: str = VAULT) -> Seeded:
    return stack.seed_admin_secret(
        vault, unique("pf-admin"), login=unique("pfadm").replace("-", "_"), kind=kind
    )


def consumer_id(stack: LocalStack, site: str = CONSUMER_SITE) -> str:
    return str(stack.info["sites"][site]["arm_id"])


# -- a healthy vault ---------------------------------------------------------------------------------


def test_a_healthy_vault_reports_every_secret_ok_and_nothing_changes(stack: LocalStack) -> None:
    pg_self = seed_login(stack, vault=HEALTHY_VAULT, tags={metadata.CONSUMERS: consumer_id(stack)})
    pg_admin = seed_admin(stack, vault=HEALTHY_VAULT)
    pg_by_admin = seed_login(stack, vault=HEALTHY_VAULT, admin=f"secret:{pg_admin.name}")
    my_admin = seed_admin(stack, kind=MYSQL, vault=HEALTHY_VAULT)
    my_self = seed_login(stack, kind=MYSQL, vault=HEALTHY_VAULT)
    my_by_admin = seed_login(stack, kind=MYSQL, vault=HEALTHY_VAULT, admin=f"secret:{my_admin.name}")
    alternating, _ = stack.seed_alternating_secret(
        HEALTHY_VAULT,
        unique("pf-alt"),
        kind=POSTGRESQL,
        logins=(unique("pfa").replace("-", "_"), unique("pfb").replace("-", "_")),
        admin_secret=pg_admin.name,
    )
    app = stack.seed_app_secret(HEALTHY_VAULT, unique("pf-app"))
    store = stack.seed_storage_secret(HEALTHY_VAULT, unique("pf-store"), key_name="key2")
    logins = [(s.kind, s.login) for s in (pg_self, pg_by_admin, my_self, my_by_admin)]
    untouched = Untouched(stack, *logins)
    settings = settings_for(stack)
    checker = VaultPreflight(vault_id(stack, HEALTHY_VAULT), settings)

    names = checker.tagged_secrets()
    reports = asyncio.run(run_many(checker, names))

    expected = {pg_self, pg_by_admin, my_self, my_by_admin, alternating, app, store}
    assert {r.secret for r in reports} == {s.name for s in expected}, "admins carry no rotation-target"
    for report in reports:
        assert report.ok, report.to_dict()
        assert list(checks(report)) == CHECKS
    by_name = {r.secret: r for r in reports}
    assert by_name[pg_self.name].target == POSTGRESQL
    assert "the current value of" in checks(by_name[pg_self.name])["target"][1]
    assert f"the admin secret {pg_admin.name!r}" in checks(by_name[pg_by_admin.name])["target"][1]
    assert "may alternate" in checks(by_name[alternating.name])["target"][1]
    assert "the hub is an owner" in checks(by_name[app.name])["target"][1]
    assert "holds key2" in checks(by_name[store.name])["target"][1]
    assert "restart 1 app" in checks(by_name[pg_self.name])["consumers"][1]
    untouched.check()
    for seeded in expected:
        assert_no_value(by_name[seeded.name], value_of(stack, seeded.name, HEALTHY_VAULT))


# -- the vault -----------------------------------------------------------------------------------------


def test_a_hub_without_a_role_on_the_vault_is_reported_and_the_rest_not_checked(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed_login(stack)
    untouched = Untouched(stack, (seeded.kind, seeded.login))
    stack.cloud.admin.remove_role(identity=HUB, role=SECRETS_OFFICER, scope=f"vault:{VAULT}")

    report = preflight(stack, seeded.name)

    found = checks(report)
    assert not report.ok
    assert failing(report) == ["tags", "vault-access", "target", "consumers"]
    _ok, detail = found["vault-access"]
    assert "the hub cannot read the secret" in detail
    assert "403" in detail
    assert "do not allow Microsoft.KeyVault/vaults/secrets/getSecret/action" in detail
    assert "setSecret/action" in detail
    assert "Key Vault Secrets Officer" in detail
    assert found["tags"][1].startswith("not checked: the secret could not be read")
    assert found["target"][1].startswith("not checked")
    assert found["consumers"][1].startswith("not checked")
    assert report.target is None
    untouched.check()


def test_a_hub_that_may_read_but_not_write_is_reported_and_the_target_still_checked(
    stack: LocalStack,
) -> None:
    assert stack.cloud is not None
    seeded = seed_login(stack)
    stack.cloud.admin.remove_role(identity=HUB, role=SECRETS_OFFICER, scope=f"vault:{VAULT}")
    stack.cloud.admin.assign_role(identity=HUB, role="Key Vault Secrets User", scope=f"vault:{VAULT}")
    untouched = Untouched(stack, (seeded.kind, seeded.login))

    report = preflight(stack, seeded.name)

    found = checks(report)
    assert failing(report) == ["vault-access"]
    detail = found["vault-access"][1]
    assert "do not allow Microsoft.KeyVault/vaults/secrets/setSecret/action" in detail
    assert "getSecret" not in detail.split("do not allow")[1].split("(")[0]
    assert "logs in to change" in found["target"][1]
    untouched.check()


def test_a_companion_name_taken_by_an_unrelated_secret_is_reported(stack: LocalStack) -> None:
    seeded = seed_login(stack)
    stranger = stack.secret_client(VAULT).set_secret(
        f"{seeded.name}-pending", "someone else's value", tags={"owner": "another team"}
    )
    untouched = Untouched(stack, (seeded.kind, seeded.login))

    report = preflight(stack, seeded.name)

    assert failing(report) == ["vault-access"]
    detail = checks(report)["vault-access"][1]
    assert f"the companion name '{seeded.name}-pending' is taken" in detail
    assert f"rotation-of: {seeded.name}" in detail
    assert "someone else's value" not in json.dumps(report.to_dict())
    untouched.check()
    assert stack.secret_client(VAULT).get_secret(f"{seeded.name}-pending").properties.version == (
        stranger.properties.version
    )


def test_a_companion_this_secret_used_before_is_fine(stack: LocalStack) -> None:
    seeded = seed_login(stack)
    stack.secret_client(VAULT).set_secret(
        f"{seeded.name}-pending", "old pending", tags={metadata.PENDING_OF: seeded.name}, enabled=False
    )

    report = preflight(stack, seeded.name)

    assert report.ok, report.to_dict()
    assert "is free or this secret's" in checks(report)["vault-access"][1]


def test_an_unknown_secret_raises_not_found(stack: LocalStack) -> None:
    with pytest.raises(NotFound):
        preflight(stack, unique("pf-missing"))


# -- the tags ------------------------------------------------------------------------------------------


def test_invalid_tags_are_reported_naming_the_tag_and_the_target_is_not_checked(stack: LocalStack) -> None:
    seeded = seed_login(stack, tags={metadata.VALIDITY_DAYS: "soon"})
    untouched = Untouched(stack, (seeded.kind, seeded.login))

    report = preflight(stack, seeded.name)

    found = checks(report)
    assert failing(report) == ["tags", "target", "consumers"]
    assert "rotation-validity-days must be a number of days, got 'soon'" in found["tags"][1]
    assert found["target"][1] == "not checked: the tags do not parse"
    assert found["vault-access"][0], "the vault is checked all the same"
    assert report.target == POSTGRESQL, "the kind is named even when another tag is wrong"
    untouched.check()


# -- the target ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [POSTGRESQL, MYSQL])
def test_a_wrong_admin_password_is_reported_and_no_password_changes(stack: LocalStack, kind: str) -> None:
    admin = seed_admin(stack, kind=kind)
    seeded = seed_login(stack, kind=kind, admin=f"secret:{admin.name}")
    # The admin secret no longer holds the admin's password (changed by hand on the server).
    stack.secret_client(VAULT).set_secret(
        admin.name,
        "not-the-admin-password",
        tags={metadata.CREDENTIAL: admin.login, metadata.PROVIDER: stack.database(kind).provider()},
    )
    password = value_of(stack, seeded.name)
    untouched = Untouched(stack, (kind, seeded.login), (kind, admin.login))

    report = preflight(stack, seeded.name)

    assert failing(report) == ["target"]
    detail = checks(report)["target"][1]
    assert detail.startswith("refused: ")
    assert f"the admin secret {admin.name!r} is refused" in detail
    untouched.check()
    assert stack.logs_in(seeded, password), "the login's password is as before"
    assert_no_value(report, password, "not-the-admin-password")


@pytest.mark.parametrize("kind", [POSTGRESQL, MYSQL])
def test_a_current_value_that_no_longer_logs_in_is_reported(stack: LocalStack, kind: str) -> None:
    seeded = seed_login(stack, kind=kind)
    real = value_of(stack, seeded.name)
    stack.secret_client(VAULT).set_secret(
        seeded.name,
        "changed-by-hand",
        tags=stack.secret_client(VAULT).get_secret(seeded.name).properties.tags,
    )
    untouched = Untouched(stack, (kind, seeded.login))

    report = preflight(stack, seeded.name)

    assert failing(report) == ["target"]
    assert "the current value of" in checks(report)["target"][1]
    assert "is refused" in checks(report)["target"][1]
    untouched.check()
    assert stack.logs_in(seeded, real)
    assert_no_value(report, real, "changed-by-hand")


def test_an_unreachable_target_is_reported(stack: LocalStack) -> None:
    closed = free_port()  # nothing listens there
    seeded = seed_login(stack, tags={metadata.PROVIDER: f"127.0.0.1:{closed}/appdb"})
    untouched = Untouched(stack, (seeded.kind, seeded.login))

    report = preflight(stack, seeded.name)

    assert failing(report) == ["target"]
    detail = checks(report)["target"][1]
    assert detail.startswith("unreachable now: ")
    assert str(closed) in detail
    untouched.check()


def test_an_application_the_hub_does_not_own_is_reported_and_no_secret_is_added(stack: LocalStack) -> None:
    seeded = stack.seed_app_secret(VAULT, unique("pf-app"), application="legacy-reports-client")
    untouched = Untouched(stack)

    report = preflight(stack, seeded.name)

    assert failing(report) == ["target"]
    detail = checks(report)["target"][1]
    assert "Authorization_RequestDenied" in detail
    assert "Application.ReadWrite.OwnedBy" in detail
    assert "owner" in detail
    untouched.check()
    assert_no_value(report, value_of(stack, seeded.name))


def test_a_storage_account_without_shared_key_access_is_reported_and_no_key_regenerated(
    stack: LocalStack,
) -> None:
    seeded = stack.seed_storage_secret(VAULT, unique("pf-store"), account="legacystore01")
    untouched = Untouched(stack)

    report = preflight(stack, seeded.name)

    assert failing(report) == ["target"]
    assert "allowSharedKeyAccess false" in checks(report)["target"][1]
    untouched.check()
    assert_no_value(report, value_of(stack, seeded.name))


# -- the consumers -------------------------------------------------------------------------------------


def test_a_consumer_the_hub_may_not_restart_is_reported(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed_login(stack, tags={metadata.CONSUMERS: consumer_id(stack)})
    stack.cloud.admin.remove_role(identity=HUB, role=WEBSITE_CONTRIBUTOR, scope=f"site:{CONSUMER_SITE}")
    untouched = Untouched(stack, (seeded.kind, seeded.login))

    report = preflight(stack, seeded.name)

    assert failing(report) == ["consumers"]
    detail = checks(report)["consumers"][1]
    assert f"the hub may not restart app {CONSUMER_SITE!r}" in detail
    assert "Microsoft.Web/sites/restart/action" in detail
    untouched.check()


def test_a_consumer_that_does_not_exist_is_reported(stack: LocalStack) -> None:
    assert stack.cloud is not None
    site = consumer_id(stack)
    group = site.split("/providers/")[0]
    gone = site.rsplit("/", 1)[0] + "/retired-app"
    # Rights on the whole resource group: the hub may restart any app in it, so only existence fails.
    stack.cloud.admin.assign_role(identity=HUB, role=WEBSITE_CONTRIBUTOR, scope=group)
    seeded = seed_login(stack, tags={metadata.CONSUMERS: f"{site},{gone}"})

    report = preflight(stack, seeded.name)

    assert failing(report) == ["consumers"]
    detail = checks(report)["consumers"][1]
    assert "app 'retired-app' does not exist" in detail
    assert CONSUMER_SITE not in detail


# -- the sweep's early warning ---------------------------------------------------------------------------


def test_the_sweep_checks_a_secret_whose_window_opens_within_the_setting_and_warns(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(stack, ROTATION_PREFLIGHT_AHEAD_DAYS="25")
    window = timedelta(days=settings.near_expiry_days)
    soon = seed_login(stack, expires_in=window + timedelta(days=20), tags={metadata.APPROVAL: "sometimes"})
    later = seed_login(stack, expires_in=window + timedelta(days=30), tags={metadata.APPROVAL: "sometimes"})
    healthy = seed_login(stack, expires_in=window + timedelta(days=10))
    password = value_of(stack, soon.name)

    with caplog.at_level(logging.INFO, logger="starters.sweep"):
        found = asyncio.run(preflight_upcoming(vault_id(stack), settings, now=datetime.now(UTC)))

    failing_names = {report.secret for report in found}
    assert soon.name in failing_names
    assert later.name not in failing_names, "30 days before its window is beyond the 25 days ahead"
    assert healthy.name not in failing_names
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    [warning] = [w for w in warnings if soon.name in w]
    assert "would not rotate" in warning
    assert "tags: rotation-approval must be 'required'" in warning
    assert not any(later.name in w for w in warnings)
    assert password not in caplog.text


def test_the_sweep_preflight_is_off_at_zero_days(stack: LocalStack) -> None:
    settings = settings_for(stack, ROTATION_PREFLIGHT_AHEAD_DAYS="0")
    seed_login(stack, expires_in=timedelta(days=settings.near_expiry_days + 5), tags={metadata.APPROVAL: "x"})
    assert asyncio.run(preflight_upcoming(vault_id(stack), settings)) == []
