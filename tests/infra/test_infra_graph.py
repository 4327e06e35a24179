"""The Microsoft Graph grant for the entra-app-secret target, read from the parsed Bicep.

modules/hub/graph-permissions.bicep gives the hub identity Graph's application permission
Application.ReadWrite.OwnedBy (never Application.ReadWrite.All) and, through
graph-app-owner.bicep, makes it an owner of the listed applications; main.bicep deploys it only
with grantGraphPermission. pycep-parser 0.7.1 reads the `extension` statement and the
Microsoft.Graph resource types; checkov's older parser does not (test_infra_checkov.py).
"""

from __future__ import annotations

import re
from typing import Any

from bicep_templates import (
    BICEP,
    INFRA,
    bicep_files,
    body,
    dotted,
    param_default,
    parse,
    read_json,
    resolve,
    resources_of_type,
    template,
    walk,
)

# Microsoft Graph's application id and the ids of two of its application permissions (app
# roles), the same in every tenant. Sources: the Microsoft Graph permissions reference
# (learn.microsoft.com/graph/permissions-reference) and the Graph Bicep quickstart templates
# (microsoftgraph/msgraph-bicep-types); the module's comments say where each was found.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
APPLICATION_READWRITE_OWNEDBY = "18a4783c-866b-4cc7-a460-3d5e5662c884"
APPLICATION_READWRITE_ALL = "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"

GRAPH = "modules/hub/graph-permissions.bicep"
OWNER = "modules/hub/graph-app-owner.bicep"
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _graph() -> dict[str, Any]:
    return template(GRAPH)


def _owner() -> dict[str, Any]:
    return template(OWNER)


def test_graph_modules_use_the_graph_extension() -> None:
    for relative in (GRAPH, OWNER):
        tpl = template(relative)
        assert tpl["extensions"] == {"microsoftGraphV1": {}}, relative
        assert {res["api_version"] for res in tpl["resources"].values()} == {"v1.0"}, relative


def test_bicepconfig_pins_the_graph_extension_for_every_template() -> None:
    # Bicep uses the nearest bicepconfig.json above a file: one, at infra/bicep, covers them all.
    assert sorted(INFRA.rglob("bicepconfig.json")) == [BICEP / "bicepconfig.json"]
    aliases = read_json(BICEP / "bicepconfig.json")["extensions"]
    # The dynamic types of Graph's v1.0 endpoint, a pinned GA release (the built-in extension is retired).
    assert re.fullmatch(
        r"br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:\d+\.\d+\.\d+",
        aliases["microsoftGraphV1"],
    )
    declared = {name for path in bicep_files() for name in parse(path).get("extensions", {})}
    assert declared == {"microsoftGraphV1"}
    assert declared <= set(aliases)


def test_the_app_role_is_application_readwrite_ownedby_not_all() -> None:
    tpl = _graph()
    (assignment,) = resources_of_type(tpl, "Microsoft.Graph/appRoleAssignedTo").values()
    role = resolve(tpl, body(assignment)["appRoleId"])
    assert role == APPLICATION_READWRITE_OWNEDBY
    assert role != APPLICATION_READWRITE_ALL


def test_no_other_graph_id_is_used_anywhere() -> None:
    # Every GUID in a value (comments aside) of any template: no second Graph permission sneaks in.
    for path in bicep_files():
        found = {m for node in walk(parse(path)) if isinstance(node, str) for m in _GUID.findall(node)}
        assert APPLICATION_READWRITE_ALL not in found, path.name
        if path.name.startswith("graph-"):
            assert found <= {GRAPH_APP_ID, APPLICATION_READWRITE_OWNEDBY}, f"{path.name}: {sorted(found)}"


def test_the_role_is_granted_on_graph_s_own_service_principal() -> None:
    tpl = _graph()
    (assignment,) = resources_of_type(tpl, "Microsoft.Graph/appRoleAssignedTo").values()
    assert dotted(body(assignment)["resourceId"]) == "graph.id"
    graph = tpl["resources"]["graph"]
    assert graph["type"] == "Microsoft.Graph/servicePrincipals"
    assert graph["existing"] is True  # looked up, never created or changed
    assert resolve(tpl, body(graph)["appId"]) == GRAPH_APP_ID


