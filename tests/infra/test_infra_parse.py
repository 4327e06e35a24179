"""Every Bicep file parses, and the files fit together the way a compiler would check.

No Bicep compiler installs on these machines, so besides the syntax (pycep-parser) this checks
what the compiler's linker would: module paths, the parameters passed to each module against
the parameters it declares, the outputs read from modules, the files read with loadJsonContent
and the parameters files against their templates.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from bicep_templates import (
    BICEP,
    REPO,
    bicep_files,
    body,
    load_json_contents,
    module_path,
    parse,
    parse_text,
    read_json,
)
from lark.exceptions import LarkError

ALL_BICEP = bicep_files()


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def test_the_infra_is_there() -> None:
    names = {str(p.relative_to(BICEP)) for p in ALL_BICEP}
    assert {
        "main.bicep",
        "spokes.bicep",
        "modules/spoke/vault.bicep",
        "policy/subscription.bicep",
        "policy/management-group.bicep",
    } <= names


@pytest.mark.parametrize("path", ALL_BICEP, ids=_ids(ALL_BICEP))
def test_bicep_file_parses(path: Path) -> None:
    tpl = parse(path)
    assert tpl.get("resources") or tpl.get("modules"), f"{path.name} declares nothing"


@pytest.mark.parametrize(
    "broken",
    [
        # An unclosed resource body.
        "param name string\nresource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n"
        "  name: name\n  location: 'westeurope'\n",
        # A property without a value.
        "resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {\n  name:\n}\n",
        # An unterminated string.
        "param name string = 'rotation-hub\n",
    ],
    ids=["unclosed-brace", "missing-value", "unterminated-string"],
)
def test_broken_bicep_is_rejected(broken: str) -> None:
    with pytest.raises((LarkError, ValueError)):
        parse_text(broken)


def test_a_real_file_broken_by_one_character_is_rejected() -> None:
    text = (BICEP / "modules" / "spoke" / "vault.bicep").read_text()
    parse_text(text)
    cut = text.rindex("}")  # the last closing brace
    with pytest.raises((LarkError, ValueError)):
        parse_text(text[:cut] + text[cut + 1 :])


def _module_calls() -> list[tuple[Path, str, dict[str, Any]]]:
    calls = []
    for path in ALL_BICEP:
        for name, decl in parse(path).get("modules", {}).items():
            calls.append((path, name, decl))
    return calls


MODULE_CALLS = _module_calls()


def test_modules_are_called() -> None:
    # Guards the parametrised tests below against silently running over nothing.
    assert len(MODULE_CALLS) >= 8


@pytest.mark.parametrize(
    ("owner", "name", "decl"),
    MODULE_CALLS,
    ids=[f"{p.relative_to(BICEP)}:{n}" for p, n, _ in MODULE_CALLS],
)
def test_module_call_matches_the_module(owner: Path, name: str, decl: dict[str, Any]) -> None:
    assert decl["type"] == "local"
    target = module_path(owner, decl)
    assert target.is_file(), f"{owner.name}: module {name} points at missing {target}"
    declared = parse(target)["parameters"]
    passed = set(body(decl).get("params", {}))
    required = {p for p, spec in declared.items() if "default" not in spec}
    assert passed <= set(declared), f"{name} passes undeclared {sorted(passed - set(declared))}"
    assert required <= passed, f"{name} misses required {sorted(required - passed)}"


_OUTPUT_READ = re.compile(r"\b(\w+)(?:\[\w+\])?\.outputs\.(\w+)")


@pytest.mark.parametrize("path", ALL_BICEP, ids=_ids(ALL_BICEP))
def test_module_outputs_read_exist(path: Path) -> None:
    modules = parse(path).get("modules", {})
    for symbol, output in _OUTPUT_READ.findall(path.read_text()):
        assert symbol in modules, f"{path.name} reads outputs of {symbol}, which is not a module"
        outputs = parse(module_path(path, modules[symbol])).get("outputs", {})
        assert output in outputs, f"{path.name}: module {symbol} has no output {output}"


@pytest.mark.parametrize("path", ALL_BICEP, ids=_ids(ALL_BICEP))
def test_loaded_json_files_exist_and_are_json(path: Path) -> None:
    for loaded in load_json_contents(path):
        assert loaded.is_file(), f"{path.name} loads missing {loaded}"
        read_json(loaded)


PARAMETER_FILES = {
    "main.parameters.json": "main.bicep",
    "examples/main.parameters.two-spokes.json": "main.bicep",
    "examples/spokes.parameters.json": "spokes.bicep",
    "examples/policy.parameters.json": "policy/subscription.bicep",
}


@pytest.mark.parametrize(("params_file", "template_file"), PARAMETER_FILES.items())
def test_parameters_file_fits_its_template(params_file: str, template_file: str) -> None:
    given = read_json(BICEP / params_file)["parameters"]
    declared = parse(BICEP / template_file)["parameters"]
    required = {p for p, spec in declared.items() if "default" not in spec}
    assert set(given) <= set(declared), f"{params_file} sets undeclared {sorted(set(given) - set(declared))}"
    assert required <= set(given), f"{params_file} misses required {sorted(required - set(given))}"
    for name, spec in given.items():
        assert set(spec) == {"value"}, f"{params_file}: {name} must be {{'value': ...}}"


def test_every_parameters_file_is_checked() -> None:
    # bicepconfig.json is Bicep's own configuration (test_infra_graph.py checks it).
    on_disk = {str(p.relative_to(BICEP)) for p in BICEP.rglob("*.json") if p.name != "bicepconfig.json"}
    assert on_disk == set(PARAMETER_FILES)


def test_example_spokes_carry_what_the_spoke_loop_reads() -> None:
    for params_file in ("examples/main.parameters.two-spokes.json", "examples/spokes.parameters.json"):
        spokes = read_json(BICEP / params_file)["parameters"]["spokes"]["value"]
        assert spokes, f"{params_file} has no worked example"
        for spoke in spokes:
            assert {"subscriptionId", "resourceGroupName", "vaultName", "location"} <= set(spoke)
            for arm_id in spoke.get("consumerAppIds", []) + spoke.get("storageAccountKeyTargetIds", []):
                # vault.bicep scopes each role module by segments 2 and 4 of the id.
                parts = arm_id.split("/")
                assert parts[1] == "subscriptions", arm_id
                assert parts[3] == "resourceGroups", arm_id
