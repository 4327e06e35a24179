"""HTTP triggers at ``/<routePrefix>/<route>``, with the real ``HttpRequest``/``HttpResponse`` types.

Route templates follow ASP.NET Core routing as the Functions host uses it: ``{name}``,
``{name?}`` (optional, last), ``{name:int}``-style constraints, ``{*rest}`` catch-all; literals
match case-insensitively; more literal routes win over parameter routes. A route that matches
with the wrong method is a 404, as in the real host.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from aiohttp import web
from azure.functions import meta
from azure.functions.http import HttpRequestConverter, HttpResponseConverter

from local.host.auth import Authorizer, unauthorized
from local.host.function_index import FunctionEntry
from local.host.invoker import Invoker

logger = logging.getLogger(__name__)

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "alpha": r"[A-Za-z]+",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[^/]+",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")


class RouteTemplateError(ValueError):
    """A route template this host cannot parse; the message names the template."""


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: re.Pattern[str]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


def _parameter_regex(spec: str, template: str) -> tuple[str, str, bool, int]:
    """(name, regex, optional, precedence rank) of one ``{...}`` parameter."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    optional = spec.endswith("?")
    spec = spec.rstrip("?")
    if "=" in spec:  # a default value makes the parameter optional
        spec = spec.split("=", 1)[0]
        optional = True
    name, _, constraint_text = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RouteTemplateError(f"route '{template}': invalid parameter name '{name}'")
    regex = r".+" if catch_all else r"[^/]+"
    rank = 4 if catch_all else (3 if optional else 2)
    for constraint in filter(None, constraint_text.split(":")):
        base = constraint.split("(", 1)[0].lower()
        if base in _CONSTRAINTS:
            regex = _CONSTRAINTS[base]
            rank = min(rank, 1)
        elif base == "regex":
            regex = constraint[constraint.index("(") + 1 : constraint.rindex(")")]
            rank = min(rank, 1)
        # length/min/max and similar constraints only narrow a match; they are not enforced here.
    return name, regex, optional or catch_all, rank


def compile_route(template: str) -> RouteTemplate:
    """Compile a route template; raises RouteTemplateError for templates it cannot parse."""
    cleaned = template.strip().strip("/")
    parts = [] if not cleaned else cleaned.split("/")
    regex = ""
    precedence: list[int] = []
    for position, segment in enumerate(parts):
        separator = "" if position == 0 else "/"
        params = list(_PARAMETER.finditer(segment))
        if not params:
            regex += separator + re.escape(segment)
            precedence.append(0)
            continue
        if len(params) == 1 and params[0].group(0) == segment:
            name, pattern, optional, rank = _parameter_regex(params[0].group(1), template)
            if optional:
                regex += f"(?:{separator}(?P<{name}>{pattern}))?"
            else:
                regex += f"{separator}(?P<{name}>{pattern})"
            precedence.append(rank)
            continue
        # A segment mixing literals and parameters, e.g. "file.{ext}".
        piece = ""
        cursor = 0
        for param in params:
            piece += re.escape(segment[cursor : param.start()])
            name, pattern, _, _ = _parameter_regex(param.group(1), template)
            piece += f"(?P<{name}>{pattern.replace('[^/]+', '[^/]+?')})"
            cursor = param.end()
        piece += re.escape(segment[cursor:])
        regex += separator + piece
        precedence.append(1)
    try:
        pattern_obj = re.compile(f"^{regex}/?$", re.IGNORECASE)
    except re.error as exc:
        raise RouteTemplateError(f"route '{template}': {exc}") from exc
    return RouteTemplate(template, pattern_obj, (*precedence, 5))


@dataclass(frozen=True)
class HttpRoute:
    entry: FunctionEntry
    template: RouteTemplate
    methods: frozenset[str] | None
    auth_level: str


class HttpTriggerRouter:
    """Finds the function for a path and method, and calls it."""

    def __init__(self, entries: list[FunctionEntry], *, invoker: Invoker, authorizer: Authorizer) -> None:
        routes = []
        for entry in entries:
            template = compile_route(entry.trigger.get("route") or entry.name)
            methods = entry.trigger.get("methods")
            routes.append(
                HttpRoute(
                    entry=entry,
                    template=template,
                    methods=frozenset(str(method).upper() for method in methods) if methods else None,
                    auth_level=str(entry.trigger.get("authLevel") or "function").lower(),
                )
            )
        self.routes = sorted(routes, key=lambda route: route.template.precedence)
        self.invoker = invoker
        self.authorizer = authorizer

    def resolve(self, path: str, method: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            params = route.template.match(path)
            if params is None:
                continue
            if route.methods is not None and method.upper() not in route.methods:
                continue
            return route, params
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("tail", "")
        resolved = self.resolve(path, request.method)
        if resolved is None:
            return web.Response(status=404)
        route, params = resolved
        if not self.authorizer.allows(request, route.auth_level):
            return unauthorized()
        body = await request.read()
        trigger_value = HttpRequestConverter.decode(
            _request_datum(request, params, body), trigger_metadata={}
        )
        started = time.perf_counter()
        try:
            result = await self.invoker.call(route.entry, trigger_value)
            response = _to_response(result)
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            logger.info(
                "http %s %s %s -> 500, raised %s (%.1f ms)",
                route.entry.name,
                request.method,
                request.path,
                type(exc).__name__,
                elapsed,
            )
            return web.Response(status=500)
        elapsed = (time.perf_counter() - started) * 1000
        logger.info(
            "http %s %s %s -> %d (%.1f ms)",
            route.entry.name,
            request.method,
            request.path,
            response.status,
            elapsed,
        )
        return response


def _request_datum(request: web.Request, route_params: dict[str, str], body: bytes) -> meta.Datum:
    headers: dict[str, str] = {}
    for name in request.headers:
        lower = name.lower()
        if lower not in headers:
            headers[lower] = ", ".join(request.headers.getall(name))
    query = {name: request.query.getall(name)[-1] for name in request.query}
    return meta.Datum(
        type="http",
        value={
            "method": meta.Datum(type="string", value=request.method),
            "url": meta.Datum(type="string", value=str(request.url)),
            "headers": {name: meta.Datum(type="string", value=value) for name, value in headers.items()},
            "query": {name: meta.Datum(type="string", value=value) for name, value in query.items()},
            "params": {name: meta.Datum(type="string", value=value) for name, value in route_params.items()},
            "body": meta.Datum(type="bytes", value=body),
        },
    )


def _to_response(result: Any) -> web.Response:
    """Encode the function's return value with the SDK's converter and turn it into an HTTP response."""
    if result is None:
        return web.Response(status=204)
    datum = HttpResponseConverter.encode(result, expected_type=None)
    if datum is None:
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not an HttpResponse or str")
    if datum.type == "string":
        return web.Response(status=200, text=datum.value, content_type="text/plain", charset="utf-8")
    value = datum.value
    status = int(value["status_code"].value)
    response = web.Response(status=status, body=value["body"].value or b"")
    for name, header in value["headers"].items():
        response.headers[name] = header.value
    for cookie in value.get("cookies") or []:
        if isinstance(cookie, SimpleCookie):
            for morsel in cookie.values():
                response.headers.add("Set-Cookie", morsel.OutputString())
    return response