def test_the_role_goes_to_the_hub_identity_the_app_runs_as() -> None:
    (assignment,) = resources_of_type(_graph(), "Microsoft.Graph/appRoleAssignedTo").values()
    assert body(assignment)["principalId"] == "hubPrincipalId"
    passed = body(template("main.bicep")["modules"]["graphPermissions"])["params"]
    assert dotted(passed["hubPrincipalId"]) == "hub.outputs.hubPrincipalId"
    hub = template("modules/hub/hub.bicep")
    assert dotted(hub["outputs"]["hubPrincipalId"]["value"]) == "identity.outputs.hubPrincipalId"
    identity = template("modules/hub/identity.bicep")
    assert dotted(identity["outputs"]["hubPrincipalId"]["value"]) == "hub.properties.principalId"
    assert body(identity["resources"]["hub"])["name"] == "hubIdentityName"
    # The `hub` identity is id-rotation-hub-*, the one the Function App runs as, not the dead-letter one.
    assert body(hub["modules"]["identity"])["params"]["hubIdentityName"] == "id-rotation-hub-${resourceToken}"
    assert (
        dotted(body(hub["modules"]["functionApp"])["params"]["hubIdentityId"])
        == "identity.outputs.hubIdentityId"
    )
    assert dotted(identity["outputs"]["hubIdentityId"]["value"]) == "hub.id"


def test_the_graph_module_is_off_unless_asked_for() -> None:
    main = template("main.bicep")
    module = main["modules"]["graphPermissions"]
    assert module["detail"]["path"] == GRAPH
    assert module["config"]["condition"] == "grantGraphPermission"
    assert main["parameters"]["grantGraphPermission"]["type"] == "bool"
    assert param_default(main, "grantGraphPermission") is False
    assert param_default(main, "graphOwnedApplications") == []
    assert body(module)["params"]["ownedApplicationUniqueNames"] == "graphOwnedApplications"
    # azd passes it from the environment, off unless set (infra/README.md).
    given = read_json(BICEP / "main.parameters.json")["parameters"]
    assert given["grantGraphPermission"] == {"value": "${ROTATION_GRANT_GRAPH_PERMISSION=false}"}
    assert given["graphOwnedApplications"] == {"value": []}
    for example in ("examples/main.parameters.two-spokes.json",):
        assert "grantGraphPermission" not in read_json(BICEP / example)["parameters"]


def test_each_owned_application_is_read_before_the_owner_is_added() -> None:
    tpl = _graph()
    apps = tpl["resources"]["ownedApplications"]
    assert apps["type"] == "Microsoft.Graph/applications"
    # Looked up by uniqueName first: a wrong name fails instead of creating a new application.
    assert apps["existing"] is True
    assert apps["config"]["loop_type"]["detail"] == {
        "item_name": "uniqueName",
        "array_name": "ownedApplicationUniqueNames",
    }
    assert body(apps) == {"uniqueName": "uniqueName"}
    owner = tpl["modules"]["owner"]
    assert owner["detail"]["path"] == "graph-app-owner.bicep"
    loop = owner["config"]["loop_type"]["detail"]
    assert loop == {"item_name": "uniqueName", "index_name": "i", "array_name": "ownedApplicationUniqueNames"}
    params = body(owner)["params"]
    assert params["uniqueName"] == "uniqueName"
    assert params["ownerPrincipalId"] == "hubPrincipalId"
    # The display name written back is the one just read: the application keeps its name.
    display = params["displayName"]["operator"]
    assert display["type"] == "property_accessor"
    assert display["operands"]["operand_2"] == "displayName"
    looked_up = display["operands"]["operand_1"]["operator"]
    assert looked_up == {
        "type": "index_accessor",
        "operands": {"operand_1": "ownedApplications", "operand_2": "i"},
    }


def test_the_owner_is_appended_and_nothing_else_is_written() -> None:
    tpl = _owner()
    (application,) = resources_of_type(tpl, "Microsoft.Graph/applications").values()
    written = body(application)
    # Only the key, the required display name and the owner: no credentials, permissions or URIs.
    assert set(written) == {"uniqueName", "displayName", "owners"}
    assert written["uniqueName"] == "uniqueName"
    assert written["displayName"] == "displayName"
    # `append` keeps the application's existing owners; `replace` would remove them.
    assert written["owners"] == {"relationshipSemantics": "append", "relationships": ["ownerPrincipalId"]}


def test_the_graph_modules_create_nothing_else() -> None:
    created = {
        (relative, res["type"])
        for relative in (GRAPH, OWNER)
        for res in template(relative)["resources"].values()
        if not res["existing"]
    }
    assert created == {
        (GRAPH, "Microsoft.Graph/appRoleAssignedTo"),
        (OWNER, "Microsoft.Graph/applications"),
    }
    assert len(resources_of_type(_graph(), "Microsoft.Graph/appRoleAssignedTo")) == 1


def test_readme_says_how_to_grant_and_why_ownedby() -> None:
    readme = (INFRA / "README.md").read_text()
    for needed in (
        "Application.ReadWrite.OwnedBy",
        "Application.ReadWrite.All",
        "Privileged Role Administrator",
        "az ad app owner add --id",
        "--owner-object-id",
        "azd env set ROTATION_GRANT_GRAPH_PERMISSION true",
        "graphOwnedApplications",
        APPLICATION_READWRITE_OWNEDBY,
    ):
        assert needed in readme, needed
