"""Bodies in the shapes Key Vault, Azure Resource Manager, Microsoft Graph and Entra ID send them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from aiohttp import web

JSON = "application/json; charset=utf-8"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def keyvault_error(
    status: int,
    code: str,
    message: str,
    *,
    inner: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    all_headers = {"x-ms-request-id": str(uuid.uuid4()), **(headers or {})}
    return json_response(status, {"error": error}, all_headers)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-correlation-request-id": str(uuid.uuid4()),
        **(headers or {}),
    }
    return json_response(status, {"error": {"code": code, "message": message}}, all_headers)


# Microsoft Graph answers JSON with OData parameters in its content type.
GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)


def graph_ids(request_headers: Any) -> dict[str, str]:
    """Graph's ``request-id`` and ``client-request-id`` (the client's own, echoed, or the request id)."""
    request_id = str(uuid.uuid4())
    return {
        "request-id": request_id,
        "client-request-id": request_headers.get("client-request-id", request_id),
    }


def graph_json(
    status: int, body: Any, ids: dict[str, str], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": GRAPH_CONTENT_TYPE, **ids, **(headers or {})},
    )


def graph_error(
    status: int,
    code: str,
    message: str,
    ids: dict[str, str],
    *,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``{"error": {"code", "message", ["details"], "innerError": {date, request-id, client-request-id}}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error["innerError"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": ids["request-id"],
        "client-request-id": ids["client-request-id"],
    }
    return graph_json(status, {"error": error}, ids, headers)


def entra_error(
    status: int,
    error: str,
    code: int,
    description: str,
    correlation_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Entra ID's OAuth error: ``error``, ``error_description`` (AADSTS code first, then trace and
    correlation ids and the time, as Entra writes them), ``error_codes``, ``timestamp``,
    ``trace_id``, ``correlation_id``, ``error_uri``."""
    now = dt.datetime.now(dt.UTC)
    timestamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {timestamp}",
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return json_response(
        status,
        body,
        {
            "Cache-Control": "no-store, no-cache",
            "Pragma": "no-cache",
            "x-ms-request-id": trace_id,
            **(headers or {}),
        },
    )
