"""The parts of the local cloud with rules of their own: topology parsing, RBAC scopes, tokens, routes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from local.cloud import rbac
from local.cloud.applications import ApplicationStore
from local.cloud.eventgrid_delivery import retry_delay
from local.cloud.graph import Call as GraphCall
from local.cloud.graph import GraphRefusal
from local.cloud.graph import route as graph_route
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
        (
            lambda d: d["event_subscriptions"][0].update(event_delivery_schema="CustomInputSchema"),
            "event_delivery_schema 'CustomInputSchema' is not one of EventGridSchema, CloudEventSchemaV1_0",
        ),
        (lambda d: d["identities"][0].update(client_id="nope"), "not a GUID"),
    ],
)
def test_invalid_topologies_name_the_bad_entry(change: Any, message: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(TopologyError, match=message):
        parse(doc, ENV)


@pytest.mark.parametrize(
    ("given", "schema"),
    [
        ({}, "EventGridSchema"),
        ({"event_delivery_schema": "cloudeventschemav1_0"}, "CloudEventSchemaV1_0"),  # ARM ignores case
        ({"eventDeliverySchema": "CloudEventSchemaV1_0"}, "CloudEventSchemaV1_0"),  # ARM's spelling
    ],
)
def test_event_delivery_schema_defaults_to_event_grid_and_is_canonical(
    given: dict[str, str], schema: str
) -> None:
    doc = _doc()
    doc["event_subscriptions"][0].update(given)
    subscription = parse(doc, ENV).event_subscriptions[0]
    assert subscription.event_delivery_schema == schema
    assert subscription.cloud_events == (schema == "CloudEventSchemaV1_0")


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


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["applications"][0].update(sign_in_audience="Everyone"), "sign_in_audience"),
        (lambda d: d["applications"][0].update(owners=["nobody"]), "unknown identity or application"),
        (lambda d: d["applications"][0].update(app_id="nope"), r"applications\[0\]\.app_id"),
        (lambda d: d["applications"][1].update(object_id=d["applications"][0]["object_id"]), "used by"),
        (lambda d: d["applications"][0]["password_credentials"][0].update(end=-1), "after its start"),
        (lambda d: d["applications"][0]["password_credentials"][0].update(end="soon"), "ISO 8601"),
        (lambda d: d["applications"][0].update(password_max_lifetime_days=0), "must be positive"),
        (lambda d: d["graph_app_roles"][0].update(role="Directory.ReadWrite.All"), "is not one of"),
        (lambda d: d["graph_app_roles"][0].update(application="owned-app"), "exactly one"),
        (
            lambda d: d["role_assignments"].append(
                {"application": "ghost", "role": "Key Vault Secrets User", "scope": "vault:test1-kv"}
            ),
            "unknown application",
        ),
    ],
)
def test_invalid_applications_name_the_bad_entry(change: Any, message: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(TopologyError, match=message):
        parse(doc, ENV)


def test_application_secrets_come_from_the_environment_or_are_generated(tmp_path: Path) -> None:
    doc = _doc()
    doc["applications"][0]["password_credentials"][0]["secret"] = "${OWNED_SECRET}"
    with pytest.raises(TopologyError, match=r"\$\{OWNED_SECRET\}"):
        parse(doc, ENV)
    topology = parse(doc, {**ENV, "OWNED_SECRET": "from-the-env"})
    assert topology.applications["owned-app"].password_credentials[0].secret == "from-the-env"
    assert topology.applications["personal-app"].password_credentials[0].secret is None

    store = ApplicationStore(tmp_path, topology)
    owned, personal = topology.applications["owned-app"], topology.applications["personal-app"]
    assert store.initial_secret(owned) == (store.passwords(owned)[0], "from-the-env")
    generated = store.initial_secret(personal)
    assert generated is not None
    assert len(generated[1]) == 40
    assert generated[0].hint == generated[1][:3]
    assert "from-the-env" not in (tmp_path / "applications.json").read_text()
    assert (tmp_path / "application-secrets.json").stat().st_mode & 0o777 == 0o600
    # A second start keeps the state: nothing is seeded again.
    assert ApplicationStore(tmp_path, topology).initial_secret(personal) == generated


def test_graph_routes_match_what_clients_send() -> None:
    object_id, app_id = "0b33b906-e752-435a-b3b1-13e9a57dc34a", "eb6293ca-0928-46c2-9d29-389f2de91585"
    assert graph_route("GET", f"/v1.0/applications/{object_id}") == GraphCall("get_application", object_id)
    assert graph_route("POST", f"/v1.0/applications(appId='{app_id}')/addPassword").app_id == app_id
    assert graph_route(
        "POST", f"/v1.0/applications/{object_id}/microsoft.graph.removePassword"
    ).operation == ("remove_password")
    assert graph_route("POST", f"/v1.0/applications/{object_id}/owners/$ref").operation == "add_owner"
    assert graph_route("DELETE", f"/v1.0/applications/{object_id}/owners/{app_id}/$ref").owner_id == app_id
    for method, path, status in (
        ("GET", f"/v2/applications/{object_id}", 400),
        ("GET", f"/v1.0/users/{object_id}", 400),
        ("GET", "/v1.0/applications/not-a-guid", 400),
        ("GET", f"/v1.0/applications/{object_id}/addPassword", 405),
    ):
        with pytest.raises(GraphRefusal) as refused:
            graph_route(method, path)
        assert refused.value.status == status


def test_vaults_added_like_another_get_its_roles_and_event_subscriptions() -> None:
    from local.cloud.process import DEFAULT_TOPOLOGY
    from local.cloud.topology import with_vaults_like

    default = json.loads(DEFAULT_TOPOLOGY.read_text())
    env = {"HUB_URL": "http://127.0.0.1:1", "PG_PORT": "1", "PYTHON": "python3"}
    names = [f"spoke{i}-kv" for i in range(3, 11)]
    topology = parse(with_vaults_like(default, names, like="spoke2-kv"), env)
    like = topology.vaults["spoke2-kv"]
    for name in names:
        vault = topology.vaults[name]
        assert (vault.subscription_id, vault.resource_group) == (like.subscription_id, f"rg-{name}")
        granted = {(a.identity, a.role_id) for a in topology.role_assignments if a.scope == vault.arm_id}
        assert granted == {
            (a.identity, a.role_id) for a in topology.role_assignments if a.scope == like.arm_id
        }
        assert [s.endpoint for s in topology.event_subscriptions if s.vault == name] == [
            s.endpoint for s in topology.event_subscriptions if s.vault == "spoke2-kv"
        ]
    # The document it was made from is unchanged.
    assert "spoke3-kv" not in json.dumps(default)
    with pytest.raises(TopologyError, match="not in the topology"):
        with_vaults_like(default, ["spoke3-kv"], like="nowhere-kv")
    with pytest.raises(TopologyError, match="taken or not a valid"):
        with_vaults_like(default, ["spoke1-kv"], like="spoke2-kv")
