"""The parts of the local cloud with rules of their own: topology parsing, RBAC scopes, tokens, routes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from local.cloud import rbac
from local.cloud.eventgrid_delivery import retry_delay
from local.cloud.keyvault import route
from local.cloud.tokens import TokenExpired, TokenInvalid, TokenIssuer
from local.cloud.topology import TopologyError, parse
from tests.cloud.support import TOPOLOGY

ENV = {
    "WEBHOOK_URL": "http://127.0.0.1:1",
    "PYTHON": "python3",
    "PROBE_MARKER": "m",
    "PROBE_UNHEALTHY_FILE": "/x",
}


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(TOPOLOGY.read_text())
    return doc


def test_placeholders_are_resolved_and_missing_ones_named() -> None:
    topology = parse(_doc(), ENV)
    assert topology.event_subscriptions[0].endpoint == "http://127.0.0.1:1/all-events"
    assert topology.sites["probe-app"].command[0] == "python3"
    with pytest.raises(TopologyError, match=r"\$\{WEBHOOK_URL\}"):
        parse(_doc(), {k: v for k, v in ENV.items() if k != "WEBHOOK_URL"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["subscriptions"][0]["resource_groups"][0]["vaults"][0].update(name="1bad"),
            "not a valid vault",
        ),
        (lambda d: d["role_assignments"][0].update(role="Owner"), "unknown role"),
        (lambda d: d["role_assignments"][0].update(scope="vault:nowhere-kv"), "unknown vault"),
        (lambda d: d["event_subscriptions"][0].update(max_delivery_attempts=31), "between 1 and 30"),
        (lambda d: d["event_subscriptions"][0].update(included_event_types=["Foo"]), "not emitted"),
        (lambda d: d["identities"][0].update(client_id="nope"), "not a GUID"),
    ],
)
def test_invalid_topologies_name_the_bad_entry(change: Any, message: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(TopologyError, match=message):
        parse(doc, ENV)


def test_role_assignments_cover_resources_below_their_scope_only() -> None:
    grants = [rbac.Grant("p", rbac.SECRETS_USER, "/subscriptions/s/resourceGroups/rg")]
    vault = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"
    get = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
    assert rbac.is_allowed(grants, "p", vault, get, data=True)
    assert rbac.is_allowed(grants, "p", vault.upper(), get, data=True)  # ARM ids ignore case
    assert not rbac.is_allowed(grants, "p", vault.replace("/rg/", "/rg2/"), get, data=True)
    assert not rbac.is_allowed(grants, "p", "/subscriptions/s/resourceGroups/rg-other", get, data=True)
    assert not rbac.is_allowed(
        grants, "p", vault, "Microsoft.KeyVault/vaults/secrets/setSecret/action", data=True
    )
    assert not rbac.is_allowed(grants, "q", vault, get, data=True)


def test_role_names_and_ids_are_both_accepted() -> None:
    assert rbac.role_id("Key Vault Secrets Officer") == rbac.SECRETS_OFFICER
    assert rbac.role_id(f"/providers/Microsoft.Authorization/roleDefinitions/{rbac.WEBSITE_CONTRIBUTOR}") == (
        rbac.WEBSITE_CONTRIBUTOR
    )
    assert rbac.role_id("Owner") is None


def test_tokens_verify_expire_and_reject_tampering(tmp_path: Path) -> None:
    topology = parse(_doc(), ENV)
    issuer = TokenIssuer(tmp_path, topology.tenant_id)
    officer = topology.identities["officer"]
    token, expires_on = issuer.issue(officer, "https://vault.azure.net/.default", 60)
    claims = issuer.verify(token)
    assert claims.audience == "https://vault.azure.net"
    assert claims.object_id == officer.principal_id
    assert expires_on - int(time.time()) in (59, 60)
    header, payload, signature = token.split(".")
    with pytest.raises(TokenInvalid):
        issuer.verify(f"{header}.{payload}x.{signature}")
    with pytest.raises(TokenExpired):
        issuer.verify(issuer.issue(officer, "https://vault.azure.net", -1)[0])
    assert TokenIssuer(tmp_path, topology.tenant_id).verify(token).app_id == officer.client_id  # key kept


def test_routes_match_what_the_sdk_sends() -> None:
    assert route("GET", "/secrets/a/") == route("GET", "/secrets/a")
    assert route("GET", "/secrets/a/" + "f" * 32).version == "f" * 32  # type: ignore[union-attr]
    assert route("GET", "/secrets/a/versions").operation == "list_versions"  # type: ignore[union-attr]
    assert route("POST", "/secrets/restore").operation == "restore_secret"  # type: ignore[union-attr]
    assert route("PUT", "/secrets/restore").operation == "set_secret"  # type: ignore[union-attr]
    assert route("POST", "/deletedsecrets/a/recover").operation == "recover_deleted_secret"  # type: ignore[union-attr]
    assert route("DELETE", "/deletedsecrets/a").operation == "purge_deleted_secret"  # type: ignore[union-attr]
    assert route("POST", "/keys/a") is None


def test_retry_schedule_follows_azure_then_every_twelve_hours() -> None:
    assert [retry_delay(n, 1.0) for n in range(1, 11)] == [
        10,
        30,
        60,
        300,
        600,
        1800,
        3600,
        10800,
        21600,
        43200,
    ]
    assert retry_delay(25, 0.5) == 21600
