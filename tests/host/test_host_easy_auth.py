"""App Service authentication in front of the app (``--easy-auth``): the app is told it is on,
client-sent principal headers never reach it, a signed-in session adds the principal's headers,
sessions survive a restart, and redirects stay on the site. Without the option the app is told
nothing, even if its settings claim otherwise.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from host_helpers import HostFactory

from local.host.process import HostStartError
from local.principals import APPROVER, APPROVERS_GROUP, PRINCIPALS, write_principals

FORGED = {
    "X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-0000-0000-000000000001",
    "X-MS-CLIENT-PRINCIPAL-NAME": "mallory",
    "X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": []}').decode(),
    "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged",
}


class _Keep(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_no_redirects = urllib.request.build_opener(urllib.request.ProxyHandler({}), _Keep())


def login(base_url: str, query: str) -> tuple[int, str, str]:
    """(status, Location, the session cookie) of a login request, redirects not followed."""
    try:
        with _no_redirects.open(f"{base_url}/.auth/login/local?{query}", timeout=10) as answer:
            return answer.status, "", ""
    except urllib.error.HTTPError as answer:
        cookie = (answer.headers.get("Set-Cookie") or "").split(";", 1)[0]
        return answer.code, answer.headers.get("Location", ""), cookie


def test_easy_auth_strips_forged_headers_and_presents_the_signed_in_principal(
    host_factory: HostFactory, tmp_path: Path
) -> None:
    host = host_factory(easy_auth=write_principals(tmp_path / "principals.json"))

    anonymous = host.api.call("GET", "/api/whoami", headers=FORGED).json()
    assert anonymous == {"headers": {}, "authEnabled": "True"}

    status, location, cookie = login(host.base_url, "principal=approver&post_login_redirect_uri=/api/whoami")
    assert (status, location) == (302, "/api/whoami")
    assert cookie.startswith("AppServiceAuthSession=")
    seen = host.api.call("GET", "/api/whoami", headers={**FORGED, "Cookie": cookie}).json()["headers"]
    approver = PRINCIPALS[APPROVER]
    assert seen["x-ms-client-principal-id"] == approver["id"]
    assert seen["x-ms-client-principal-name"] == approver["name"]
    assert seen["x-ms-client-principal-idp"] == "aad"
    assert "x-ms-token-aad-access-token" not in seen
    claims = json.loads(base64.b64decode(seen["x-ms-client-principal"]))["claims"]
    assert {"typ": "groups", "val": APPROVERS_GROUP} in claims
    me = host.api.call("GET", "/.auth/me", headers={"Cookie": cookie})
    assert me.status == 200
    assert me.json()[0]["user_id"] == approver["name"]

    # A tampered session signs nobody in; /.auth/me says so.
    tampered = cookie.replace("approver.", "outsider.")
    assert host.api.call("GET", "/api/whoami", headers={"Cookie": tampered}).json()["headers"] == {}
    assert host.api.call("GET", "/.auth/me", headers={"Cookie": tampered}).status == 401
    # Unknown principals and foreign redirects.
    assert login(host.base_url, "principal=nobody")[0] == 400
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        assert login(host.base_url, f"principal=approver&post_login_redirect_uri={target}")[1] == "/"
    chooser = host.api.call("GET", "/.auth/login/aad?post_login_redirect_uri=/api/whoami")
    assert chooser.status == 200
    assert "principal=approver" in chooser.text

    # Sessions are signed with a key kept in the data dir: a restarted host still knows them.
    host.process.stop()
    host.process.start()
    again = host.api.call("GET", "/api/whoami", headers={"Cookie": cookie}).json()["headers"]
    assert again["x-ms-client-principal-id"] == approver["id"]


def test_without_easy_auth_the_app_is_not_told_authentication_is_on(host_factory: HostFactory) -> None:
    # A setting claiming it is on would make the app trust headers any caller writes.
    host = host_factory(env={"WEBSITE_AUTH_ENABLED": "True"})
    seen = host.api.call("GET", "/api/whoami", headers=FORGED).json()
    assert seen["authEnabled"] is None
    assert host.api.call("GET", "/.auth/me").status == 404
    assert "WEBSITE_AUTH_ENABLED removed" in host.process.log_tail()


def test_a_malformed_principals_file_stops_the_host(host_factory: HostFactory, tmp_path: Path) -> None:
    bad = tmp_path / "principals.json"
    bad.write_text(json.dumps({"principals": {"x": {"id": "not-a-guid", "name": "x"}}}))
    host = host_factory(easy_auth=bad, start=False)
    with pytest.raises(HostStartError, match="'id' must be an object id"):
        host.process.start()
