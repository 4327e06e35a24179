"""Microsoft Graph (applications) through an azure-core pipeline with a managed identity's bearer token.

That pipeline (``BearerTokenCredentialPolicy`` + ``RetryPolicy``) is what the hub uses to rotate
an Entra application's client secret; ``raw_response_hook`` shows every response it saw.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ServiceResponseError

from local.cloud.process import LocalCloud
from tests.cloud.support import (
    APPS,
    CLIENT_IDS,
    GRAPH,
    GRAPH_SCOPE,
    POLICY_ID,
    PRINCIPAL_IDS,
    credential,
    graph_call,
    graph_client,
)
from tests.cloud.webhook import wait_for

pytestmark = pytest.mark.usefixtures("cloud_env")

OWNED_APP_ID, OWNED_OBJECT_ID, _ = APPS["owned-app"]
UNOWNED_APP_ID, UNOWNED_OBJECT_ID, _ = APPS["unowned-app"]
SECRET_SHAPE = re.compile(r"^[A-Za-z0-9]{3}[0-9]Q~[A-Za-z0-9~._-]{34}$")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Seen:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def __call__(self, response: Any) -> None:
        self.statuses.append(response.http_response.status_code)


def _error(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def _key_ids(cloud: LocalCloud, app: str) -> list[str]:
    return [p["key_id"] for p in cloud.admin.application(app)["password_credentials"]]


@pytest.fixture
def owner() -> Any:
    return graph_client("graph-owner")


@pytest.fixture
def added(cloud: LocalCloud) -> Iterator[list[tuple[str, str]]]:
    """(application name, key id) of credentials a test added, removed again afterwards."""
    keys: list[tuple[str, str]] = []
    yield keys
    for app, key_id in keys:
        if key_id in _key_ids(cloud, app):
            cloud.admin.remove_application_password(app, key_id)


def test_get_by_object_id_and_by_app_id(owner: Any) -> None:
    by_id = graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}")
    assert by_id.status_code == 200
    assert by_id.headers["Content-Type"].startswith("application/json;odata.metadata=minimal")
    assert by_id.headers["request-id"]
    doc = by_id.json()
    assert doc["@odata.context"] == f"{GRAPH}/$metadata#applications/$entity"
    assert (doc["id"], doc["appId"], doc["signInAudience"]) == (OWNED_OBJECT_ID, OWNED_APP_ID, "AzureADMyOrg")
    assert doc["keyCredentials"] == []
    [initial] = doc["passwordCredentials"]
    assert set(initial) == {
        "customKeyIdentifier",
        "displayName",
        "endDateTime",
        "hint",
        "keyId",
        "secretText",
        "startDateTime",
    }
    assert initial["secretText"] is None
    assert len(initial["hint"]) == 3
    assert initial["displayName"] == "initial"
    by_app_id = graph_call(owner, "GET", f"/applications(appId='{OWNED_APP_ID}')")
    assert by_app_id.status_code == 200
    assert by_app_id.json()["passwordCredentials"] == doc["passwordCredentials"]


def test_select_returns_only_those_properties(owner: Any) -> None:
    selected = graph_call(
        owner, "GET", f"/applications/{OWNED_OBJECT_ID}?$select=id,appId,passwordCredentials"
    )
    assert selected.status_code == 200
    assert set(selected.json()) == {"@odata.context", "id", "appId", "passwordCredentials"}
    assert selected.json()["@odata.context"].endswith("#applications(id,appId,passwordCredentials)/$entity")
    unknown = graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}?$select=id,nope")
    assert unknown.status_code == 400
    assert "nope" in _error(unknown)["message"]


def test_add_password_shows_the_secret_once(
    cloud: LocalCloud, owner: Any, added: list[tuple[str, str]]
) -> None:
    before = time.time()
    answer = graph_call(
        owner,
        "POST",
        f"/applications/{OWNED_OBJECT_ID}/addPassword",
        {"passwordCredential": {"displayName": "rotated by the test"}},
    )
    assert answer.status_code == 200
    credential_doc = answer.json()
    added.append(("owned-app", credential_doc["keyId"]))
    assert credential_doc["@odata.context"] == f"{GRAPH}/$metadata#microsoft.graph.passwordCredential"
    assert SECRET_SHAPE.match(credential_doc["secretText"])
    assert credential_doc["hint"] == credential_doc["secretText"][:3]
    assert GUID.match(credential_doc["keyId"])
    assert credential_doc["displayName"] == "rotated by the test"
    start = _epoch(credential_doc["startDateTime"])
    assert before - 1 <= start <= time.time() + 1
    assert abs(_epoch(credential_doc["endDateTime"]) - start - 2 * 365 * 86400) < 2  # two years

    listed = graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}").json()["passwordCredentials"]
    [again] = [p for p in listed if p["keyId"] == credential_doc["keyId"]]
    assert again["secretText"] is None
    assert again["hint"] == credential_doc["hint"]
    assert again["endDateTime"] == credential_doc["endDateTime"]
    admin_view = cloud.admin.application("owned-app")
    assert credential_doc["secretText"] not in str(admin_view)


def test_add_password_with_dates(owner: Any, added: list[tuple[str, str]]) -> None:
    answer = graph_call(
        owner,
        "POST",
        f"/applications(appId='{OWNED_APP_ID}')/addPassword",
        {
            "passwordCredential": {
                "displayName": "dated",
                "startDateTime": "2030-01-01T00:00:00Z",
                "endDateTime": "2030-03-01T00:00:00.1234567Z",
            }
        },
    )
    assert answer.status_code == 200
    added.append(("owned-app", answer.json()["keyId"]))
    assert answer.json()["startDateTime"] == "2030-01-01T00:00:00.0000000Z"
    assert answer.json()["endDateTime"] == "2030-03-01T00:00:00.1234560Z"
    backwards = graph_call(
        owner,
        "POST",
        f"/applications/{OWNED_OBJECT_ID}/addPassword",
        {
            "passwordCredential": {
                "startDateTime": "2030-01-01T00:00:00Z",
                "endDateTime": "2029-01-01T00:00:00Z",
            }
        },
    )
    assert backwards.status_code == 400


def test_remove_password_and_an_unknown_key_id(cloud: LocalCloud, owner: Any) -> None:
    key_id = graph_call(
        owner, "POST", f"/applications/{OWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}
    ).json()["keyId"]
    removed = graph_call(owner, "POST", f"/applications/{OWNED_OBJECT_ID}/removePassword", {"keyId": key_id})
    assert removed.status_code == 204
    assert key_id not in _key_ids(cloud, "owned-app")
    again = graph_call(owner, "POST", f"/applications/{OWNED_OBJECT_ID}/removePassword", {"keyId": key_id})
    assert again.status_code == 400
    assert _error(again)["code"] == "Request_BadRequest"
    assert _error(again)["message"] == f"No password credential found with keyId {key_id}."
    assert set(_error(again)["innerError"]) == {"date", "request-id", "client-request-id"}
    malformed = graph_call(owner, "POST", f"/applications/{OWNED_OBJECT_ID}/removePassword", {"keyId": "x"})
    assert malformed.status_code == 400


def test_owned_by_reaches_only_owned_applications(cloud: LocalCloud, owner: Any) -> None:
    keys_before = _key_ids(cloud, "unowned-app")
    for method, path, body in (
        ("GET", f"/applications/{UNOWNED_OBJECT_ID}", None),
        ("GET", f"/applications(appId='{UNOWNED_APP_ID}')", None),
        ("POST", f"/applications/{UNOWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}),
        ("POST", f"/applications/{UNOWNED_OBJECT_ID}/removePassword", {"keyId": keys_before[0]}),
        ("GET", f"/applications/{UNOWNED_OBJECT_ID}/owners", None),
    ):
        denied = graph_call(owner, method, path, body)
        assert denied.status_code == 403, path
        assert _error(denied)["code"] == "Authorization_RequestDenied"
        assert _error(denied)["message"] == "Insufficient privileges to complete the operation."
        assert set(_error(denied)["innerError"]) == {"date", "request-id", "client-request-id"}
    assert _key_ids(cloud, "unowned-app") == keys_before


def test_no_graph_permission_is_denied_everywhere() -> None:
    outsider = graph_client("outsider")
    for path in (f"/applications/{OWNED_OBJECT_ID}", f"/applications/{uuid.uuid4()}"):
        denied = graph_call(outsider, "GET", path)
        assert denied.status_code == 403
        assert _error(denied)["code"] == "Authorization_RequestDenied"


def test_read_all_reads_every_application_but_changes_none() -> None:
    reader = graph_client("graph-reader")
    assert graph_call(reader, "GET", f"/applications/{UNOWNED_OBJECT_ID}").status_code == 200
    denied = graph_call(
        reader, "POST", f"/applications/{UNOWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}
    )
    assert denied.status_code == 403


def test_unknown_application_is_not_found(owner: Any) -> None:
    unknown = str(uuid.uuid4())
    for path in (f"/applications/{unknown}", f"/applications(appId='{unknown}')/addPassword"):
        method = "GET" if path.endswith(unknown) else "POST"
        missing = graph_call(owner, method, path, {"passwordCredential": {}} if method == "POST" else None)
        assert missing.status_code == 404
        assert _error(missing)["code"] == "Request_ResourceNotFound"
        assert _error(missing)["message"] == (
            f"Resource '{unknown}' does not exist or one of its queried reference-property objects are not present."
        )


def test_owners_and_adding_one_needs_readwrite_all(owner: Any) -> None:
    owners = graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}/owners")
    assert owners.status_code == 200
    [only] = owners.json()["value"]
    assert only["@odata.type"] == "#microsoft.graph.servicePrincipal"
    assert (only["id"], only["appId"]) == (PRINCIPAL_IDS["graph-owner"], CLIENT_IDS["graph-owner"])
    assert only["servicePrincipalType"] == "ManagedIdentity"

    reference = {
        "@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{PRINCIPAL_IDS['graph-owner']}"
    }
    refused = graph_call(owner, "POST", f"/applications/{OWNED_OBJECT_ID}/owners/$ref", reference)
    assert refused.status_code == 403  # OwnedBy is not enough to add owners, even to an owned app

    admin = graph_client("graph-admin")
    path = f"/applications/{UNOWNED_OBJECT_ID}/owners"
    assert graph_call(admin, "POST", f"{path}/$ref", reference).status_code == 204
    try:
        assert [o["id"] for o in graph_call(admin, "GET", path).json()["value"]] == [
            PRINCIPAL_IDS["graph-owner"]
        ]
        assert graph_call(owner, "GET", f"/applications/{UNOWNED_OBJECT_ID}").status_code == 200
        duplicate = graph_call(admin, "POST", f"{path}/$ref", reference)
        assert duplicate.status_code == 400
        assert "already exist" in _error(duplicate)["message"]
        nobody = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{uuid.uuid4()}"}
        assert graph_call(admin, "POST", f"{path}/$ref", nobody).status_code == 404
    finally:
        assert graph_call(admin, "DELETE", f"{path}/{PRINCIPAL_IDS['graph-owner']}/$ref").status_code == 204
    assert graph_call(owner, "GET", f"/applications/{UNOWNED_OBJECT_ID}").status_code == 403


def test_password_lifetime_policy_refuses_long_credentials(cloud: LocalCloud, owner: Any) -> None:
    _, object_id, _ = APPS["policy-app"]
    refused = graph_call(
        owner, "POST", f"/applications/{object_id}/addPassword", {"passwordCredential": {"displayName": "2y"}}
    )
    assert refused.status_code == 400
    error = _error(refused)
    message = f"Credential lifetime exceeds the max value allowed as per assigned policy '{POLICY_ID}'."
    assert (error["code"], error["message"]) == ("CredentialInvalidLifetimeAsPerAppPolicy", message)
    assert error["details"] == [{"code": "InvalidKeyEndDate", "message": message, "target": "EndDate"}]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
    accepted = graph_call(
        owner, "POST", f"/applications/{object_id}/addPassword", {"passwordCredential": {"endDateTime": end}}
    )
    assert accepted.status_code == 200
    cloud.admin.remove_application_password("policy-app", accepted.json()["keyId"])


def test_personal_account_apps_hold_two_passwords_at_most(
    cloud: LocalCloud, owner: Any, added: list[tuple[str, str]]
) -> None:
    _, object_id, _ = APPS["personal-app"]
    assert len(_key_ids(cloud, "personal-app")) == 1
    second = graph_call(owner, "POST", f"/applications/{object_id}/addPassword", {"passwordCredential": {}})
    assert second.status_code == 200
    added.append(("personal-app", second.json()["keyId"]))
    third = graph_call(owner, "POST", f"/applications/{object_id}/addPassword", {"passwordCredential": {}})
    assert third.status_code == 400
    assert _error(third)["code"] == "TooManyAppPasswords"
    assert (
        _error(third)["message"]
        == "Not allowed to add 3 passwords. You can only add a maximum of 2 passwords."
    )
    assert len(_key_ids(cloud, "personal-app")) == 2


def test_tokens_are_checked(cloud: LocalCloud) -> None:
    url = f"{GRAPH}/applications/{OWNED_OBJECT_ID}"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert 'client_id="00000003-0000-0000-c000-000000000000"' in missing.headers["WWW-Authenticate"]
    vault_token = credential("graph-owner").get_token("https://vault.azure.net/.default").token
    wrong_audience = requests.get(url, headers={"Authorization": f"Bearer {vault_token}"}, timeout=10)
    assert wrong_audience.status_code == 401
    assert "audience" in wrong_audience.json()["error"]["message"]
    forged = requests.get(url, headers={"Authorization": "Bearer a.b.c"}, timeout=10)
    assert forged.status_code == 401


def test_graph_tokens_carry_the_app_roles_other_tokens_none() -> None:
    graph_token = credential("graph-owner").get_token(GRAPH_SCOPE).token
    assert _claims(graph_token)["roles"] == ["Application.ReadWrite.OwnedBy"]
    assert _claims(graph_token)["aud"] == "https://graph.microsoft.com"
    assert "roles" not in _claims(
        credential("graph-owner").get_token("https://vault.azure.net/.default").token
    )
    assert "roles" not in _claims(credential("outsider").get_token(GRAPH_SCOPE).token)


def test_throttled_add_password_is_retried_after_retry_after(cloud: LocalCloud, owner: Any) -> None:
    keys_before = _key_ids(cloud, "owned-app")
    cloud.admin.inject_fault(
        target="graph", operation="add_password", kind="throttle", count=1, retry_after_seconds=1
    )
    seen = Seen()
    started = time.monotonic()
    answer = graph_call(
        owner,
        "POST",
        f"/applications/{OWNED_OBJECT_ID}/addPassword",
        {"passwordCredential": {}},
        raw_response_hook=seen,
    )
    assert answer.status_code == 200
    assert seen.statuses == [429, 200]
    assert time.monotonic() - started >= 1.0
    assert len(_key_ids(cloud, "owned-app")) == len(keys_before) + 1  # the throttled attempt added nothing
    cloud.admin.remove_application_password("owned-app", answer.json()["keyId"])


def test_faults_by_application_name_and_unavailable_get_is_retried(cloud: LocalCloud, owner: Any) -> None:
    cloud.admin.inject_fault(target="owned-app", operation="get_application", kind="unavailable", count=1)
    cloud.admin.inject_fault(target="unowned-app", operation="*", kind="unavailable", count=5)
    seen = Seen()
    assert (
        graph_call(owner, "GET", f"/applications/{OWNED_OBJECT_ID}", raw_response_hook=seen).status_code
        == 200
    )
    assert seen.statuses == [503, 200]
    assert [f["target"] for f in cloud.admin.faults()] == ["unowned-app"]


def test_add_password_held_back_by_latency_completes_after_the_client_left(cloud: LocalCloud) -> None:
    keys_before = set(_key_ids(cloud, "owned-app"))
    cloud.admin.inject_fault(target="graph", operation="add_password", kind="latency", latency_ms=1500)
    impatient = graph_client("graph-owner", retry_total=0)
    with pytest.raises(ServiceResponseError):
        graph_call(
            impatient,
            "POST",
            f"/applications/{OWNED_OBJECT_ID}/addPassword",
            {"passwordCredential": {"displayName": "the client gave up"}},
            read_timeout=0.3,
        )
    new = wait_for(lambda: set(_key_ids(cloud, "owned-app")) - keys_before, timeout=10)
    [key_id] = new
    assert (
        cloud.admin.application("owned-app")["password_credentials"][-1]["display_name"]
        == "the client gave up"
    )
    cloud.admin.remove_application_password("owned-app", key_id)


def test_requests_are_logged_without_secrets_or_tokens(cloud: LocalCloud, owner: Any) -> None:
    answer = graph_call(
        owner, "POST", f"/applications/{OWNED_OBJECT_ID}/addPassword", {"passwordCredential": {}}
    )
    secret = answer.json()["secretText"]
    token = credential("graph-owner").get_token(GRAPH_SCOPE).token
    graph_call(
        owner, "POST", f"/applications/{OWNED_OBJECT_ID}/removePassword", {"keyId": answer.json()["keyId"]}
    )
    log = cloud.log_file.read_text(encoding="utf-8")
    assert (
        f"POST graph.microsoft.com /v1.0/applications/{OWNED_OBJECT_ID}/addPassword 200 identity=graph-owner"
        in log
    )
    assert "/removePassword 204 identity=graph-owner" in log
    assert secret not in log
    assert token not in log
    assert token.split(".")[2] not in log
    for path in cloud.data_dir.glob("application*.json"):
        assert secret not in path.read_text(encoding="utf-8")


def _epoch(text: str) -> float:
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims
