"""A structural check of Azure Policy definitions, after the documented definition structure.

It checks what can be checked offline: the shape of the definition, the condition grammar
(logical operators, one field/value/count per leaf, one known operator), the effect being a
parameter with its allowed values, AuditIfNotExists details, and that parameters used and
declared agree. Alias names themselves can only be checked against Azure (Get-AzPolicyAlias).
"""

from __future__ import annotations

import re
from typing import Any

MODES = {"All", "Indexed", "Microsoft.KeyVault.Data", "Microsoft.Kubernetes.Data", "Microsoft.Network.Data"}
PARAMETER_TYPES = {"String", "Array", "Object", "Boolean", "Integer", "Float", "DateTime"}
OPERATORS = {
    "equals", "notEquals", "like", "notLike", "match", "matchInsensitively", "notMatch",
    "notMatchInsensitively", "contains", "notContains", "in", "notIn", "containsKey",
    "notContainsKey", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists",
}  # fmt: skip
EFFECTS_WITH_DETAILS = {"AuditIfNotExists", "DeployIfNotExists"}
_PARAMETER_USE = re.compile(r"parameters\('([^']+)'\)")


class PolicyShapeError(ValueError):
    """The definition does not have the documented shape; the message says where."""


def _fail(where: str, message: str) -> None:
    raise PolicyShapeError(f"{where}: {message}")


def check_condition(node: Any, where: str = "if") -> None:
    """Raise PolicyShapeError unless ``node`` is a valid policy condition."""
    if not isinstance(node, dict) or not node:
        _fail(where, f"a condition must be a non-empty object, got {node!r}")
    logical = {"allOf", "anyOf", "not"} & set(node)
    if logical:
        if len(node) != 1:
            _fail(where, f"a logical operator stands alone, got keys {sorted(node)}")
        (key,) = logical
        if key == "not":
            check_condition(node["not"], f"{where}.not")
            return
        children = node[key]
        if not isinstance(children, list) or not children:
            _fail(where, f"{key} takes a non-empty list")
        for i, child in enumerate(children):
            check_condition(child, f"{where}.{key}[{i}]")
        return
    subjects = {"field", "value", "count"} & set(node)
    if len(subjects) != 1:
        _fail(where, f"a condition has exactly one of field/value/count, got {sorted(node)}")
    operators = set(node) - subjects
    if len(operators) != 1 or not operators <= OPERATORS:
        _fail(where, f"a condition has exactly one known operator, got {sorted(operators)}")
    if "count" in node:
        count = node["count"]
        if not isinstance(count, dict) or not ({"field", "value"} & set(count)):
            _fail(where, "count takes a field (an [*] alias) or a value")
        if "field" in count and "[*]" not in count["field"]:
            _fail(where, f"count.field must be an array alias ([*]), got {count['field']!r}")
        if "where" in count:
            check_condition(count["where"], f"{where}.count.where")


def _check_parameters(parameters: Any) -> None:
    if not isinstance(parameters, dict):
        _fail("parameters", "must be an object")
    for name, spec in parameters.items():
        if spec.get("type") not in PARAMETER_TYPES:
            _fail(f"parameters.{name}", f"type must be one of {sorted(PARAMETER_TYPES)}")
        if "displayName" not in spec.get("metadata", {}):
            _fail(f"parameters.{name}", "metadata.displayName is what the portal shows")
        allowed = spec.get("allowedValues")
        if allowed is not None and "defaultValue" in spec and spec["defaultValue"] not in allowed:
            _fail(f"parameters.{name}", "defaultValue is not among allowedValues")


def check_definition(definition: Any) -> None:
    """Raise PolicyShapeError unless ``definition`` ({name, properties}) is a valid custom policy."""
    if not isinstance(definition, dict) or set(definition) != {"name", "properties"}:
        _fail("definition", "must be {name, properties}")
    props = definition["properties"]
    for key in ("displayName", "description", "policyType", "mode", "metadata", "parameters", "policyRule"):
        if key not in props:
            _fail("properties", f"missing {key}")
    if props["policyType"] != "Custom":
        _fail("policyType", "a definition we deploy is Custom")
    if props["mode"] not in MODES:
        _fail("mode", f"unknown mode {props['mode']!r}")
    if not {"category", "version"} <= set(props["metadata"]):
        _fail("metadata", "needs category and version")
    parameters = props["parameters"]
    _check_parameters(parameters)
    rule = props["policyRule"]
    if not isinstance(rule, dict) or set(rule) != {"if", "then"}:
        _fail("policyRule", "must be exactly {if, then}")
    check_condition(rule["if"])
    then = rule["then"]
    effect = then.get("effect")
    used = _PARAMETER_USE.fullmatch(effect.strip("[]")) if isinstance(effect, str) else None
    if not used or used.group(1) != "effect":
        _fail("then.effect", "must be [parameters('effect')] so an assignment can switch it")
    allowed = parameters.get("effect", {}).get("allowedValues", [])
    if "Disabled" not in allowed:
        _fail("parameters.effect", "allowedValues should include Disabled")
    if set(allowed) & EFFECTS_WITH_DETAILS:
        details = then.get("details")
        if not isinstance(details, dict) or "type" not in details:
            _fail("then.details", "AuditIfNotExists needs details.type")
        if "existenceCondition" not in details:
            _fail("then.details", "needs an existenceCondition, else any resource of the type satisfies it")
        check_condition(details["existenceCondition"], "then.details.existenceCondition")
        if details.get("existenceScope", "ResourceGroup") not in {"ResourceGroup", "Subscription"}:
            _fail("then.details.existenceScope", "is ResourceGroup or Subscription")
        prefix = details["type"] + "/"
        for node in _conditions(details["existenceCondition"]):
            field = node.get("field")
            if isinstance(field, str) and not field.startswith("[") and not field.startswith(prefix):
                _fail("existenceCondition", f"{field!r} is not an alias of {details['type']}")
    elif "details" in then:
        _fail("then.details", "only *IfNotExists effects take details")
    text = repr(rule)
    used_names = set(_PARAMETER_USE.findall(text))
    if used_names != set(parameters):
        _fail("parameters", f"declared {sorted(parameters)} but used {sorted(used_names)}")


def _conditions(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_conditions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_conditions(value))
    return found
