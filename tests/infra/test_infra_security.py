"""The security properties of the hub and spoke templates, read from the parsed Bicep."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from bicep_templates import (
    ALL_ROLE_IDS,
    REPO,
    bicep_files,
    body,
    decorator,
    dotted,
    only_resource,
    param_default,
    parse,
    resolve,
    resources_of_type,
    site_app_settings,
    template,
)

ALL_BICEP = bicep_files()

_SECRET_WORDS = re.compile(r"key|secret|password|connectionstring|sas|token|credential", re.IGNORECASE)
_SECRET_FUNCTIONS = re.compile(
    r"\blist\w*\(|listKeys|listSecrets|AccountKey=|SharedAccessSignature", re.IGNORECASE
)


@pytest.mark.parametrize("path", ALL_BICEP, ids=[p.name for p in ALL_BICEP])
def test_outputs_carry_no_keys_or_secrets(path: Path) -> None:
    for name, output in parse(path).get("outputs", {}).items():
        assert not _SECRET_WORDS.search(name), f"{path.name}: output {name}"
        text = repr(output["value"])
        assert not _SECRET_WORDS.search(text.replace("outputs", "")), f"{path.name}: output {name} = {text}"
        assert "ConnectionString" not in text
        assert "InstrumentationKey" not in text


@pytest.mark.parametrize("path", ALL_BICEP, ids=[p.name for p in ALL_BICEP])
def test_no_template_reads_keys(path: Path) -> None:
    text = path.read_text()
    assert not _SECRET_FUNCTIONS.search(text), f"{path.name} reads or builds a key"
    assert "@secure()" not in text, f"{path.name} takes a secret: the hub should need none"


def test_storage_is_identity_only_https_and_tls12() -> None:
    props = body(only_resource(template("modules/hub/storage.bicep"), "Microsoft.Storage/storageAccounts"))[
        "properties"
    ]
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False


def test_blob_containers_are_private() -> None:
    containers = resources_of_type(
        template("modules/hub/storage.bicep"), "Microsoft.Storage/storageAccounts/blobServices/containers"
    )
    assert set(containers) == {"deploymentContainer", "deadLetterContainer"}
    for decl in containers.values():
        assert body(decl)["properties"]["publicAccess"] == "None"


def _site() -> dict[str, Any]:
    return body(only_resource(template("modules/hub/function-app.bicep"), "Microsoft.Web/sites"))


def _app_settings() -> dict[str, Any]:
    settings, _ = site_app_settings(template("modules/hub/function-app.bicep"))
    return {s["name"]: s["value"] for s in settings}


def test_host_storage_is_identity_based() -> None:
    settings = _app_settings()
    assert "AzureWebJobsStorage" not in settings, "a connection string would carry an account key"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    # Addressed by service URIs built from the account's name (test_infra_flex.py).
    assert "AzureWebJobsStorage__accountName" not in settings
    for service in ("blob", "queue", "table"):
        assert "${storageAccountName}" in settings[f"AzureWebJobsStorage__{service}ServiceUri"]
    # The user-assigned identity, not a system one the app does not have.
    assert settings["AzureWebJobsStorage__clientId"] == "hubClientId"
    assert settings["AZURE_CLIENT_ID"] == "hubClientId"
    for name, value in settings.items():
        assert "AccountKey" not in repr(value), name


def test_function_app_is_https_only_tls12_ftp_off() -> None:
    props = _site()["properties"]
    assert props["httpsOnly"] is True
    site_config = props["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["scmMinTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"
    assert site_config["remoteDebuggingEnabled"] is False
    policies = resources_of_type(
        template("modules/hub/function-app.bicep"), "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    )
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_function_app_is_flex_consumption_python_311_on_the_user_assigned_identity() -> None:
    tpl = template("modules/hub/function-app.bicep")
    plan = body(only_resource(tpl, "Microsoft.Web/serverfarms"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True  # Linux
    site = _site()
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    auth = config["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "hubIdentityId"}


def test_telemetry_uses_entra_not_the_instrumentation_key() -> None:
    components = body(
        only_resource(template("modules/hub/monitoring.bicep"), "Microsoft.Insights/components")
    )
    assert components["properties"]["DisableLocalAuth"] is True
    assert _app_settings()["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${hubClientId};Authorization=AAD"
    )


def _role_assignments() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in ALL_BICEP:
        tpl = parse(path)
        for name, decl in resources_of_type(tpl, "Microsoft.Authorization/roleAssignments").items():
            found.append((path.name, name, decl))
    return found


def _role_id(path_name: str, decl: dict[str, Any]) -> str:
    tpl = next(parse(p) for p in ALL_BICEP if p.name == path_name)
    fn = body(decl)["properties"]["roleDefinitionId"]["function"]
    assert fn["type"] == "subscription_resource_id"
    assert fn["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    role: str = resolve(tpl, fn["parameters"]["resource_name_1"])
    return role


def test_every_role_assignment_uses_a_known_built_in_role_for_a_service_principal() -> None:
    assignments = _role_assignments()
    assert len(assignments) >= 8
    for path_name, name, decl in assignments:
        role = _role_id(path_name, decl)
        assert role in ALL_ROLE_IDS.values(), f"{path_name}:{name} uses unknown role {role}"
        props = body(decl)["properties"]
        assert props["principalType"] == "ServicePrincipal", f"{path_name}:{name}"
        # A deterministic name keeps redeployments idempotent (and includes the role).
        assert body(decl)["name"]["function"]["type"] == "guid", f"{path_name}:{name}"


@pytest.mark.parametrize(
    ("file_name", "symbol", "role", "scope"),
    [
        ("vault.bicep", "secretsOfficer", "Key Vault Secrets Officer", "vault"),
        # The allowlist's check: ARM GET of the vault (Microsoft.KeyVault/vaults/read), nothing wider.
        ("vault.bicep", "vaultReader", "Reader", "vault"),
        ("site-role.bicep", "restart", "Website Contributor", "site"),
        ("storage-key-role.bicep", "keyOperator", "Storage Account Key Operator Service Role", "account"),
        ("storage-key-role.bicep", "accountReader", "Reader", "account"),
        ("storage.bicep", "deadLetterWriter", "Storage Blob Data Contributor", "deadLetterContainer"),
        ("storage.bicep", "hubBlob", "Storage Blob Data Owner", "account"),
        ("storage.bicep", "hubQueue", "Storage Queue Data Contributor", "account"),
        ("storage.bicep", "hubTable", "Storage Table Data Contributor", "account"),
        ("monitoring.bicep", "publisher", "Monitoring Metrics Publisher", "applicationInsights"),
        ("notify-topic.bicep", "sender", "EventGrid Data Sender", "topic"),
    ],
)
def test_role_and_its_scope(file_name: str, symbol: str, role: str, scope: str) -> None:
    matches = [decl for p, n, decl in _role_assignments() if p == file_name and n == symbol]
    assert len(matches) == 1, f"{file_name}:{symbol}"
    assert _role_id(file_name, matches[0]) == ALL_ROLE_IDS[role]
    assert body(matches[0])["scope"] == scope


def test_the_issue_s_role_ids() -> None:
    assert ALL_ROLE_IDS["Key Vault Secrets Officer"] == "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
    assert ALL_ROLE_IDS["Website Contributor"] == "de139f84-1756-47ae-9be6-808fbbe84772"


def _vault() -> dict[str, Any]:
    return template("modules/spoke/vault.bicep")


def test_system_topic_is_the_vault_s_and_carries_the_dead_letter_identity() -> None:
    topic = body(only_resource(_vault(), "Microsoft.EventGrid/systemTopics"))
    assert topic["properties"]["topicType"] == "Microsoft.KeyVault.vaults"
    assert dotted(topic["properties"]["source"]) == "vault.id"
    assert topic["identity"]["type"] == "UserAssigned"
    # pycep keeps the quotes of an interpolated key.
    assert [k.strip("'") for k in topic["identity"]["userAssignedIdentities"]] == ["${deadLetterIdentityId}"]


def _subscription() -> dict[str, Any]:
    return body(only_resource(_vault(), "Microsoft.EventGrid/systemTopics/eventSubscriptions"))


def test_event_subscription_filters_to_secret_expiry_events() -> None:
    included = resolve(_vault(), _subscription()["properties"]["filter"]["includedEventTypes"])
    assert included == ["Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"]
    assert _subscription()["properties"]["eventDeliverySchema"] == "EventGridSchema"


def test_event_subscription_delivers_to_the_hub_function_one_event_at_a_time() -> None:
    destination = _subscription()["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "eventFunctionResourceId"
    assert destination["properties"]["maxEventsPerBatch"] == 1
    # The id the spoke gets is the hub's `<app id>/functions/<eventFunctionName>` ...
    hub_outputs = template("modules/hub/hub.bicep")["outputs"]
    assert hub_outputs["eventFunctionResourceId"]["value"] == (
        "${functionApp.outputs.id}/functions/${eventFunctionName}"
    )
    # ... with the name of the app's Event Grid trigger.
    assert param_default(template("main.bicep"), "eventFunctionName") == "on_secret_event"
    starter = (REPO / "starters" / "event_grid.py").read_text()
    assert re.search(r'function_name\("on_secret_event"\)\s*\n\s*@\w+\.event_grid_trigger', starter)


def test_event_subscription_retries_then_dead_letters_to_the_hub_container() -> None:
    props = _subscription()["properties"]
    assert props["retryPolicy"] == {
        "maxDeliveryAttempts": "maxDeliveryAttempts",
        "eventTimeToLiveInMinutes": "eventTimeToLiveInMinutes",
    }
    vault = _vault()
    assert param_default(vault, "maxDeliveryAttempts") == 30
    assert decorator(vault, "maxDeliveryAttempts", "max_value") == 30
    assert param_default(vault, "eventTimeToLiveInMinutes") == 1440
    assert decorator(vault, "eventTimeToLiveInMinutes", "max_value") == 1440
    # Shared keys are off on the hub's storage, so dead-lettering must use an identity.
    assert "deadLetterDestination" not in props
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "UserAssigned", "userAssignedIdentity": "deadLetterIdentityId"}
    assert dead_letter["deadLetterDestination"] == {
        "endpointType": "StorageBlob",
        "properties": {
            "resourceId": "deadLetterStorageAccountId",
            "blobContainerName": "deadLetterContainerName",
        },
    }
    # And the hub passes its own dead-letter container and identity.
    main_spokes = body(template("main.bicep")["modules"]["onboarding"])["params"]
    assert dotted(main_spokes["deadLetterContainerName"]) == "hub.outputs.deadLetterContainerName"
    assert dotted(main_spokes["deadLetterStorageAccountId"]) == "hub.outputs.storageAccountId"
    assert dotted(main_spokes["deadLetterIdentityId"]) == "hub.outputs.deadLetterIdentityId"


def test_spokes_are_modules_scoped_to_each_vault_s_subscription_and_resource_group() -> None:
    spokes = template("spokes.bicep")
    assert spokes["globals"]["scope"]["value"] == "subscription"
    module = spokes["modules"]["spoke"]
    assert module["detail"]["path"] == "modules/spoke/vault.bicep"
    loop = module["config"]["loop_type"]
    assert loop["detail"] == {"item_name": "s", "array_name": "spokes"}
    scope = body(module)["scope"]["function"]
    assert scope["type"] == "resource_group"
    assert {key: dotted(value) for key, value in scope["parameters"].items()} == {
        "subscription_id": "s.subscriptionId",
        "resource_group_name": "s.resourceGroupName",
    }


def test_main_onboards_its_spokes_through_the_loop_once_there_are_any() -> None:
    main = template("main.bicep")
    onboarding = main["modules"]["onboarding"]
    assert onboarding["detail"]["path"] == "spokes.bicep"
    assert onboarding["config"]["condition"]  # no spokes, no deployment
    assert body(onboarding)["params"]["spokes"] == "spokes"
    # The first `azd up` runs before the code exists: event subscriptions wait for the flag.
    assert param_default(main, "connectSpokeEvents") is False
    assert body(onboarding)["params"]["connectEvents"] == "connectSpokeEvents"


def test_consumer_and_target_roles_are_scoped_by_the_resource_s_own_id() -> None:
    modules = _vault()["modules"]
    for name, array in (
        ("consumerRoles", "consumerAppIds"),
        ("storageKeyRoles", "storageAccountKeyTargetIds"),
    ):
        module = modules[name]
        item = module["config"]["loop_type"]["detail"]["item_name"]
        assert module["config"]["loop_type"]["detail"]["array_name"] == array
        scope = body(module)["scope"]["function"]["parameters"]
        for key, index in (("subscription_id", 2), ("resource_group_name", 4)):
            accessor = scope[key]["operator"]
            assert accessor["type"] == "index_accessor"
            assert accessor["operands"]["operand_2"] == index
            split = accessor["operands"]["operand_1"]["function"]
            assert split == {"type": "split", "parameters": {"input_string": item, "delimiter": "/"}}


def test_nothing_is_granted_at_subscription_or_resource_group_scope() -> None:
    # Every assignment names the one resource it grants on (the role table has no Owner or
    # Contributor: see test_every_role_assignment_uses_a_known_built_in_role...).
    for path_name, name, decl in _role_assignments():
        assert "scope" in body(decl), f"{path_name}:{name} inherits the deployment's whole scope"


def test_app_service_authentication_signs_approvers_in_without_locking_out_keys() -> None:
    """authsettingsV2, deployed when an app registration is given: Entra ID signs approvers in
    (the principal headers the app trusts); unauthenticated requests still reach the app, where
    function keys and the app's own refusals apply (Event Grid and the Durable webhooks have no
    Entra session)."""
    auth = only_resource(template("modules/hub/function-app.bicep"), "Microsoft.Web/sites/config")
    condition = auth["config"]["condition"]["operator"]
    assert condition["type"] == "not"
    assert "approvalSignInClientId" in repr(condition)
    properties = auth["config"]["config"]["properties"]
    assert auth["config"]["config"]["name"] == "authsettingsV2"
    assert properties["platform"]["enabled"] is True
    assert properties["globalValidation"] == {
        "requireAuthentication": False,
        "unauthenticatedClientAction": "AllowAnonymous",
    }
    assert properties["httpSettings"]["requireHttps"] is True
    entra = properties["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    assert entra["registration"]["clientId"] == "approvalSignInClientId"
    passed = body(template("main.bicep")["modules"]["hub"])["params"]["approvalSignInClientId"]
    assert passed == "approvalSignInClientId"
