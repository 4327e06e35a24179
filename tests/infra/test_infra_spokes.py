"""Onboarding many spokes: nested deployment names that never collide, and what reusing a topic does.

A nested deployment's name is unique in the scope it deploys into. The role modules deploy into
the resource group of the app or storage account they grant on, and one app or account may be
listed under two spokes, so their names are evaluated here for two spokes at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from bicep_templates import (
    BICEP,
    INFRA,
    UnsupportedExpression,
    body,
    decorator,
    evaluate,
    only_resource,
    template,
)

VAULT = "modules/spoke/vault.bicep"
SHARED_APP = "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/rg-shared/providers/Microsoft.Web/sites/app-shared"
OTHER_APP = "/subscriptions/33333333-3333-3333-3333-333333333333/resourceGroups/rg-shared/providers/Microsoft.Web/sites/app-other"

# (resource group id of the vault, vault name): the spoke module runs in the vault's resource group.
SPOKE_A = ("/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-payments", "kv-payments")
SPOKE_B = ("/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-reporting", "kv-reporting")
# The same vault name in another resource group: vault names are unique per cloud, but a deleted
# vault's name can be reused elsewhere while an old deployment of it is still recorded.
SPOKE_A_ELSEWHERE = (
    "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-other",
    "kv-payments",
)

ROLE_MODULES = ["consumerRoles", "storageKeyRoles"]


def _deployment_name(module: str, spoke: tuple[str, str], target: str) -> str:
    tpl = template(VAULT)
    declaration = tpl["modules"][module]
    item = declaration["config"]["loop_type"]["detail"]["item_name"]
    rg_id, vault_name = spoke
    scope: dict[str, Any] = {
        item: target,
        "vaultName": vault_name,
        "resourceGroup()": {"id": rg_id, "name": rg_id.rsplit("/", 1)[1]},
    }
    name = evaluate(body(declaration)["name"], scope, tpl)
    assert isinstance(name, str)
    return name


@pytest.mark.parametrize("module", ROLE_MODULES)
def test_one_target_listed_under_two_spokes_gets_two_deployment_names(module: str) -> None:
    names = {_deployment_name(module, spoke, SHARED_APP) for spoke in (SPOKE_A, SPOKE_B, SPOKE_A_ELSEWHERE)}
    assert len(names) == 3, names


@pytest.mark.parametrize("module", ROLE_MODULES)
def test_deployment_names_are_stable_distinct_per_target_and_short(module: str) -> None:
    # Stable: the next `azd provision` updates the same deployment instead of adding one.
    assert _deployment_name(module, SPOKE_A, SHARED_APP) == _deployment_name(module, SPOKE_A, SHARED_APP)
    assert _deployment_name(module, SPOKE_A, SHARED_APP) != _deployment_name(module, SPOKE_A, OTHER_APP)
    # ARM deployment names: at most 64 characters.
    assert len(_deployment_name(module, SPOKE_A, SHARED_APP)) <= 64


def test_every_looped_module_of_the_spoke_templates_is_checked_here() -> None:
    looped = {
        name
        for name, declaration in template(VAULT)["modules"].items()
        if declaration["config"].get("loop_type")
    }
    assert looped == set(ROLE_MODULES)


def test_spoke_modules_of_two_vaults_get_two_names() -> None:
    tpl = template("spokes.bicep")
    declaration = tpl["modules"]["spoke"]
    item = declaration["config"]["loop_type"]["detail"]["item_name"]

    def name(subscription: str, group: str, vault: str) -> str:
        spoke = {"subscriptionId": subscription, "resourceGroupName": group, "vaultName": vault}
        return str(evaluate(body(declaration)["name"], {item: spoke}, tpl))

    same_group = {name("s1", "rg", "kv-a"), name("s1", "rg", "kv-b"), name("s2", "rg", "kv-a")}
    assert len(same_group) == 3


# --- reusing an existing system topic ------------------------------------------------------------------


def test_the_topic_is_written_whole_with_the_hub_s_identity_and_tags() -> None:
    # What the documentation below warns about: the deployment sets exactly these, so an existing
    # topic's other identities and tags do not survive it. If the template ever merges them, this
    # fails and the warning must change with it.
    topic = body(only_resource(template(VAULT), "Microsoft.EventGrid/systemTopics"))
    assert topic["name"] == "systemTopicName"
    assert topic["identity"]["type"] == "UserAssigned"
    assert list(topic["identity"]["userAssignedIdentities"]) == ["'${deadLetterIdentityId}'"]
    assert topic["tags"] == "tags"


def test_reusing_a_topic_is_documented_at_the_parameter() -> None:
    description = " ".join(decorator(template(VAULT), "systemTopicName", "description").split())
    assert "existing topic REPLACES its identity block and its tags" in description
    assert "system-assigned identity" in description


@pytest.mark.parametrize(("path", "param"), [("spokes.bicep", "spokes"), ("main.bicep", "spokes")])
def test_reusing_a_topic_is_documented_where_spokes_are_listed(path: str, param: str) -> None:
    description = " ".join(decorator(template(path), param, "description").split())
    assert "existing topic gets its identity block and tags replaced" in description, path


def test_reusing_a_topic_is_documented_in_the_infra_readme() -> None:
    text = " ".join((INFRA / "README.md").read_text().split())
    assert "**Reusing a topic replaces its identity block and its tags.**" in text
    assert "system-assigned identity" in text
    assert (BICEP / VAULT).is_file()


def test_the_evaluator_refuses_what_it_does_not_model() -> None:
    # So a name built from something new fails here instead of being compared as a literal.
    tpl = template(VAULT)
    site_name = body(tpl["modules"]["consumerRoles"])["params"]["siteName"]  # last(split(appId, '/'))
    with pytest.raises(UnsupportedExpression):
        evaluate(site_name, {"appId": SHARED_APP}, tpl)
    name = body(tpl["modules"]["consumerRoles"])["name"]
    with pytest.raises(UnsupportedExpression, match="resourceGroup"):
        evaluate(name, {"appId": SHARED_APP, "vaultName": "kv"}, tpl)
