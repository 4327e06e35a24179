"""Error bodies in the shapes Key Vault and Azure Resource Manager send them."""

from __future__ import annotations

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
