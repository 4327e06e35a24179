"""What Flex Consumption accepts, and a hub that follows the cloud it is deployed in.

Each test stands for one template correction (issue 14): a maximum instance count Flex Consumption
refuses, a region where it does not run, host storage addressed for the public cloud only, and
advice to run a custom container, which Flex Consumption does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bicep_templates import (
    BICEP,
    INFRA,
    REPO,
    bicep_files,
    body,
    decorator,
    dotted,
    evaluate,
    only_resource,
    param_default,
    parse,
    site_app_settings,
    template,
    walk,
)

FUNCTION_APP = "modules/hub/function-app.bicep"


def _site() -> dict[str, Any]:
    return body(only_resource(template(FUNCTION_APP), "Microsoft.Web/sites"))


def _app_settings() -> dict[str, Any]:
    settings, _ = site_app_settings(template(FUNCTION_APP))
    return {s["name"]: s["value"] for s in settings}


# --- maximumInstanceCount --------------------------------------------------------------------------
# Flex Consumption plan, Considerations: "The lowest maximum scale is currently 40. The highest
# currently supported value is 1000." (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan)
FLEX_MIN_MAXIMUM_INSTANCES = 40
FLEX_MAX_MAXIMUM_INSTANCES = 1000


def test_maximum_instance_count_takes_only_what_flex_consumption_accepts() -> None:
    tpl = template(FUNCTION_APP)
    assert decorator(tpl, "maximumInstanceCount", "min_value") == FLEX_MIN_MAXIMUM_INSTANCES
    assert decorator(tpl, "maximumInstanceCount", "max_value") == FLEX_MAX_MAXIMUM_INSTANCES
    default = param_default(tpl, "maximumInstanceCount")
    assert FLEX_MIN_MAXIMUM_INSTANCES <= default <= FLEX_MAX_MAXIMUM_INSTANCES
    scale = _site()["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"


# --- location ---------------------------------------------------------------------------------------


def _allowed_regions() -> list[str]:
    allowed: list[str] = decorator(template("main.bicep"), "location", "allowed")
    return allowed


def _readme_regions() -> list[str]:
    """The region block of infra/README.md's Regions section: the first fenced block after it."""
    text = (INFRA / "README.md").read_text()
    section = text.split("\n## Regions\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert block, "infra/README.md, Regions: no region block"
    return block.group(1).split()


def test_hub_location_is_limited_to_flex_consumption_regions() -> None:
    allowed = _allowed_regions()
    assert len(allowed) >= 20, allowed
    assert len(set(allowed)) == len(allowed)
    assert allowed == sorted(allowed), "keep the list sorted, so a region added or missing shows"
    for region in allowed:
        assert re.fullmatch(r"[a-z]+[0-9]?", region), f"{region!r} is not an ARM region name"
    # Canary regions take early-access subscriptions only.
    assert not [r for r in allowed if r.endswith("euap")]
    assert decorator(template("main.bicep"), "location", "metadata") == {"azd": {"type": "location"}}


def test_readme_lists_the_regions_main_bicep_allows() -> None:
    assert _readme_regions() == _allowed_regions()


def test_the_readme_names_where_the_list_comes_from_and_how_to_check_it() -> None:
    section = (INFRA / "README.md").read_text().split("\n## Regions\n", 1)[1].split("\n## ", 1)[0]
    assert "az functionapp list-flexconsumption-locations" in section
    assert "flex-consumption-how-to#view-currently-supported-regions" in section
    assert re.search(r"as of [^.]*20\d\d", section), "say when the list was taken"
    main_text = (BICEP / "main.bicep").read_text()
    assert "flex-consumption-how-to#view-currently-supported-regions" in main_text


def test_worked_examples_deploy_the_hub_into_an_allowed_region() -> None:
    examples = re.findall(
        r"AZURE_LOCATION[ =]([a-z0-9]+)",
        (REPO / "README.md").read_text() + (INFRA / "README.md").read_text(),
    )
    assert examples, "no worked `azd env set AZURE_LOCATION <region>`"
    assert set(examples) <= set(_allowed_regions())


def test_the_plan_is_deployed_into_main_bicep_s_location() -> None:
    # The @allowed list checks main.bicep's parameter; it protects the plan only if that very value
    # reaches the plan, unchanged, through hub.bicep and function-app.bicep.
    hub_call = body(template("main.bicep")["modules"]["hub"])["params"]
    function_app_call = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"]
    assert hub_call["location"] == "location"
    assert function_app_call["location"] == "location"
    plan = body(only_resource(template(FUNCTION_APP), "Microsoft.Web/serverfarms"))
    assert plan["location"] == "location"
    assert _site()["location"] == "location"


# --- host storage in any cloud -----------------------------------------------------------------------
# environment().suffixes.storage of each cloud (az cloud show --name <cloud> --query suffixes.storageEndpoint).
STORAGE_SUFFIXES = {
    "AzureCloud": "core.windows.net",
    "AzureUSGovernment": "core.usgovcloudapi.net",
    "AzureChinaCloud": "core.chinacloudapi.cn",
}
SERVICES = ("blob", "queue", "table")


@pytest.mark.parametrize(("cloud", "suffix"), STORAGE_SUFFIXES.items())
def test_host_storage_uris_follow_the_deployment_cloud(cloud: str, suffix: str) -> None:
    settings = _app_settings()
    scope = {"storageAccountName": "strotationab12cd", "environment()": {"suffixes": {"storage": suffix}}}
    for service in SERVICES:
        uri = evaluate(settings[f"AzureWebJobsStorage__{service}ServiceUri"], scope, template(FUNCTION_APP))
        assert uri == f"https://strotationab12cd.{service}.{suffix}", f"{cloud}: {uri}"


def test_host_storage_is_not_addressed_by_account_name() -> None:
    # The host resolves __accountName to *.core.windows.net whatever the cloud. App setting names
    # are case-insensitive.
    names = {name.lower() for name in _app_settings()}
    assert "azurewebjobsstorage__accountname" not in names
    assert {f"azurewebjobsstorage__{s}serviceuri" for s in SERVICES} <= names
    assert {"azurewebjobsstorage__credential", "azurewebjobsstorage__clientid"} <= names


def test_durable_task_hub_uses_the_host_storage_connection() -> None:
    # The Azure Storage provider takes the AzureWebJobsStorage connection unless host.json names
    # another; it needs blobs, queues and tables, which the three URIs above cover.
    provider = json.loads((REPO / "host.json").read_text())["extensions"]["durableTask"]["storageProvider"]
    assert not {"connectionName", "connectionStringName"} & set(provider), provider


def test_deployment_package_is_read_through_the_account_s_own_endpoint() -> None:
    storage = _site()["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["value"] == "${storageBlobEndpoint}${deploymentContainerName}"
    function_app_call = body(template("modules/hub/hub.bicep")["modules"]["functionApp"])["params"]
    assert dotted(function_app_call["storageBlobEndpoint"]) == "storage.outputs.blobEndpoint"
    output = template("modules/hub/storage.bicep")["outputs"]["blobEndpoint"]["value"]
    assert dotted(output) == "account.properties.primaryEndpoints.blob"


# Hosts of the public cloud, which environment() gives per cloud instead.
_PUBLIC_CLOUD_HOSTS = re.compile(
    r"core\.windows\.net|vault\.azure\.net|management\.azure\.com|login\.microsoftonline\.com"
    r"|graph\.microsoft\.com|servicebus\.windows\.net|database\.windows\.net",
    re.IGNORECASE,
)
ALL_BICEP = bicep_files()


@pytest.mark.parametrize("path", ALL_BICEP, ids=[str(p.relative_to(BICEP)) for p in ALL_BICEP])
def test_no_template_hard_codes_a_public_cloud_host(path: Path) -> None:
    # Parsed values only: comments may cite a public page.
    hard_coded = [v for v in walk(parse(path)) if isinstance(v, str) and _PUBLIC_CLOUD_HOSTS.search(v)]
    assert not hard_coded, f"{path.name}: {hard_coded}"


# --- no custom container -----------------------------------------------------------------------------


def test_the_app_is_a_code_package_not_a_container() -> None:
    site = _site()
    assert site["kind"] == "functionapp,linux", "a ',container' kind is a custom image"
    assert "linuxFxVersion" not in site["properties"]["siteConfig"], "DOCKER|<image> is a custom image"
    assert site["properties"]["functionAppConfig"]["runtime"]["name"] == "python"


_CONTAINER_ADVICE = re.compile(
    r"custom (?:container|image)|container image|docker ?(?:file|image|container)", re.IGNORECASE
)
_NEGATION = re.compile(r"\b(?:no|not|nothing|never|without|none|cannot)\b|n't\b", re.IGNORECASE)
# One clause of a sentence: a negation elsewhere in the sentence says nothing about this one.
_CLAUSE_END = re.compile(r"[.;:,!?](?:\s+|$)|\n\s*\n")


def container_advice(text: str) -> list[str]:
    """The clauses of ``text`` that speak of a custom container or image without negating it."""
    clauses = _CLAUSE_END.split(" ".join(text.split("\n")).replace("  ", " "))
    return [c.strip() for c in clauses if _CONTAINER_ADVICE.search(c) and not _NEGATION.search(c)]


# The sentence the README carried until commit 6d79c39 (quoted from git history), and ones it
# carries now that say the opposite.
OLD_ADVICE = (
    "**PostgreSQL from Azure**: the `postgresql-login` target needs the psqlODBC driver on the\n"
    "worker. The stock Python images of Azure Functions are not known to ship it (not checked from\n"
    "here); deploy with a custom container that installs `odbc-postgresql`, or add a target on a\n"
    "driver that ships as a wheel."
)
CORRECT_STATEMENTS = [
    "**Database targets from Azure** need no custom image: psycopg's and PyMySQL's wheels carry what they need.",
    "Every driver runs from its wheel: nothing needs a custom image (`tests/deploy` proves it).",
    "Flex Consumption runs no custom container image, so every dependency is a wheel.",
]


def test_the_advice_check_finds_the_old_readme_sentence_and_passes_the_correct_ones() -> None:
    assert container_advice(OLD_ADVICE) == ["deploy with a custom container that installs `odbc-postgresql`"]
    for statement in CORRECT_STATEMENTS:
        assert container_advice(statement) == [], statement


DOCUMENTS = sorted(
    [REPO / "README.md", INFRA / "README.md", *REPO.glob("docs/**/*.md"), *REPO.glob("local/*/README.md")]
)


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(REPO)) for p in DOCUMENTS])
def test_no_document_advises_a_custom_container(path: Path) -> None:
    assert container_advice(path.read_text()) == [], (
        f"{path.relative_to(REPO)}: Flex Consumption runs no custom image"
    )


def test_the_documents_say_flex_consumption_runs_no_custom_image() -> None:
    infra_readme = " ".join((INFRA / "README.md").read_text().split())
    assert "Flex Consumption runs no custom container image" in infra_readme
