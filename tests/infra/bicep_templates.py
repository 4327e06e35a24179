"""Reading the Bicep templates under infra/ without a Bicep compiler.

pycep-parser turns a .bicep file into nested dicts. In its output a string is either a literal or
the name of a parameter, variable or resource (``"resourceId": "eventFunctionResourceId"``); the
helpers here resolve names where a test needs the value behind them. Conditional and looped
resources and modules wrap their body in ``{"condition"|"loop_type": ..., "config": {...}}``;
``body()`` unwraps that.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BICEP = INFRA / "bicep"
POLICY_JSON = INFRA / "policy"

Template = dict[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.cache
def _parser() -> BicepParser:
    # Lark's grammar cache is a shared temp file; building the grammar per process keeps
    # parallel test workers from racing on it.
    return BicepParser(cache=False)


@functools.cache
def parse(path: Path) -> Template:
    """Parse one .bicep file.

    Raises:
        ValueError, lark.exceptions.LarkError: the text is not valid Bicep.
    """
    return parse_text(path.read_text())


def parse_text(text: str) -> Template:
    result: Template = dict(_parser().parse(text=text))
    return result


def template(relative: str) -> Template:
    """The parsed template at ``infra/bicep/<relative>``."""
    return parse(BICEP / relative)


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The properties of a resource or module, whether or not it is conditional or looped."""
    config: dict[str, Any] = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def resources_of_type(tpl: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    """Symbolic name -> declaration of every non-``existing`` resource of the type."""
    return {
        name: res
        for name, res in tpl.get("resources", {}).items()
        if res["type"] == resource_type and not res["existing"]
    }


def only_resource(tpl: Template, resource_type: str) -> dict[str, Any]:
    found = resources_of_type(tpl, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))


def resolve(tpl: Template, value: Any) -> Any:
    """A variable's value for its name; a parameter's name stays as it is (it has no value yet)."""
    if isinstance(value, str) and value in tpl.get("variables", {}):
        return tpl["variables"][value]["value"]
    return value


def param_default(tpl: Template, name: str) -> Any:
    return tpl["parameters"][name].get("default")


def decorator(tpl: Template, param: str, kind: str) -> Any:
    for dec in tpl["parameters"][param]["decorators"]:
        if dec["type"] == kind:
            return dec["argument"]
    raise KeyError(f"parameter {param} has no @{kind} decorator")


def dotted(expr: Any) -> str:
    """``a.b.c`` for a property-access chain (pycep nests it), a plain name as it is."""
    if isinstance(expr, str):
        return expr
    operator = expr["operator"]
    assert operator["type"] == "property_accessor", operator
    return f"{dotted(operator['operands']['operand_1'])}.{dotted(operator['operands']['operand_2'])}"


def walk(node: Any) -> Iterator[Any]:
    """Every dict, list and scalar inside a parsed template, depth first."""
    yield node
    if isinstance(node, dict):
        for child in node.values():
            yield from walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child)


def module_path(owner: Path, declaration: dict[str, Any]) -> Path:
    relative: str = declaration["detail"]["path"]
    return (owner.parent / relative).resolve()


_LOAD_JSON = re.compile(r"loadJsonContent\('([^']+)'\)")


def load_json_contents(path: Path) -> list[Path]:
    """Files a template reads with loadJsonContent, resolved against the template's folder."""
    return [(path.parent / rel).resolve() for rel in _LOAD_JSON.findall(path.read_text())]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# Built-in role definition ids (the same in every tenant), by role name.
ALL_ROLE_IDS = {
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Website Contributor": "de139f84-1756-47ae-9be6-808fbbe84772",
    "Storage Account Key Operator Service Role": "81a9662b-bebf-436f-a333-f67b29880f12",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "Durable Task Data Contributor": "0ad04412-c4d5-4796-b79c-f76d14c8d402",
}


def site_app_settings(tpl: Template) -> tuple[list[dict[str, Any]], str | None]:
    """The Function App's app settings: the list always set, and the variable appended to it.

    function-app.bicep writes ``appSettings: concat([...], durableBackendSettings)``: the inline list
    is what every deployment gets, the variable holds the settings of the chosen durable backend.
    """
    site = body(only_resource(tpl, "Microsoft.Web/sites"))
    value = site["properties"]["siteConfig"]["appSettings"]
    if isinstance(value, list):
        return value, None
    concat = value["function"]
    assert concat["type"] == "concat", concat
    always, appended = concat["parameters"].values()
    assert isinstance(always, list), concat
    assert isinstance(appended, str), concat
    return always, appended


