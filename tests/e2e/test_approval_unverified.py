"""A hub without App Service authentication (no WEBSITE_AUTH_ENABLED), which allows unverified
decisions (ROTATION_ALLOW_UNVERIFIED_APPROVER=true): the X-MS-CLIENT-PRINCIPAL* headers a caller
writes itself are ignored entirely; a decision counts under the name the caller gives, and the
rotation records it as unverified. The approval page refuses everyone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from e2e_helpers import hub_request, input_of_rotation, quiet_expiry_scan, seed

from local import principals
from local.principals import APPROVER, APPROVERS_GROUP
from local.scenario import wait_for
from local.stack import LocalStack
from rotation import metadata

FORGED = {
    "X-MS-CLIENT-PRINCIPAL-ID": principals.object_id(APPROVER),
    "X-MS-CLIENT-PRINCIPAL-NAME": principals.name(APPROVER),
    "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
    "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
        json.dumps({"auth_typ": "aad", "claims": [{"typ": "groups", "val": APPROVERS_GROUP}]}).encode()
    ).decode(),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("stack"),
        app_settings={"ROTATION_ALLOW_UNVERIFIED_APPROVER": "true"},
        databases=(),
        easy_auth=False,
    ) as running:
        quiet_expiry_scan(running)
        yield running


def test_forged_principal_headers_are_ignored_and_the_decision_is_unverified(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv", tags={metadata.APPROVAL: "required"})
    status, _, body = hub_request(
        stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name}, headers=FORGED
    )
    assert status == 202, body
    rotation_id = str(body["id"])
    wait_for(stack, rotation_id, step="approval", until=())
    # The forged principal did not become the requester.
    request = input_of_rotation(stack, rotation_id)
    assert (request["requested_by"], request["requested_by_id"]) == ("http api", None)

    # Headers alone name nobody: the body's approver is required.
    status, _, body = hub_request(stack, "POST", f"/api/rotations/{rotation_id}/approve", {}, headers=FORGED)
    assert (status, body) == (400, {"error": "'approver' is required"})

    status, _, body = hub_request(
        stack, "POST", f"/api/rotations/{rotation_id}/approve", {"approver": "bob"}, headers=FORGED
    )

    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rotated"
    decision = done["output"]["decision"]
    assert done["status"]["decision"] == decision
    assert (decision["approver"], decision["approver_id"], decision["verified"]) == ("bob", None, False)
    assert stack.current_value_logs_in(seeded.vault, seeded.name)


def test_the_approval_page_refuses_everyone_without_app_service_authentication(stack: LocalStack) -> None:
    for headers in ({}, FORGED):
        status, answer_headers, body = hub_request(stack, "GET", "/api/approvals", headers=headers)
        assert status == 403
        assert {k.lower(): v for k, v in answer_headers.items()}["content-type"].startswith("text/html")
        assert "App Service authentication is off" in body
