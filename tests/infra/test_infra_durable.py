"""The durable task hub on Flex Consumption: host.json's limits, the always-ready durable instance,
the Python thread pool sized from host.json, and the Durable Task Scheduler option (its resources,
role and settings exist only when chosen). The ranges are the README's (Capacity and concurrency)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bicep_templates import (
    ALL_ROLE_IDS,
    BICEP,
    REPO,
    body,
    decorator,
    dotted,
    only_resource,
    param_default,
    read_json,
    site_app_settings,
    template,
)

FUNCTION_APP = "modules/hub/function-app.bicep"
SCHEDULER = "modules/hub/durable-task-scheduler.bicep"


def _durable_task() -> dict[str, Any]:
    durable: dict[str, Any] = read_json(REPO / "host.json")["extensions"]["durableTask"]
    return durable


def _seconds(timespan: str) -> int:
    hours, minutes, seconds = (int(part) for part in timespan.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def test_host_json_concurrency_is_in_the_documented_range() -> None:
    durable = _durable_task()
    activities = durable["maxConcurrentActivityFunctions"]
    orchestrators = durable["maxConcurrentOrchestratorFunctions"]
    # Activities do the I/O (Key Vault, databases, Graph, ARM); orchestrator episodes take
    # milliseconds, so they need fewer slots than activities.
    assert 4 <= activities <= 32
    assert 1 <= orchestrators <= activities


def test_queue_polling_waits_at_most_ten_seconds() -> None:
    # Microsoft's Flex Consumption advice for the Azure Storage provider: 10 s or less (default 30 s),
    # so a decision, a timer or a new rotation after a quiet spell is picked up promptly.
    interval = _seconds(_durable_task()["storageProvider"]["maxQueuePollingInterval"])
    assert 1 <= interval <= 10


def test_partition_count_is_pinned_to_the_existing_task_hub_s() -> None:
    # A task hub's partition count cannot change after it is created: a different value needs a new
    # task hub (hubName), so the number is written down rather than left to the default.
    assert _durable_task()["storageProvider"]["partitionCount"] == 4


def test_the_task_hub_name_is_the_local_host_s_too() -> None:
    assert _durable_task()["hubName"] == "RotationHub"


def _load_json_path(expr: Any) -> tuple[str, list[str]]:
    """``loadJsonContent('<file>').a.b.c`` as the file and the property names."""
    operands = expr["operator"]["operands"]
    assert expr["operator"]["type"] == "property_accessor"
    loaded = operands["operand_1"]["function"]
    assert loaded["type"] == "load_json_content"
    return loaded["parameters"]["file_path"], dotted(operands["operand_2"]).split(".")


def _reads_host_json(bicep: str, expr: Any) -> list[str]:
    """The host.json properties a Bicep expression reads; fails unless the file is the repo's host.json."""
    file_path, properties = _load_json_path(expr)
    assert (BICEP / bicep).parent.joinpath(file_path).resolve() == REPO / "host.json"
    return properties


def _settings_by_name(settings: list[dict[str, Any]]) -> dict[str, Any]:
    return {s["name"]: s["value"] for s in settings}


def test_python_thread_pool_fits_both_durable_limits() -> None:
    # Microsoft's Python guidance: Durable concurrency must not exceed what the language worker can
    # run, or dispatched activities wait on this instance instead of moving to another.
    tpl = template(FUNCTION_APP)
    always, _ = site_app_settings(tpl)
    threads = _settings_by_name(always)["PYTHON_THREADPOOL_THREAD_COUNT"]
    assert threads == {"function": {"type": "string", "parameters": {"value_to_convert": "pythonThreads"}}}
    variables = {name: var["value"] for name, var in tpl["variables"].items()}
    total = variables["pythonThreads"]["operator"]
    assert total["type"] == "add"
    summed = {dotted(variables[operand]) for operand in total["operands"].values()}
    assert summed == {
        "durableTask.maxConcurrentActivityFunctions",
        "durableTask.maxConcurrentOrchestratorFunctions",
    }
    assert _reads_host_json(FUNCTION_APP, tpl["variables"]["durableTask"]["value"]) == [
        "extensions",
        "durableTask",
    ]


def test_the_durable_group_keeps_an_always_ready_instance() -> None:
    site = body(only_resource(template(FUNCTION_APP), "Microsoft.Web/sites"))
    scale = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["alwaysReady"] == [{"name": "durable", "instanceCount": "durableAlwaysReadyInstances"}]
    for path in (FUNCTION_APP, "modules/hub/hub.bicep", "main.bicep"):
        assert param_default(template(path), "durableAlwaysReadyInstances") == 1, path
    hub_passes = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"]
    assert hub_passes["durableAlwaysReadyInstances"] == "durableAlwaysReadyInstances"
    main_passes = body(template("main.bicep")["modules"]["hub"])["params"]
    assert main_passes["durableAlwaysReadyInstances"] == "durableAlwaysReadyInstances"


