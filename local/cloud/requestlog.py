"""One log line per request: method, host, path, status, identity and time taken.

Never the query string's secrets, a body, a header value or a token: paths carry secret names
and versions only, which the design allows in logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from local.cloud.faults import ConnectionDropped

logger = logging.getLogger("local.cloud.requests")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

IDENTITY_KEY = "identity"


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status: int | str = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ConnectionDropped:
        status = "dropped"
        return web.Response(status=500)  # the connection is gone; this goes nowhere
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        logger.info(
            "%s %s %s %s identity=%s %.1fms",
            request.method,
            request.host,
            request.path,
            status,
            request.get(IDENTITY_KEY, "-"),
            (time.perf_counter() - started) * 1000,
        )
