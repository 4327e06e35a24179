"""The policy definition JSON, the initiative and its assignments."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from bicep_templates import (
    BICEP,
    POLICY_JSON,
    body,
    decorator,
    dotted,
    load_json_contents,
    only_resource,
    param_default,
    template,
)
from policy_rules import PolicyShapeError, check_condition, check_definition

EVENTS_JSON = POLICY_JSON / "keyvault-events-to-hub.json"
SECRETS_EXPIRE_BUILT_IN = "98728c90-32c7-4049-8429-847dc0f4fe37"
POLICY_TEMPLATES = ["policy/subscription.bicep", "policy/management-group.bicep"]


def _events() -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(EVENTS_JSON.read_text())
    return definition


def test_every_policy_json_is_a_valid_definition() -> None:
    files = sorted(POLICY_JSON.glob("*.json"))
    assert files == [EVENTS_JSON]
    for path in files:
        check_definition(json.loads(path.read_text()))


def test_events_policy_audits_vaults_without_a_subscription_to_the_hub() -> None:
    props = _events()["properties"]
    assert props["mode"] == "Indexed"
    rule = props["policyRule"]
    assert rule["if"] == {"field": "type", "equals": "Microsoft.KeyVault/vaults"}
    effect = props["parameters"]["effect"]
    assert effect["allowedValues"] == ["AuditIfNotExists", "Disabled"]
    assert effect["defaultValue"] == "AuditIfNotExists"
    details = rule["then"]["details"]
    assert details["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    # Every event subscription of the vault's topic, named as the spoke module names it.
    assert details["name"] == "[concat(field('name'), parameters('systemTopicSuffix'), '/?')]"
    conditions = details["existenceCondition"]["allOf"]
    alias = "Microsoft.EventGrid/systemTopics/eventSubscriptions/"
    assert {"field": alias + "destination.endpointType", "equals": "AzureFunction"} in conditions
    assert {
        "field": alias + "destination.AzureFunction.resourceId",
        "equals": "[parameters('hubFunctionResourceId')]",
    } in conditions
    count = next(c for c in conditions if "count" in c)
    assert count["count"]["where"]["in"] == [
        "Microsoft.KeyVault.SecretNearExpiry",
        "Microsoft.KeyVault.SecretExpired",
    ]
    assert count["equals"] == 2


def test_the_policy_s_topic_name_is_the_spoke_module_s() -> None:
    suffix = _events()["properties"]["parameters"]["systemTopicSuffix"]["defaultValue"]
    vault = template("modules/spoke/vault.bicep")
    assert vault["parameters"]["systemTopicName"]["default"] == "${vaultName}" + suffix


def _broken(change: str) -> dict[str, Any]:
    definition = copy.deepcopy(_events())
    props = definition["properties"]
    rule = props["policyRule"]
    if change == "fixed-effect":
        rule["then"]["effect"] = "AuditIfNotExists"
    elif change == "no-existence-condition":
        del rule["then"]["details"]["existenceCondition"]
    elif change == "unknown-operator":
        rule["if"] = {"field": "type", "isExactly": "Microsoft.KeyVault/vaults"}
    elif change == "two-operators":
        rule["if"] = {"field": "type", "equals": "a", "notEquals": "b"}
    elif change == "undeclared-parameter":
        del props["parameters"]["hubFunctionResourceId"]
    elif change == "unused-parameter":
        props["parameters"]["unused"] = {"type": "String", "metadata": {"displayName": "Unused"}}
    elif change == "bad-mode":
        props["mode"] = "indexed"
    elif change == "foreign-alias":
        rule["then"]["details"]["existenceCondition"]["allOf"][0]["field"] = "Microsoft.Web/sites/httpsOnly"
    elif change == "extra-rule-key":
        rule["else"] = {}
    elif change == "default-not-allowed":
        props["parameters"]["effect"]["defaultValue"] = "Deny"
    return definition


@pytest.mark.parametrize(
    "change",
    [
        "fixed-effect",
        "no-existence-condition",
        "unknown-operator",
        "two-operators",
        "undeclared-parameter",
        "unused-parameter",
        "bad-mode",
        "foreign-alias",
        "extra-rule-key",
        "default-not-allowed",
    ],
)
def test_the_shape_check_rejects_a_broken_definition(change: str) -> None:
    with pytest.raises(PolicyShapeError):
        check_definition(_broken(change))


def test_count_needs_an_array_alias() -> None:
    with pytest.raises(PolicyShapeError):
        check_condition({"count": {"field": "Microsoft.EventGrid/x/filter.includedEventTypes"}, "equals": 2})


def _policy_template(relative: str) -> dict[str, Any]:
    return template(relative)


@pytest.mark.parametrize("relative", POLICY_TEMPLATES)
def test_custom_definition_is_loaded_from_the_checked_json(relative: str) -> None:
    tpl = _policy_template(relative)
    assert load_json_contents(BICEP / relative) == [EVENTS_JSON.resolve()]
    definition = body(only_resource(tpl, "Microsoft.Authorization/policyDefinitions"))
    assert dotted(definition["name"]) == "eventsRule.name"
    assert dotted(definition["properties"]) == "eventsRule.properties"
    loaded = tpl["variables"]["eventsRule"]["value"]["function"]
    assert loaded["type"] == "load_json_content"


def _initiative(relative: str) -> dict[str, Any]:
    return body(only_resource(_policy_template(relative), "Microsoft.Authorization/policySetDefinitions"))


@pytest.mark.parametrize("relative", POLICY_TEMPLATES)
def test_initiative_groups_the_built_in_and_the_custom_definition(relative: str) -> None:
    tpl = _policy_template(relative)
    members = {
        m["policyDefinitionReferenceId"]: m for m in _initiative(relative)["properties"]["policyDefinitions"]
    }
    assert set(members) == {"secretsShouldExpire", "vaultEventsToHub"}
    built_in = tpl["variables"][members["secretsShouldExpire"]["policyDefinitionId"]]["value"]["function"]
    assert built_in["type"] == "tenant_resource_id"
    assert built_in["parameters"]["resource_type"] == "Microsoft.Authorization/policyDefinitions"
    assert built_in["parameters"]["resource_name_1"] == SECRETS_EXPIRE_BUILT_IN
    custom = members["vaultEventsToHub"]["policyDefinitionId"]
    assert dotted(custom) == "eventsDefinition.id"


_PARAMETER_USE = re.compile(r"^\[parameters\(\\?'(\w+)\\?'\)\]$")


@pytest.mark.parametrize("relative", POLICY_TEMPLATES)
def test_initiative_parameters_reach_each_member(relative: str) -> None:
    initiative = _initiative(relative)["properties"]
    declared = initiative["parameters"]
    member_parameters = {
        # The built-in's only parameter is `effect` (Audit, Deny, Disabled).
        "secretsShouldExpire": {"effect"},
        "vaultEventsToHub": set(_events()["properties"]["parameters"]),
    }
    used = set()
    for member in initiative["policyDefinitions"]:
        passed = member["parameters"]
        assert set(passed) <= member_parameters[member["policyDefinitionReferenceId"]]
        for spec in passed.values():
            match = _PARAMETER_USE.match(spec["value"])
            assert match, spec
            assert match.group(1) in declared
            used.add(match.group(1))
    assert used == set(declared)
    # Members' parameters without a default must be passed.
    events_required = {
        name for name, spec in _events()["properties"]["parameters"].items() if "defaultValue" not in spec
    }
    vault_member = next(
        m for m in initiative["policyDefinitions"] if m["policyDefinitionReferenceId"] == "vaultEventsToHub"
    )
    assert events_required <= set(vault_member["parameters"])


@pytest.mark.parametrize("relative", POLICY_TEMPLATES)
def test_secret_expiry_effect_is_a_parameter_audit_or_deny(relative: str) -> None:
    tpl = _policy_template(relative)
    assert decorator(tpl, "secretExpiryEffect", "allowed") == ["Audit", "Deny", "Disabled"]
    assert tpl["parameters"]["secretExpiryEffect"]["default"] == "Audit"
    in_initiative = _initiative(relative)["properties"]["parameters"]["secretExpiryEffect"]
    assert in_initiative["allowedValues"] == ["Audit", "Deny", "Disabled"]
    assert (
        decorator(tpl, "eventsEffect", "allowed")
        == _events()["properties"]["parameters"]["effect"]["allowedValues"]
    )


@pytest.mark.parametrize("relative", POLICY_TEMPLATES)
def test_assignment_assigns_the_initiative_with_every_parameter(relative: str) -> None:
    tpl = _policy_template(relative)
    assignment = body(only_resource(tpl, "Microsoft.Authorization/policyAssignments"))["properties"]
    assert dotted(assignment["policyDefinitionId"]) == "initiative.id"
    declared = _initiative(relative)["properties"]["parameters"]
    assert set(assignment["parameters"]) == set(declared)
    for name, spec in assignment["parameters"].items():
        assert spec == {"value": name}, "each is the template parameter of the same name"
    messages = {m["policyDefinitionReferenceId"] for m in assignment["nonComplianceMessages"]}
    assert messages == {"secretsShouldExpire", "vaultEventsToHub"}


def test_the_two_scopes_differ_only_in_target_scope() -> None:
    assert template(POLICY_TEMPLATES[0])["globals"]["scope"]["value"] == "subscription"
    assert template(POLICY_TEMPLATES[1])["globals"]["scope"]["value"] == "managementGroup"
    first, second = (
        [
            # The assignment name's limit depends on the scope (test_assignment_name_fits_...).
            re.sub(r"^@maxLength\(\d+\)$", "@maxLength(<scope limit>)", line)
            for line in (BICEP / rel).read_text().splitlines()
            if not line.startswith(("//", "targetScope"))
        ]
        for rel in POLICY_TEMPLATES
    )
    assert first == second


# Azure's limits on a policy assignment's name: 24 characters at a management group, 64 at a
# subscription (Azure Policy assignment structure). A longer name passes Bicep and fails at Azure.
ASSIGNMENT_NAME_LIMITS = {"policy/management-group.bicep": 24, "policy/subscription.bicep": 64}


@pytest.mark.parametrize(("path", "limit"), ASSIGNMENT_NAME_LIMITS.items())
def test_assignment_name_fits_azure_s_limit_at_its_scope(path: str, limit: int) -> None:
    tpl = template(path)
    expected_scope = "managementGroup" if limit == 24 else "subscription"
    assert tpl["globals"]["scope"]["value"] == expected_scope
    assert decorator(tpl, "assignmentName", "max_length") == limit
    assert decorator(tpl, "assignmentName", "min_length") == 1
    assert 1 <= len(param_default(tpl, "assignmentName")) <= limit
    assignment = body(only_resource(tpl, "Microsoft.Authorization/policyAssignments"))
    assert assignment["name"] == "assignmentName"


def test_every_policy_template_has_an_assignment_name_limit() -> None:
    assert set(ASSIGNMENT_NAME_LIMITS) == set(POLICY_TEMPLATES)
