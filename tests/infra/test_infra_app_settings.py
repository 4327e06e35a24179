"""The hub's app settings in Bicep are exactly what rotation/settings.py reads, with its defaults."""

from __future__ import annotations

from typing import Any

import pytest
from bicep_templates import body, dotted, param_default, site_app_settings, template

from rotation.settings import SETTINGS

# The Functions platform's own settings; everything else the Bicep sets must be read by the app.
PLATFORM = {
    # Identity-based host storage by service URI (test_infra_flex.py checks the URIs).
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # The Python worker's thread pool, sized from host.json's durable limits (test_infra_durable).
    "PYTHON_THREADPOOL_THREAD_COUNT",
}
# Settings whose value the hub derives instead of taking a parameter default.
DERIVED = {
    "AZURE_CLIENT_ID": "the hub identity's client id",
    "ROTATION_ALLOWED_SUBSCRIPTIONS": "the spokes' subscriptions",
    "ROTATION_SWEEP_VAULTS": "the spokes' vaults",
    "ROTATION_KEYVAULT_DNS_SUFFIX": "the deployment cloud's Key Vault suffix",
    "ROTATION_ARM_ENDPOINT": "the deployment cloud's ARM endpoint",
    "ROTATION_GRAPH_ENDPOINT": "the deployment cloud's Microsoft Graph endpoint",
    "ROTATION_ENTRA_AUTHORITY": "the deployment cloud's Entra ID login endpoint",
    "ROTATION_NOTIFY_TOPIC_ENDPOINT": "the endpoint of the hub's own notification topic",
}


def _app_settings() -> list[dict[str, Any]]:
    settings, _ = site_app_settings(template("modules/hub/function-app.bicep"))
    return settings


def _names() -> list[str]:
    return [s["name"] for s in _app_settings()]


def test_no_setting_is_set_twice() -> None:
    names = _names()
    assert len(names) == len(set(names))


def test_bicep_sets_exactly_the_settings_the_app_reads() -> None:
    app_read = {s.name for s in SETTINGS}
    set_by_bicep = set(_names()) - PLATFORM
    assert set_by_bicep == app_read, (
        f"only in Bicep: {sorted(set_by_bicep - app_read)}; only in settings.py: {sorted(app_read - set_by_bicep)}"
    )


def test_platform_settings_are_all_there() -> None:
    assert set(_names()) >= PLATFORM
    assert not any(n in {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"} for n in _names())


def _parameter_behind(value: Any) -> str:
    """The function-app.bicep parameter a setting's value comes from: `p` or `string(p)`."""
    if isinstance(value, dict) and value.get("function", {}).get("type") == "string":
        value = next(iter(value["function"]["parameters"].values()))
    assert isinstance(value, str), value
    return value


def _main_source(setting: str) -> Any:
    """What main.bicep passes for a setting, following function-app.bicep <- hub.bicep <- main.bicep."""
    value = next(s["value"] for s in _app_settings() if s["name"] == setting)
    param = _parameter_behind(value)
    assert param in template("modules/hub/function-app.bicep")["parameters"]
    hub_passes = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"][param]
    assert hub_passes == param, f"hub.bicep renames {param}"
    return body(template("main.bicep")["modules"]["hub"])["params"][param]


PLAIN = [s for s in SETTINGS if s.name not in DERIVED]


def test_the_split_is_complete() -> None:
    assert set(DERIVED) <= {s.name for s in SETTINGS}
    assert len(PLAIN) >= 8


@pytest.mark.parametrize("spec", PLAIN, ids=[s.name for s in PLAIN])
def test_main_bicep_defaults_are_the_app_s(spec: Any) -> None:
    source = _main_source(spec.name)
    assert isinstance(source, str), f"{spec.name} is computed in main.bicep: {source}"
    default = param_default(template("main.bicep"), source)
    assert default is not None, f"main.bicep parameter {source} has no default"
    assert str(default) == spec.default, f"{spec.name}: Bicep {default!r}, settings.py {spec.default!r}"


def test_client_id_is_the_hub_identity_s() -> None:
    value = next(s["value"] for s in _app_settings() if s["name"] == "AZURE_CLIENT_ID")
    assert value == "hubClientId"
    passed = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"]["hubClientId"]
    assert dotted(passed) == "identity.outputs.hubClientId"


@pytest.mark.parametrize(
    ("setting", "spokes_variable"),
    [("ROTATION_ALLOWED_SUBSCRIPTIONS", "spokeSubscriptionIds"), ("ROTATION_SWEEP_VAULTS", "spokeVaultIds")],
)
def test_spoke_lists_feed_the_allowlist_and_the_sweep(setting: str, spokes_variable: str) -> None:
    joined = _main_source(setting)["function"]
    assert joined["type"] == "join"
    assert joined["parameters"]["delimiter"] == ","
    union = joined["parameters"]["input_array"]["function"]
    assert union["type"] == "union"
    assert spokes_variable in union["parameters"].values()
    loop = template("main.bicep")["variables"][spokes_variable]["value"]["loop_type"]["detail"]
    assert loop["array_name"] == "spokes"


@pytest.mark.parametrize(
    "setting",
    [
        "ROTATION_KEYVAULT_DNS_SUFFIX",
        "ROTATION_ARM_ENDPOINT",
        "ROTATION_GRAPH_ENDPOINT",
        "ROTATION_ENTRA_AUTHORITY",
    ],
)
def test_cloud_specific_settings_follow_the_deployment_cloud(setting: str) -> None:
    source = _main_source(setting)
    default = param_default(template("main.bicep"), source)
    assert "'type': 'environment'" in repr(default), f"{setting} should come from environment()"
