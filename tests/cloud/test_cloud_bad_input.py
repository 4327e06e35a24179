"""Bad input gets Key Vault's status code and error body, and changes nothing.

Malformed JSON cannot be sent through SecretClient, so these requests are made with ``requests``
through the same proxy, verifying the same CA, with tokens from the real credential; whatever
the SDK can send (bad names, oversized values, missing tokens) goes through the SDK.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.keyvault.secrets import SecretClient

from local.cloud.process import LocalCloud
from local.cloud.tokens import TokenIssuer
from local.cloud.topology import Identity
from tests.cloud.support import CLIENT_IDS, PRINCIPAL_IDS, SUB1, TENANT, VAULT1, credential, secret_client

pytestmark = pytest.mark.usefixtures("cloud_env")

API = "?api-version=2026-04-01"


def _token(identity: str = "officer", scope: str = "https://vault.azure.net/.default") -> str:
    token: str = credential(identity).get_token(scope).token
    return token


def _call(
    method: str, path: str, *, token: str | None = None, body: Any = None, raw: bytes | None = None
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return requests.request(method, f"{VAULT1}{path}", headers=headers, data=data, timeout=10)


def _error(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


@pytest.fixture(scope="module")
def existing() -> str:
    secret_client().set_secret("untouched", "original")
    return "untouched"


def _unchanged(name: str = "untouched") -> None:
    client = secret_client()
    assert client.get_secret(name).value == "original"
    assert len(list(client.list_properties_of_secret_versions(name))) == 1


def test_missing_token_gets_the_challenge(existing: str) -> None:
    response = _call("PUT", f"/secrets/{existing}{API}", body={"value": "changed"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'
    )
    assert _error(response) == {
        "code": "Unauthorized",
        "message": "AKV10000: Request is missing a Bearer or PoP token.",
    }
    _unchanged()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'{"tags": {}}', "'value' is required")],
)
def test_malformed_bodies_are_bad_parameter(existing: str, raw: bytes, fragment: str) -> None:
    response = _call("PUT", f"/secrets/{existing}{API}", token=_token(), raw=raw)
    assert response.status_code == 400
    assert _error(response)["code"] == "BadParameter"
    assert fragment in _error(response)["message"]
    _unchanged()


def test_malformed_update_body_changes_nothing(existing: str) -> None:
    response = _call(
        "PATCH", f"/secrets/{existing}/{API}", token=_token(), body={"attributes": {"exp": "soon"}}
    )
    assert response.status_code == 400
    assert _error(response)["code"] == "BadParameter"
    assert secret_client().get_secret(existing).properties.expires_on is None


def test_invalid_name_through_the_sdk() -> None:
    with pytest.raises(HttpResponseError) as bad:
        secret_client().set_secret("not_allowed", "x")
    assert bad.value.status_code == 400
    assert bad.value.error is not None
    assert bad.value.error.code == "BadParameter"
    assert "The request URI contains an invalid name: not_allowed" in str(bad.value)
    assert "not_allowed" not in [p.name for p in secret_client().list_properties_of_secrets()]


def test_value_over_25_kb_is_refused() -> None:
    with pytest.raises(HttpResponseError) as bad:
        secret_client().set_secret("too-big", "x" * (25 * 1024 + 1))
    assert bad.value.status_code == 400
    assert bad.value.error is not None
    assert bad.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as missing:
        secret_client().get_secret("too-big")
    assert missing.value.status_code == 404


def test_too_many_tags_are_refused() -> None:
    with pytest.raises(HttpResponseError) as bad:
        secret_client().set_secret("tagged", "x", tags={f"t{i}": "v" for i in range(16)})
    assert bad.value.status_code == 400


def test_maxresults_over_25_and_a_bad_skiptoken_are_refused() -> None:
    assert _call("GET", f"/secrets{API}&maxresults=26", token=_token()).status_code == 400
    response = _call("GET", f"/secrets{API}&$skiptoken=%%%", token=_token())
    assert response.status_code == 400
    assert _error(response)["code"] == "BadParameter"


def test_a_forged_backup_blob_is_refused() -> None:
    forged = base64.urlsafe_b64encode(b'{"name": "evil", "versions": []}').decode()
    response = _call("POST", f"/secrets/restore{API}", token=_token(), body={"value": forged})
    assert response.status_code == 400
    assert _error(response)["code"] == "BadParameter"


def test_unknown_secret_and_unknown_version_are_secret_not_found(existing: str) -> None:
    for path in (f"/secrets/nothing-here/{API}", f"/secrets/{existing}/{'0' * 32}{API}"):
        response = _call("GET", path, token=_token())
        assert response.status_code == 404
        assert _error(response)["code"] == "SecretNotFound"


def test_wrong_audience_is_refused_with_a_challenge(existing: str) -> None:
    arm_token = _token(scope="https://management.azure.com/.default")
    response = _call("GET", f"/secrets/{existing}/{API}", token=arm_token)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert _error(response)["message"].startswith("AKV10022: Invalid audience.")
    assert "https://management.azure.com" in _error(response)["message"]


class StaticToken:
    """A credential that always hands out one fixed token, as a stale cache would."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


def test_expired_token_is_refused_through_the_sdk(cloud: LocalCloud, existing: str) -> None:
    officer = Identity("officer", CLIENT_IDS["officer"], PRINCIPAL_IDS["officer"], SUB1, "rg-test1")
    expired, _ = TokenIssuer(cloud.data_dir, TENANT).issue(
        officer, "https://vault.azure.net", lifetime_seconds=-5
    )
    client = SecretClient(VAULT1, StaticToken(expired))
    with pytest.raises(ClientAuthenticationError) as refused:
        client.get_secret(existing)
    assert refused.value.status_code == 401
    assert "TokenExpired" in str(refused.value)


def test_token_signed_by_someone_else_is_refused(
    tmp_path_factory: pytest.TempPathFactory, existing: str
) -> None:
    officer = Identity("officer", CLIENT_IDS["officer"], PRINCIPAL_IDS["officer"], SUB1, "rg-test1")
    foreign, _ = TokenIssuer(tmp_path_factory.mktemp("other-cloud"), TENANT).issue(
        officer, "https://vault.azure.net", 3600
    )
    client = SecretClient(VAULT1, StaticToken(foreign))
    with pytest.raises(ClientAuthenticationError) as refused:
        client.set_secret(existing, "changed")
    assert refused.value.status_code == 401
    _unchanged()


def test_unknown_vault_does_not_resolve() -> None:
    client = SecretClient("https://no-such-vault.vault.azure.net", credential("officer"), retry_total=0)
    with pytest.raises(ServiceRequestError):
        client.get_secret("x")


def test_tls_verification_is_on() -> None:
    # A client that trusts only the public CAs (certifi) must refuse the local cloud's certificate.
    import certifi

    client = SecretClient(VAULT1, credential("officer"), connection_verify=certifi.where(), retry_total=0)
    with pytest.raises(ServiceRequestError) as refused:
        client.get_secret("untouched")
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
