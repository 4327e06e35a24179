"""How kvrotate proves itself to the hub: a function key from KVROTATE_FUNCTION_KEY (against a
host that checks function keys, as Azure does), and an Entra token from DefaultAzureCredential
for KVROTATE_SCOPE (here the local cloud's managed identity endpoint answers, as it would on an
Azure VM or in Cloud Shell)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from e2e_helpers import assert_consistent, quiet_expiry_scan, seed
from kvrotate_runner import UNVERIFIED_APPROVER, kvrotate

from local.host.auth import load_or_create_keys
from local.stack import POSTGRESQL, LocalStack

OK, DENIED = 0, 5
# A scope the local cloud's Entra knows (ARM); a real hub's is its own app id URI.
# The hub's own audience: the local host, playing App Service authentication, accepts its tokens.
KNOWN_SCOPE = "api://keyvault-rotation-hub/.default"
UNKNOWN_SCOPE = "api://00000000-0000-0000-0000-00000000cafe/.default"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")),
        app_settings=UNVERIFIED_APPROVER,
        databases=(POSTGRESQL,),
        host_auth_keys=True,
    ) as running:
        quiet_expiry_scan(running)
        yield running


@pytest.fixture(scope="module")
def function_key(stack: LocalStack) -> str:
    assert stack.host is not None
    return load_or_create_keys(stack.host.data_dir).function_default


def token_requests(stack: LocalStack) -> int:
    """Tokens the local cloud's managed identity endpoint has issued so far."""
    assert stack.cloud is not None
    log = stack.cloud.log_file.read_text(errors="replace")
    return sum(1 for line in log.splitlines() if " /msi/token 200 " in line)


def test_without_the_function_key_the_hub_refuses(stack: LocalStack) -> None:
    kvrotate(stack.hub_url, "list").assert_error(
        DENIED, "function key", "set KVROTATE_FUNCTION_KEY", "(HTTP 401)"
    )
    kvrotate(stack.hub_url, "list", env={"KVROTATE_FUNCTION_KEY": "not-the-key"}).assert_error(
        DENIED, "(HTTP 401)"
    )


def test_the_function_key_from_the_environment_lets_every_call_through(
    stack: LocalStack, function_key: str
) -> None:
    seeded = seed(stack, prefix="cli-auth")
    key = {"KVROTATE_FUNCTION_KEY": function_key}

    view = kvrotate(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait", "--json", env=key).json()

    assert view["runtimeStatus"] == "Completed"
    assert view["output"]["result"] == "rotated"
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == view["output"]["new_version"]
    assert_consistent(stack, seeded)
    listed = kvrotate(stack.hub_url, "list", "--vault", seeded.vault, "--json", env=key).json()
    assert view["id"] in {r["id"] for r in listed["rotations"]}


def test_an_entra_token_is_obtained_for_the_scope(stack: LocalStack, function_key: str) -> None:
    before = token_requests(stack)

    run = kvrotate(
        stack.hub_url,
        "list",
        "--json",
        env={"KVROTATE_FUNCTION_KEY": function_key, "KVROTATE_SCOPE": KNOWN_SCOPE},
    )

    assert run.code == OK, run
    assert "rotations" in run.json()
    # DefaultAzureCredential found the managed identity endpoint and got a token from it.
    assert token_requests(stack) > before


def test_no_token_for_the_scope_is_one_error_line(stack: LocalStack, function_key: str) -> None:
    before = token_requests(stack)

    run = kvrotate(
        stack.hub_url,
        "list",
        "--scope",
        UNKNOWN_SCOPE,
        env={"KVROTATE_FUNCTION_KEY": function_key},
    )

    run.assert_error(DENIED, f"no Entra token for {UNKNOWN_SCOPE}")
    assert token_requests(stack) == before


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET as an empty rotation list and keeps the request headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"rotations": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_token_goes_as_a_bearer_for_the_scope_s_audience(stack: LocalStack) -> None:
    """App Service authentication checks the bearer token in front of the host, and no local
    piece plays that part: a server on 127.0.0.1 that records the headers shows what kvrotate
    sends, with the token the local cloud really issued."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = kvrotate(
            url, "list", "--json", env={"KVROTATE_FUNCTION_KEY": "k-123", "KVROTATE_SCOPE": KNOWN_SCOPE}
        )
    finally:
        server.shutdown()
        server.server_close()

    assert run.json() == {"rotations": []}
    [headers] = _Recorder.seen
    assert headers["x-functions-key"] == "k-123"
    scheme, token = headers["authorization"].split(" ", 1)
    assert scheme == "Bearer"
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == KNOWN_SCOPE.removesuffix("/.default")
    # The identity DefaultAzureCredential found: the client environment's (AZURE_CLIENT_ID).
    assert claims["appid"] == stack.info["client_env"]["AZURE_CLIENT_ID"]
