"""App Service's front end for the sites' default host names: ``https://<site>.azurewebsites.net``.

Azure answers a site's host name from its front end, which forwards each request to the app and
answers for it when the app cannot: 403 "This web app is stopped" while the site is stopped, 503
while its process starts after a (re)start, has died or does not listen. This module does the
same for the local sites: the proxy tunnels ``CONNECT <site>.azurewebsites.net:443`` to the TLS
listener, which hands requests for a site's host here, and they are forwarded to the site's
process on 127.0.0.1. ARM's ``state`` says what the site is configured to be; this is where
a client learns whether the app answers (what the hub's consumer restart waits for).
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from local.cloud.state import STATE

# The front end's own limit on an app's answer (App Service: 230 s).
FORWARD_TIMEOUT_SECONDS = 230.0
# Hop-by-hop headers and those aiohttp sets itself: never copied across.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The app's answer reaches us decoded (aiohttp decompresses it), so its encoding goes too.
_NOT_RETURNED = _HOP_BY_HOP | {"content-encoding"}

_STOPPED_PAGE = (
    "<!DOCTYPE html><html><head><title>Web app stopped</title></head><body>"
    "<h1>Error 403 - This web app is stopped.</h1></body></html>"
)
_UNAVAILABLE_PAGE = (
    "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
    "<h1>Service Unavailable</h1></body></html>"
)


def _html(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html")


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    site = state.topology.site_by_host(request.host.split(":")[0])
    runtime = state.sites.runtimes.get(site.name.lower()) if site is not None else None
    if runtime is None:
        return _html(404, "<h1>404 Web Site not found.</h1>")
    if runtime.desired == "Stopped":
        return _html(403, _STOPPED_PAGE)
    if not runtime.alive:
        return _html(503, _UNAVAILABLE_PAGE)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    # What App Service's front end tells the app about the original request.
    headers["X-Forwarded-Proto"] = "https"
    headers["X-Original-Host"] = site.host if site is not None else request.host
    body = await request.read()
    try:
        async with state.sites.session.request(
            request.method,
            f"http://127.0.0.1:{runtime.port}{request.path_qs}",
            headers=headers,
            data=body or None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS),
        ) as answer:
            content = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
            return web.Response(status=answer.status, body=content, headers=kept)
    except (aiohttp.ClientError, TimeoutError):
        # Not listening yet (starting), or gone: the front end answers for the app.
        return _html(503, _UNAVAILABLE_PAGE)
