"""azure.yaml, main.bicep and main.parameters.json fit azd's conventions, and the README matches them."""

from __future__ import annotations

import re
from typing import Any

import yaml
from bicep_templates import BICEP, INFRA, REPO, body, decorator, only_resource, read_json, template


def _azure_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "azure.yaml").read_text())
    return loaded


def test_azure_yaml_provisions_main_bicep() -> None:
    infra = _azure_yaml()["infra"]
    assert infra["provider"] == "bicep"
    assert (REPO / infra["path"] / f"{infra['module']}.bicep") == BICEP / "main.bicep"


def test_azure_yaml_deploys_the_repo_root_as_a_python_function_app() -> None:
    services = _azure_yaml()["services"]
    assert list(services) == ["hub"]
    hub = services["hub"]
    assert hub == {"project": ".", "language": "python", "host": "function"}
    for needed in ("function_app.py", "host.json", "requirements.txt"):
        assert (REPO / needed).is_file(), f"azd deploys the root, which has no {needed}"


def test_azd_finds_the_function_app_by_its_service_tag() -> None:
    (service,) = _azure_yaml()["services"]
    site = body(only_resource(template("modules/hub/function-app.bicep"), "Microsoft.Web/sites"))
    union = site["tags"]["function"]
    assert union["type"] == "union"
    # pycep keeps the quotes of a quoted key.
    added = [
        {k.strip("'"): v for k, v in arg.items()}
        for arg in union["parameters"].values()
        if isinstance(arg, dict)
    ]
    assert {"azd-service-name": service} in added


def test_main_bicep_takes_azd_s_environment_and_location() -> None:
    main = template("main.bicep")
    assert main["globals"]["scope"]["value"] == "subscription"
    assert decorator(main, "location", "metadata") == {"azd": {"type": "location"}}
    given = read_json(BICEP / "main.parameters.json")["parameters"]
    assert given["environmentName"] == {"value": "${AZURE_ENV_NAME}"}
    assert given["location"] == {"value": "${AZURE_LOCATION}"}
    # Off until the code is deployed (infra/README.md, "The order that matters").
    assert given["connectSpokeEvents"] == {"value": "${ROTATION_CONNECT_SPOKE_EVENTS=false}"}


def test_the_deployment_package_leaves_out_what_azure_does_not_run() -> None:
    ignored = (REPO / ".funcignore").read_text().split()
    for folder in ("infra/", "tests/", "local/"):
        assert folder in ignored


def test_readme_names_only_real_outputs_files_and_variables() -> None:
    readme = (INFRA / "README.md").read_text()
    outputs = set(template("main.bicep")["outputs"])
    # The azd environment variables main.parameters.json reads (`${NAME}`, `${NAME=default}`).
    azd_inputs = set(re.findall(r"\$\{(\w+)", (BICEP / "main.parameters.json").read_text()))
    assert {"ROTATION_CONNECT_SPOKE_EVENTS", "ROTATION_GRANT_GRAPH_PERMISSION"} <= azd_inputs
    for name in set(re.findall(r"\b((?:ROTATION|AZURE)_[A-Z_]+)\b", readme)):
        assert (
            name in outputs
            or name in azd_inputs
            or name.startswith(("ROTATION_ALLOWED", "ROTATION_SWEEP", "AZURE_CLIENT_ID", "AZURE_LOCATION"))
        ), f"README names {name}, which main.bicep does not output and azd does not pass"
    for path in set(re.findall(r"infra/[\w./-]+\.(?:bicep|json|txt)", readme)):
        assert (REPO / path).is_file(), f"README names missing {path}"
    # The order: code before event subscriptions, events before policies.
    steps = [
        readme.index(s) for s in ("azd up", "ROTATION_CONNECT_SPOKE_EVENTS true", "policy/subscription.bicep")
    ]
    assert steps == sorted(steps)