def _is_scheduler_chosen(tpl: dict[str, Any], condition: Any) -> bool:
    """The condition is the template's ``useDurableTaskScheduler``: durableBackend == 'durableTaskScheduler'."""
    return condition == "useDurableTaskScheduler" and tpl["variables"][condition]["value"] == {
        "operator": {
            "type": "equals",
            "operands": {"operand_1": "durableBackend", "operand_2": "durableTaskScheduler"},
        }
    }


def _backend_settings() -> dict[str, Any]:
    tpl = template(FUNCTION_APP)
    _, appended = site_app_settings(tpl)
    assert appended == "durableBackendSettings"
    choice: dict[str, Any] = tpl["variables"]["durableBackendSettings"]["value"]["operator"]
    assert choice["type"] == "conditional"
    assert _is_scheduler_chosen(tpl, choice["operands"]["condition"])
    return choice["operands"]


def test_the_azure_storage_provider_is_the_default_and_adds_no_setting() -> None:
    for path in (FUNCTION_APP, "modules/hub/hub.bicep", "main.bicep"):
        tpl = template(path)
        assert param_default(tpl, "durableBackend") == "azureStorage", path
        assert decorator(tpl, "durableBackend", "allowed") == ["azureStorage", "durableTaskScheduler"], path
    assert _backend_settings()["false_value"] == []
    assert read_json(BICEP / "main.parameters.json")["parameters"]["durableBackend"] == {
        "value": "${ROTATION_DURABLE_BACKEND=azureStorage}"
    }


def test_the_scheduler_option_switches_host_json_s_provider_to_an_identity_connection() -> None:
    tpl = template(FUNCTION_APP)
    settings = _settings_by_name(_backend_settings()["true_value"])
    connection = tpl["variables"]["durableTaskSchedulerConnectionName"]["value"]
    assert connection == "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"
    assert settings == {
        "durableTaskSchedulerConnectionName": (
            "Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${hubClientId}"
        ),
        "AzureFunctionsJobHost__extensions__durableTask__storageProvider__type": "azureManaged",
        "AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName": (
            "durableTaskSchedulerConnectionName"
        ),
    }
    always, _ = site_app_settings(tpl)
    assert not {s["name"] for s in always} & set(settings), "a backend setting would be set twice"
    assert not {s["name"] for s in always} & {connection}
    # The overrides follow host.json's own path: extensions.durableTask.storageProvider.
    host_json = read_json(REPO / "host.json")
    assert "storageProvider" in host_json["extensions"]["durableTask"]
    # No key or secret anywhere: the scheduler takes Entra tokens only.
    assert not re.search(r"(?i)key|secret|password", repr(settings))


def test_the_scheduler_and_its_role_exist_only_when_chosen() -> None:
    hub = template("modules/hub/hub.bicep")
    module = hub["modules"]["durableTaskScheduler"]
    assert module["detail"]["path"] == "durable-task-scheduler.bicep"
    assert _is_scheduler_chosen(hub, module["config"]["condition"])
    params = body(module)["params"]
    assert dotted(params["hubPrincipalId"]) == "identity.outputs.hubPrincipalId"
    assert params["skuName"] == "durableTaskSchedulerSku"
    assert param_default(hub, "durableTaskSchedulerSku") == "Consumption"
    # The app gets the endpoint only when the scheduler exists.
    endpoint = body(hub["modules"]["functionApp"])["params"]["durableTaskSchedulerEndpoint"]["operator"]
    assert endpoint["type"] == "conditional"
    assert _is_scheduler_chosen(hub, endpoint["operands"]["condition"])
    assert dotted(endpoint["operands"]["true_value"]) == "durableTaskScheduler.outputs.endpoint"
    assert endpoint["operands"]["false_value"] == ""
    # No other template declares Durable Task resources.
    for path in BICEP.rglob("*.bicep"):
        if path.name != Path(SCHEDULER).name:
            assert "Microsoft.DurableTask" not in path.read_text(), path


def test_the_scheduler_s_task_hub_is_host_json_s_and_only_the_hub_identity_may_use_it() -> None:
    tpl = template(SCHEDULER)
    scheduler = body(only_resource(tpl, "Microsoft.DurableTask/schedulers"))
    assert scheduler["properties"]["ipAllowlist"], "an empty allow list refuses every caller"
    task_hub = body(only_resource(tpl, "Microsoft.DurableTask/schedulers/taskHubs"))
    assert task_hub["parent"] == "scheduler"
    assert task_hub["name"] == "taskHubName"
    assert _reads_host_json(SCHEDULER, tpl["variables"]["taskHubName"]["value"]) == [
        "extensions",
        "durableTask",
        "hubName",
    ]
    role = body(only_resource(tpl, "Microsoft.Authorization/roleAssignments"))
    assert role["scope"] == "taskHub"  # the task hub, not the whole scheduler
    props = role["properties"]
    role_id = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
    assert tpl["variables"][role_id]["value"] == ALL_ROLE_IDS["Durable Task Data Contributor"]
    assert props["principalId"] == "hubPrincipalId"
    assert props["principalType"] == "ServicePrincipal"
    assert dotted(tpl["outputs"]["endpoint"]["value"]) == "scheduler.properties.endpoint"
