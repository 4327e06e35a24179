"""The operators' HTTP API (starters/http_api.py), route by route, as an operator calls it:
rotate now, status, list, approve, reject, rerun; and the Durable HTTP API's view of the same
instances. The local cloud's expiry scan is off here: only the test starts rotations.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from e2e_helpers import (
    DURABLE_API,
    HostLog,
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    hub_request,
    instance_ids,
    quiet_expiry_scan,
    seed,
    unique,
    versions_of,
    write_version,
)

from local import principals
from local.principals import APPROVER, REQUESTER
from local.scenario import wait_for
from local.stack import POSTGRESQL, LocalStack, Seeded
from rotation import metadata
from rotation.model import RotationRequest, SecretRef
from starters.launcher import policy_from

FOREIGN_SUBSCRIPTION = "0b1f6c2e-7d3a-4e59-9c1b-2a4d5e6f7a8b"
FORGED_NAME = "X-MS-CLIENT-PRINCIPAL-NAME"
UNKNOWN_ID = "rotate_spoke1-kv_nothing-here_" + "0" * 32


@pytest.fixture(scope="module", autouse=True)
def _only_our_rotations(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


def rotate_now(stack: LocalStack, vault: str, secret: str, **headers: str) -> tuple[int, dict[str, str], Any]:
    return hub_request(stack, "POST", "/api/rotations", {"vault": vault, "secret": secret}, headers=headers)


def prefix_of(stack: LocalStack, seeded: Seeded) -> str:
    return SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name).rotation_id_prefix()


def decide(
    stack: LocalStack, rotation_id: str, verb: str, body: object = None, **headers: str
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else None
    status, _, answer = hub_request(
        stack, "POST", f"/api/rotations/{rotation_id}/{verb}", None if raw else body, raw=raw, headers=headers
    )
    return status, answer


def input_of(durable_status: dict[str, Any]) -> dict[str, Any]:
    """The orchestration's input as the Durable HTTP API shows it (the Python durable client
    sends it JSON-encoded, so it is kept and shown as that JSON text)."""
    value = durable_status["input"]
    parsed = json.loads(value) if isinstance(value, str) else value
    assert isinstance(parsed, dict)
    return parsed


def waiting_for_approval(stack: LocalStack, seeded: Seeded) -> str:
    """Start a rotation of an approval-required secret through the API; wait until it waits."""
    status, _, body = rotate_now(stack, stack.vault_arm_id(seeded.vault), seeded.name)
    assert status == 202, body
    wait_for(stack, body["id"], step="approval", until=())
    return str(body["id"])


# -- POST /api/rotations ---------------------------------------------------------------------


def test_rotate_now_by_arm_id_answers_202_with_where_to_look(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    old = current_password(stack, seeded)

    # Signed in through App Service authentication; a principal header of the caller's own is
    # removed by it before the app sees the request.
    status, headers, body = rotate_now(
        stack,
        stack.vault_arm_id(seeded.vault),
        seeded.name,
        **stack.signed_in(REQUESTER),
        **{FORGED_NAME: "ops@contoso.example"},
    )

    assert status == 202, body
    rotation_id = stack.rotation_id(seeded)
    assert body["id"] == rotation_id
    # The project's own routes only: the Durable HTTP API's links would carry the system key.
    location = urlsplit(headers["Location"])
    assert location.path == f"/api/rotations/{rotation_id}"
    assert body["links"] == {
        "status": headers["Location"],
        "approve": headers["Location"] + "/approve",
        "reject": headers["Location"] + "/reject",
        "rerun": headers["Location"] + "/rerun",
    }
    assert not any("code=" in link or "durabletask" in link for link in body["links"].values())
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert not stack.logs_in(seeded, old)

    # The Location answers with this rotation's status; the Durable HTTP API shows the same.
    status, _, shown = hub_request(stack, "GET", location.path)
    assert status == 200, shown
    assert (shown["runtimeStatus"], shown["status"], shown["output"]) == (
        "Completed",
        done["status"],
        done["output"],
    )
    status, _, durable = hub_request(stack, "GET", f"{DURABLE_API}/instances/{rotation_id}")
    assert status == 200, durable
    assert durable["instanceId"] == rotation_id
    assert durable["customStatus"] == done["status"]
    assert input_of(durable)["requested_by"] == principals.name(REQUESTER)
    assert input_of(durable)["requested_by_id"] == principals.object_id(REQUESTER)
    assert input_of(durable)["trigger"] == "manual"
    assert input_of(durable)["version"] == seeded.version
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_rotate_now_by_configured_vault_name(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv")

    status, headers, body = rotate_now(stack, "spoke2-kv", seeded.name)

    assert status == 202, body
    assert body["id"] == stack.rotation_id(seeded)
    assert "Location" in headers
    done = wait_for(stack, body["id"])
    assert done["output"]["result"] == "rotated"
    status, _, durable = hub_request(stack, "GET", f"{DURABLE_API}/instances/{body['id']}")
    assert status == 200
    assert input_of(durable)["requested_by"] == "http api"
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_rotate_now_refuses_what_it_cannot_trust(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    password = current_password(stack, seeded)
    untagged_name = unique("untagged")
    stack.secret_client("spoke2-kv").set_secret(untagged_name, "not-a-login", tags={"owner": "team-a"})
    arm_id = stack.vault_arm_id(seeded.vault)
    foreign = arm_id.replace(stack.subscription_of(seeded.vault), FOREIGN_SUBSCRIPTION)
    before = instance_ids(stack)

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("not JSON", {"raw": b"vault=spoke1-kv&secret=x"}, 400, "the body is not valid JSON"),
        ("not an object", {"raw": b'["spoke1-kv", "x"]'}, 400, "the body must be a JSON object"),
        ("empty", {"raw": b""}, 400, "'vault' is required"),
        ("no vault", {"body": {"secret": seeded.name}}, 400, "'vault' is required"),
        ("no secret", {"body": {"vault": arm_id}}, 400, "'secret' is required"),
        ("vault not a string", {"body": {"vault": 7, "secret": seeded.name}}, 400, "'vault' must be a string"),
        ("secret not a string", {"body": {"vault": arm_id, "secret": ["x"]}}, 400, "'secret' must be a string"),
        ("invalid vault name", {"body": {"vault": "spoke1--kv", "secret": seeded.name}}, 400, "not a valid Key Vault name"),
        ("invalid secret name", {"body": {"vault": arm_id, "secret": "db_password!"}}, 400, "not a valid secret name"),
        ("unknown vault name", {"body": {"vault": "spoke9-kv", "secret": seeded.name}}, 400, "is not configured"),
        ("not an ARM id", {"body": {"vault": "/subscriptions/x/vaults/y", "secret": seeded.name}}, 400, "not a Key Vault ARM id"),
        ("foreign subscription", {"body": {"vault": foreign, "secret": seeded.name}}, 403, "not on the allowlist"),
        ("unknown secret", {"body": {"vault": arm_id, "secret": "no-such-secret"}}, 404, "no-such-secret"),
        ("untagged secret", {"body": {"vault": "spoke2-kv", "secret": untagged_name}}, 400, f"no {metadata.TARGET} tag"),
    ]  # fmt: skip
    for case, request, expected, message in cases:
        status, _, body = hub_request(
            stack, "POST", "/api/rotations", request.get("body"), raw=request.get("raw")
        )
        assert status == expected, f"{case}: {status} {body}"
        assert isinstance(body, dict), f"{case}: {body}"
        assert message in body["error"], f"{case}: {body}"

    assert instance_ids(stack) == before
    assert_untouched(stack, seeded, password)


def test_rotate_now_refuses_a_pending_companion(stack: LocalStack) -> None:
    """A companion someone tagged like its secret is still a companion: rotating it would put a
    new password for the login into the companion and leave it enabled."""
    owner = seed(stack, "spoke1-kv")
    password = current_password(stack, owner)
    client = stack.secret_client(owner.vault)
    client.set_secret(owner.name + "-pending", password, tags=client.get_secret(owner.name).properties.tags)
    before = instance_ids(stack)

    status, _, body = rotate_now(stack, owner.vault, owner.name + "-pending")

    assert status == 400, body
    assert "a suffix reserved for pending values" in body["error"]
    assert instance_ids(stack) == before
    assert stack.logs_in(owner, password)
    assert versions_of(stack, owner) == [owner.version]


def test_rotate_now_of_a_disabled_secret_is_a_conflict_with_the_reason(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    stack.secret_client(seeded.vault).update_secret_properties(seeded.name, seeded.version, enabled=False)
    before = instance_ids(stack)

    status, _, body = rotate_now(stack, seeded.vault, seeded.name)

    assert status == 409, body
    assert "disabled" in body["error"]
    assert seeded.name in body["error"]
    assert instance_ids(stack) == before


# -- approve, reject, duplicates, busy, rerun (restart) -------------------------------------


def test_approval_decisions_duplicates_and_restart(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv", tags={metadata.APPROVAL: "required"})
    password = current_password(stack, seeded)
    rotation_id = waiting_for_approval(stack, seeded)

    # While it waits: rotate-now again is a duplicate; rerun is refused; decisions need a who and a why.
    approver = stack.signed_in(APPROVER)
    status, _, body = rotate_now(stack, seeded.vault, seeded.name)
    assert status == 409, body
    assert body["id"] == rotation_id
    assert decide(stack, rotation_id, "rerun", {}) == (409, {"error": "rotation is still Running"})
    for nobody in ({}, {"approver": "bob"}):
        status, body = decide(stack, rotation_id, "approve", nobody)
        assert status == 403, body
        assert "a decision needs a principal signed in by App Service authentication" in body["error"]
    status, body = decide(stack, rotation_id, "reject", {"approver": "bob"}, **approver)
    assert (status, body) == (400, {"error": "'reason' is required"})
    status, body = decide(stack, rotation_id, "reject", {"reason": "  "}, **approver)
    assert (status, body) == (400, {"error": "'reason' is required"})
    status, body = decide(stack, rotation_id, "approve", b"{not json", **approver)
    assert status == 400
    for verb in ("approve", "reject"):
        assert decide(stack, UNKNOWN_ID, verb, {"reason": "x"}, **approver)[0] == 404
        assert decide(stack, "not-a-rotation", verb, {"reason": "x"}, **approver)[0] == 404
    for missing in (UNKNOWN_ID, "not-a-rotation"):
        assert decide(stack, missing, "rerun", {})[0] == 404
    assert wait_for(stack, rotation_id, step="approval", until=())["runtimeStatus"] == "Running"

    # Rejected by the signed-in principal (a name in the body counts for nothing).
    status, body = decide(
        stack, rotation_id, "reject", {"approver": "mallory", "reason": "change freeze"}, **approver
    )
    assert status == 200, body
    assert body["recorded"] is True
    decision = body["decision"]
    assert (decision["approved"], decision["approver"], decision["reason"]) == (
        False,
        principals.name(APPROVER),
        "change freeze",
    )
    assert (decision["approver_id"], decision["verified"]) == (principals.object_id(APPROVER), True)
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rejected"
    assert done["output"]["decision"] == decision
    assert done["status"]["decision"] == decision
    assert_untouched(stack, seeded, password)

    # Ended: no decision is taken any more, rewind is refused.
    status, body = decide(stack, rotation_id, "approve", {}, **approver)
    assert status == 409, body
    assert body["error"].startswith(f"already decided: rejected by {principals.name(APPROVER)} at ")
    status, body = decide(stack, rotation_id, "rerun", {})
    assert status == 409
    assert "only a failed rotation can be rewound" in body["error"]
    for bad in ({"mode": "sideways"}, {"mode": 3}):
        status, body = decide(stack, rotation_id, "rerun", bad)
        assert status == 400, bad

    # Restart: the same rotation from the beginning, waiting for a decision again.
    status, body = decide(stack, rotation_id, "rerun", {"mode": "restart", "reason": "freeze is over"})
    assert (status, body) == (202, {"id": rotation_id, "mode": "restart", "note": ""})
    again = wait_for(stack, rotation_id, step="approval", until=())
    assert again["runtimeStatus"] == "Running"
    status, body = decide(stack, rotation_id, "reject", {"reason": "not yet"}, **approver)
    assert status == 200, body
    assert wait_for(stack, rotation_id)["output"]["result"] == "rejected"

    # Rotate-now after a rejection asks again: the same rotation starts over (202, not 409).
    status, headers, body = rotate_now(stack, seeded.vault, seeded.name)
    assert status == 202, body
    assert body["id"] == rotation_id
    assert "its last run ended rejected, so it starts again" in body["note"]
    assert headers["Location"] == body["links"]["status"]
    again = wait_for(stack, rotation_id, step="approval", until=())
    assert "decision" not in again["status"]
    status, body = decide(stack, rotation_id, "approve", {}, **approver)
    assert status == 200, body
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["result"] == "rotated"
    assert done["output"]["decision"] == body["decision"]
    assert done["output"]["decision"]["approved"] is True
    assert done["status"]["decision"]["approver"] == principals.name(APPROVER)
    assert not stack.logs_in(seeded, password)
    assert len(versions_of(stack, seeded)) == 2
    assert instance_ids(stack, prefix_of(stack, seeded)) == {rotation_id}
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_rotate_now_while_another_rotation_of_the_secret_runs_is_busy(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv", tags={metadata.APPROVAL: "required"})
    password = current_password(stack, seeded)
    waiting = waiting_for_approval(stack, seeded)
    newer = write_version(stack, seeded)
    log = HostLog(stack)

    status, _, body = rotate_now(stack, stack.vault_arm_id(seeded.vault), seeded.name)

    assert status == 409, body
    assert body == {
        "error": f"rotation {waiting} of this secret is still running",
        "id": stack.rotation_id(newer),
    }
    assert f"{seeded.name} busy: rotation {waiting} of this secret is still running" in log.text()
    assert instance_ids(stack, prefix_of(stack, seeded)) == {waiting}

    assert decide(stack, waiting, "reject", {"reason": "superseded"}, **stack.signed_in())[0] == 200
    assert wait_for(stack, waiting)["output"]["result"] == "rejected"
    assert current_password(stack, seeded) == password
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


# -- GET /api/rotations/{id}, GET /api/rotations ---------------------------------------------


def test_status_and_list_with_filters(stack: LocalStack) -> None:
    done_seeded = seed(stack, "spoke1-kv")
    status, _, body = rotate_now(stack, "spoke1-kv", done_seeded.name)
    assert status == 202, body
    completed = wait_for(stack, body["id"])
    waiting_seeded = seed(stack, "spoke2-kv", tags={metadata.APPROVAL: "required"})
    running = waiting_for_approval(stack, waiting_seeded)

    status, _, one = hub_request(stack, "GET", f"/api/rotations/{completed['id']}")
    assert status == 200
    assert set(one) == {"id", "runtimeStatus", "createdTime", "lastUpdatedTime", "status", "output"}
    assert one["status"]["step"] == "done"
    assert one["output"]["previous_version"] == done_seeded.version
    status, _, waiting = hub_request(stack, "GET", f"/api/rotations/{running}")
    assert status == 200
    assert waiting["runtimeStatus"] == "Running"
    assert waiting["status"]["step"] == "approval"
    assert waiting["status"]["stepNumber"] == 4  # plan, window, stage, approval (orchestrators/saga.py STEPS)
    assert "awaitingDecisionUntil" in waiting["status"]
    assert waiting["output"] is None
    for missing in (UNKNOWN_ID, "not-a-rotation", "rotate_" + "x" * 300):
        status, _, body = hub_request(stack, "GET", f"/api/rotations/{missing}")
        assert status == 404, missing
        assert "no rotation" in body["error"]

    def listed(query: str) -> list[dict[str, Any]]:
        status, _, body = hub_request(stack, "GET", f"/api/rotations{query}")
        assert status == 200, (query, body)
        return list(body["rotations"])

    every = listed("")
    ids = [r["id"] for r in every]
    assert {completed["id"], running} <= set(ids)
    created = [r["createdTime"] for r in every]
    assert created == sorted(created, reverse=True)

    spoke1 = listed("?vault=spoke1-kv")
    assert completed["id"] in {r["id"] for r in spoke1}
    assert all(r["id"].startswith("rotate_spoke1-kv_") for r in spoke1)
    assert running not in {r["id"] for r in spoke1}

    only_running = listed("?status=Running")
    assert running in {r["id"] for r in only_running}
    assert all(r["runtimeStatus"] == "Running" for r in only_running)
    assert completed["id"] not in {r["id"] for r in only_running}

    assert [r["id"] for r in listed("?status=Running&vault=spoke1-kv")] == []
    assert {r["id"] for r in listed("?status=Completed,Running&vault=spoke2-kv")} >= {running}
    assert completed["id"] in {r["id"] for r in listed("?status=Completed&vault=spoke1-kv")}

    status, _, body = hub_request(stack, "GET", "/api/rotations?status=Bogus")
    assert status == 400
    assert "'status' must be one or more of" in body["error"]
    assert "Running" in body["error"]
    status, _, body = hub_request(stack, "GET", "/api/rotations?vault=spoke1--kv")
    assert status == 400
    assert "not a valid Key Vault name" in body["error"]

    assert decide(stack, running, "reject", {"reason": "test over"}, **stack.signed_in())[0] == 200
    assert wait_for(stack, running)["output"]["result"] == "rejected"
    for seeded in (done_seeded, waiting_seeded):
        assert_consistent(stack, seeded)
        assert_no_value_leaked(stack, seeded)


# -- rerun of failed rotations ---------------------------------------------------------------


def test_rerun_rewinds_a_failed_rotation_that_undid_nothing(stack: LocalStack) -> None:
    """The secret's version was disabled while its rotation was starting: the plan step fails
    before anything changed; once it is enabled again, rewind picks up where it failed."""
    seeded = seed(stack, "spoke2-kv")
    old = current_password(stack, seeded)
    client = stack.secret_client(seeded.vault)
    client.update_secret_properties(seeded.name, seeded.version, enabled=False)
    rotation_id = stack.rotation_id(seeded)
    # Started as the launcher starts it (its checks passed a moment before the version was disabled).
    request = RotationRequest(
        secret=SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name),
        version=seeded.version,
        trigger="manual",
        policy=policy_from(stack.settings()),
        requested_by="http api",
    )
    status, _, body = hub_request(
        stack, "POST", f"{DURABLE_API}/orchestrators/rotate_secret/{rotation_id}", request.to_dict()
    )
    assert status == 202, body
    failed = wait_for(stack, rotation_id)
    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "plan"
    assert failed["status"]["compensation"] == []
    assert failed["status"]["stepsDone"] == []

    client.update_secret_properties(seeded.name, seeded.version, enabled=True)
    # The reason travels in the rewind URL's query: escaped, it can add no parameter (taskHub).
    reason = "re-enabled & taskHub=Other #1"
    status, _, body = hub_request(stack, "POST", f"/api/rotations/{rotation_id}/rerun", {"reason": reason})

    assert (status, body) == (202, {"id": rotation_id, "mode": "rewind", "note": ""})
    assert stack.host is not None
    assert f"rewound instance {rotation_id} (reason {reason!r})" in stack.host.log_tail(400)
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed", done
    assert done["output"]["result"] == "rotated"
    assert not stack.logs_in(seeded, old)
    assert len(versions_of(stack, seeded)) == 2
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_rerun_restarts_a_failed_rotation_that_ran_undos(stack: LocalStack) -> None:
    """The admin login the admin secret names does not exist yet: apply is refused, the undos
    run; once the login exists with the secret's password, rerun starts the rotation again from
    the beginning."""
    admin_name = unique("hub-admin")
    admin_login = admin_name.replace("-", "_")
    stack.secret_client("spoke1-kv").set_secret(
        admin_name,
        "no-such-login-yet",
        tags={metadata.CREDENTIAL: admin_login, metadata.PROVIDER: stack.database(POSTGRESQL).provider()},
    )
    seeded = seed(stack, "spoke1-kv", admin=f"secret:{admin_name}")
    old = current_password(stack, seeded)

    status, _, body = rotate_now(stack, "spoke1-kv", seeded.name)
    assert status == 202, body
    rotation_id = body["id"]
    failed = wait_for(stack, rotation_id)
    assert failed["runtimeStatus"] == "Failed"
    assert failed["status"]["failed"]["step"] == "apply"
    assert [undo["undo"] for undo in failed["status"]["compensation"]] == ["revert_target", "discard_pending"]
    assert stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)

    stack.seed_admin_secret("spoke1-kv", admin_name, login=admin_login)
    status, _, body = hub_request(stack, "POST", f"/api/rotations/{rotation_id}/rerun")

    assert status == 202, body
    assert body["mode"] == "restart"
    assert "starts again from the beginning" in body["note"]
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed", done
    assert done["output"]["result"] == "rotated"
    assert not stack.logs_in(seeded, old)
    assert len(versions_of(stack, seeded)) == 2
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)