# --- Evaluating the expressions that names and URLs are built from ---------------------------------
#
# A test that reads `'consumer-${uniqueString(appId)}'` as text can only say that it looks right;
# evaluating it for two spokes says whether the two deployment names collide. This evaluates the
# small part of Bicep those expressions use: literals, names bound by the caller or declared as
# variables, string interpolation, property access, uniqueString() and the deployment functions
# resourceGroup(), subscription() and environment(), whose values the caller gives.

_DEPLOYMENT_FUNCTIONS = {
    "resource_group": "resourceGroup()",
    "subscription": "subscription()",
    "environment": "environment()",
}


class UnsupportedExpression(ValueError):
    """The expression uses Bicep the evaluator does not model; the test must say what it means."""


def unique_string(*parts: str) -> str:
    """A stand-in for ARM's uniqueString(): deterministic, 13 characters, different inputs differ.

    ARM's own hash is not public; the tests compare names with each other, never with Azure's.
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:13]


def _interpolation_parts(text: str) -> list[tuple[bool, str]]:
    """``'a-${b}-c'`` as [(False, 'a-'), (True, 'b'), (False, '-c')], braces inside ${} balanced."""
    parts: list[tuple[bool, str]] = []
    i = 0
    while (start := text.find("${", i)) != -1:
        parts.append((False, text[i:start]))
        depth, j = 1, start + 2
        while depth:
            if j >= len(text):
                raise UnsupportedExpression(f"unclosed interpolation in {text!r}")
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        parts.append((True, text[start + 2 : j - 1]))
        i = j
    parts.append((False, text[i:]))
    return parts


def _parse_expression(source: str) -> Any:
    return parse_text(f"var expression = {source}\n")["variables"]["expression"]["value"]


def _accessor_path(node: Any) -> list[str]:
    """``suffixes.storage`` as ['suffixes', 'storage'] (pycep nests the right-hand side of a chain)."""
    if isinstance(node, str):
        return [node]
    operator = node.get("operator", {}) if isinstance(node, dict) else {}
    if operator.get("type") != "property_accessor":
        raise UnsupportedExpression(f"property name {node!r}")
    operands = operator["operands"]
    return _accessor_path(operands["operand_1"]) + _accessor_path(operands["operand_2"])


def evaluate(expr: Any, scope: dict[str, Any], tpl: Template | None = None) -> Any:
    """The value of a parsed Bicep expression.

    ``scope`` binds names (parameters, loop items) and the deployment functions by their call,
    e.g. ``{"vaultName": "kv-a", "resourceGroup()": {"id": ..., "name": ...}}``; names not bound
    there are looked up among ``tpl``'s variables. A string that names nothing is a literal.

    Raises:
        UnsupportedExpression: the expression uses something this evaluator does not model.
    """
    if isinstance(expr, bool | int) or expr is None:
        return expr
    if isinstance(expr, str):
        if expr in scope:
            return scope[expr]
        if tpl is not None and expr in tpl.get("variables", {}):
            return evaluate(tpl["variables"][expr]["value"], scope, tpl)
        if "${" in expr:
            return "".join(
                str(evaluate(_parse_expression(part), scope, tpl)) if is_code else part
                for is_code, part in _interpolation_parts(expr)
            )
        return expr
    if isinstance(expr, list):
        return [evaluate(item, scope, tpl) for item in expr]
    if "function" in expr:
        function = expr["function"]
        kind, params = function["type"], function.get("parameters") or {}
        if kind == "unique_string":
            return unique_string(*(str(evaluate(p, scope, tpl)) for p in params.values()))
        if kind in _DEPLOYMENT_FUNCTIONS and not any(params.values()):
            call = _DEPLOYMENT_FUNCTIONS[kind]
            if call not in scope:
                raise UnsupportedExpression(f"{call} is used but the test gave no value for it")
            return scope[call]
        raise UnsupportedExpression(f"function {kind}")
    operator = expr.get("operator", {})
    if operator.get("type") == "property_accessor":
        value = evaluate(operator["operands"]["operand_1"], scope, tpl)
        for name in _accessor_path(operator["operands"]["operand_2"]):
            value = value[name]
        return value
    raise UnsupportedExpression(repr(expr)[:200])
