"""kvrotate, the real console script, against the whole local stack: every command, its exit
code, its ``--json`` output checked against the hub's state, the vault and the database, and
its errors (one line on stderr, the right exit code, never a traceback)."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from e2e_helpers import (
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    current_password,
    hub_request,
    seed,
    unique,
    versions_of,
)
from kvrotate_runner import Run, finish, in_terminal, kvrotate, read_until, start

from local.ports import free_port
from local.scenario import rotation, wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata

APPROVAL = {metadata.APPROVAL: "required"}
OK, FAILED, USAGE, NOT_FOUND, CONFLICT, DENIED, UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
ROTATED = ["plan", "stage", "apply", "verify", "promote", "cleanup"]


def cli(stack: LocalStack, *args: str, **kwargs: Any) -> Run:
    return kvrotate(stack.hub_url, *args, **kwargs)


def assert_rotated(stack: LocalStack, seeded: Seeded, old: str, view: dict[str, Any]) -> None:
    """The rotation the view shows promoted the vault's current version, which logs in, and the
    old password no longer does."""
    assert view["runtimeStatus"] == "Completed", view
    assert view["output"]["result"] == "rotated", view
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == view["output"]["new_version"]
    assert set(versions_of(stack, seeded)) == {seeded.version, view["output"]["new_version"]}
    assert not stack.logs_in(seeded, old)
    assert_consistent(stack, seeded)


def waiting_for_approval(stack: LocalStack, vault: str = "spoke1-kv") -> tuple[Seeded, str]:
    """An approval-required secret whose rotation kvrotate started; it waits for a decision."""
    seeded = seed(stack, vault, prefix="cli", tags=APPROVAL)
    started = cli(stack, "rotate", vault, seeded.name, "--json").json()
    assert started["id"] == stack.rotation_id(seeded)
    wait_for(stack, started["id"], step="approval", until=())
    return seeded, str(started["id"])


# -- rotate ---------------------------------------------------------------------------------------


def test_rotate_wait_follows_the_steps_and_ends_with_a_new_version_that_logs_in(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli")
    old = current_password(stack, seeded)

    run = cli(stack, "rotate", seeded.vault, seeded.name, "--wait")

    assert run.code == OK, run
    rotation_id = stack.rotation_id(seeded)
    view = rotation(stack, rotation_id)
    assert_rotated(stack, seeded, old, view)
    # Without a terminal: plain lines, one per step as it started, then the outcome.
    lines = run.out.splitlines()
    assert lines[0] == f"started {rotation_id}"
    step_lines = [line.split("  step ")[1] for line in lines if "  step " in line]
    assert step_lines == ROTATED
    assert "\x1b[" not in run.out  # no terminal codes in a pipe
    assert f"new version {view['output']['new_version']}" in run.flat
    assert "result rotated" in run.flat
    assert run.err == ""
    assert_no_value_leaked(stack, seeded)


def test_rotate_wait_on_a_terminal_draws_a_live_display_of_the_steps(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli")
    old = current_password(stack, seeded)

    run = in_terminal(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait")

    assert run.code == OK, run
    assert_rotated(stack, seeded, old, rotation(stack, stack.rotation_id(seeded)))
    # Rich's live display redraws in place (cursor movements), unlike the plain lines of a pipe.
    assert "\x1b[" in run.out
    assert "  step " not in run.out
    assert "✓" in run.out
    for step in ROTATED:
        assert step in run.out
    assert "rotated" in run.out


def test_rotate_wait_json_prints_only_the_final_rotation(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv", prefix="cli")
    old = current_password(stack, seeded)

    view = cli(stack, "rotate", seeded.vault, seeded.name, "--wait", "--json").json()

    assert view["id"] == stack.rotation_id(seeded)
    assert view == rotation(stack, view["id"])  # the API's JSON, as GET /api/rotations/{id} says
    assert_rotated(stack, seeded, old, view)
    assert list(view["status"]["stepTimes"]) == ROTATED


def test_rotate_without_wait_prints_the_api_answer_and_the_rotation_runs(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli")
    old = current_password(stack, seeded)

    answer = cli(stack, "rotate", seeded.vault, seeded.name, "--json").json()

    assert answer["id"] == stack.rotation_id(seeded)
    assert answer["links"]["status"].endswith(f"/api/rotations/{answer['id']}")
    assert_rotated(stack, seeded, old, wait_for(stack, answer["id"]))
    # A vault's ARM id names it as well as its name.
    again = cli(stack, "rotate", stack.vault_arm_id(seeded.vault), seeded.name)
    assert again.code == OK, again
    assert again.out.startswith("started rotate_")


def test_rotate_wait_exits_non_zero_when_the_rotation_is_rejected(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli", tags=APPROVAL)
    password = current_password(stack, seeded)
    follower = start(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait")
    try:
        # It says so as soon as it sees the rotation wait (a line at a time, even in a pipe).
        seen = read_until(follower, "waiting for a decision until")
        rotation_id = stack.rotation_id(seeded)
        assert rotation(stack, rotation_id)["status"]["step"] == "approval"
        rejected = cli(stack, "reject", rotation_id, "--reason", "not tonight", "--approver", "bob")
        assert rejected.code == OK, rejected
    finally:
        run = finish(follower)

    assert run.code == FAILED, run
    assert seen.splitlines()[1:] == [
        line for line in seen.splitlines()[1:] if "  step " in line or "waiting for" in line
    ]
    assert "decision rejected by bob: not tonight" in run.flat
    assert "result rejected" in run.flat
    assert_untouched(stack, seeded, password)


def test_rotate_wait_rides_out_a_hub_restart(stack: LocalStack) -> None:
    """The host dies and comes back while kvrotate follows a rotation waiting for approval: the
    rotation is durable, and kvrotate keeps asking until the hub answers again."""
    assert stack.host is not None
    seeded = seed(stack, prefix="cli", tags=APPROVAL)
    old = current_password(stack, seeded)
    follower = start(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait")
    try:
        read_until(follower, "waiting for a decision until")
        stack.host.kill()
        time.sleep(2.5)  # a few polls find nobody
        stack.host.start()
        rotation_id = stack.rotation_id(seeded)
        assert cli(stack, "approve", rotation_id, "--approver", "alice").code == OK
    finally:
        run = finish(follower)

    assert run.code == OK, run
    assert run.err == ""
    assert "result rotated" in run.flat
    assert_rotated(stack, seeded, old, rotation(stack, rotation_id))


def test_interrupting_rotate_wait_leaves_the_rotation_running(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli", tags=APPROVAL)
    follower = start(stack.hub_url, "rotate", seeded.vault, seeded.name, "--wait")
    try:
        read_until(follower, "waiting for a decision until")
    finally:
        follower.send_signal(signal.SIGINT)
        run = finish(follower)

    rotation_id = stack.rotation_id(seeded)
    line = Run(run.code, "", run.err).assert_error(130, "stopped waiting", f"kvrotate status {rotation_id}")
    assert "Traceback" not in line
    assert rotation(stack, rotation_id)["status"]["step"] == "approval"
    assert cli(stack, "reject", rotation_id, "--reason", "cleanup", "--approver", "t").code == OK


# -- approve, reject --------------------------------------------------------------------------------


def test_status_shows_the_approval_deadline_and_approve_lets_the_rotation_complete(stack: LocalStack) -> None:
    seeded, rotation_id = waiting_for_approval(stack)
    old = current_password(stack, seeded)

    waiting = cli(stack, "status", rotation_id, "--json").json()
    assert waiting["status"] == rotation(stack, rotation_id)["status"]  # the API's JSON
    shown = cli(stack, "status", rotation_id)
    approved = cli(
        stack, "approve", rotation_id, "--approver", "alice", "--reason", "change window", "--json"
    )

    assert waiting["id"] == rotation_id
    assert waiting["runtimeStatus"] == "Running"
    assert waiting["status"]["step"] == "approval"
    assert list(waiting["status"]["stepTimes"]) == ["plan", "stage", "approval"]
    assert shown.code == OK, shown
    assert "awaiting a decision until" in shown.flat
    assert waiting["status"]["awaitingDecisionUntil"][:19].replace("T", " ") in shown.flat
    assert "current step" in shown.flat
    assert "approval (4/10)" in shown.flat
    answer = approved.json()
    assert answer["id"] == rotation_id
    # Key-only decisions are allowed in this stack (UNVERIFIED_APPROVER): recorded as unverified.
    assert {k: answer["decision"][k] for k in ("approved", "approver", "reason", "verified")} == {
        "approved": True,
        "approver": "alice",
        "reason": "change window",
        "verified": False,
    }
    done = wait_for(stack, rotation_id)
    assert_rotated(stack, seeded, old, done)
    assert done["output"]["decision"]["approver"] == "alice"
    shown = cli(stack, "status", rotation_id)
    assert "decision" in shown.flat
    assert "approved by alice: change window" in shown.flat
    # Too late now: the state forbids it (409).
    cli(stack, "approve", rotation_id, "--approver", "alice").assert_error(
        CONFLICT, "already decided: approved by alice", "(HTTP 409)"
    )
    assert_no_value_leaked(stack, seeded)


def test_reject_ends_the_rotation_rejected_and_changes_nothing(stack: LocalStack) -> None:
    seeded, rotation_id = waiting_for_approval(stack, "spoke2-kv")
    password = current_password(stack, seeded)

    # Shown as given: no markup or emoji codes interpreted.
    reason = "the reporting job runs tonight [red]really[/red] :x:"
    run = cli(stack, "reject", rotation_id, "--reason", reason, "--approver", "bob")

    assert run.code == OK, run
    assert run.out.strip() == f"rejected {rotation_id} as bob"
    done = wait_for(stack, rotation_id)
    assert done["output"]["result"] == "rejected"
    decision = done["output"]["decision"]
    assert (decision["approved"], decision["approver"], decision["reason"], decision["verified"]) == (
        False,
        "bob",
        reason,
        False,
    )
    assert_untouched(stack, seeded, password)
    view = cli(stack, "status", rotation_id, "--json").json()
    assert view["output"]["result"] == "rejected"
    assert f"decision rejected by bob: {reason}" in cli(stack, "status", rotation_id).flat


def test_reject_without_a_reason_is_a_usage_error_and_decides_nothing(stack: LocalStack) -> None:
    _seeded, rotation_id = waiting_for_approval(stack)

    cli(stack, "reject", rotation_id).assert_error(USAGE, "--reason")
    # No approver and no signed-in principal: the hub refuses (400).
    cli(stack, "approve", rotation_id).assert_error(USAGE, "'approver' is required", "(HTTP 400)")

    assert rotation(stack, rotation_id)["status"]["step"] == "approval"
    assert cli(stack, "reject", rotation_id, "--reason", "cleanup", "--approver", "t").code == OK


# -- a failure: status, undos, rerun ----------------------------------------------------------------


def test_status_shows_the_failure_and_the_undos_and_rerun_rotates(stack: LocalStack) -> None:
    seeded, rotation_id = waiting_for_approval(stack)
    old = current_password(stack, seeded)
    assert stack.cloud is not None
    cloud = stack.cloud.admin
    # Key Vault refuses every write from now on: promote fails, the target is reverted.
    cloud.inject_fault(kind="throttle", target=seeded.vault, operation="set_secret", count=1000)
    try:
        assert cli(stack, "approve", rotation_id, "--approver", "alice").code == OK
        wait_for(stack, rotation_id)
    finally:
        cloud.clear_faults()

    view = cli(stack, "status", rotation_id, "--json").json()
    shown = cli(stack, "status", rotation_id)

    assert view["runtimeStatus"] == "Failed"
    assert view["status"]["failed"]["step"] == "promote"
    assert [u["undo"] for u in view["status"]["compensation"]] == ["revert_target", "discard_pending"]
    assert list(view["status"]["stepTimes"]) == ["plan", "stage", "approval", "apply", "verify", "promote"]
    assert shown.code == OK, shown
    assert "Failed" in shown.flat
    assert f"step promote: {view['status']['failed']['class']}" in shown.flat
    assert "undos (last in, first out)" in shown.flat
    for undo in view["status"]["compensation"]:
        assert undo["undo"] in shown.flat
    assert "revert_target │ done │ previous credential restored and verified" in shown.flat
    assert "✗ │ promote" in shown.flat
    assert versions_of(stack, seeded) == [seeded.version]
    assert stack.logs_in(seeded, old)

    # Undos ran after the failure: the hub restarts rather than rewinds, and says so.
    rerun = cli(stack, "rerun", rotation_id, "--json").json()
    assert rerun["mode"] == "restart"
    assert "undos ran" in rerun["note"]
    wait_for(stack, rotation_id, step="approval", until=(), timeout=60)
    assert cli(stack, "approve", rotation_id, "--approver", "alice").code == OK
    assert_rotated(stack, seeded, old, wait_for(stack, rotation_id))
    # A completed rotation cannot be rewound (409), only restarted.
    cli(stack, "rerun", rotation_id).assert_error(CONFLICT, "only a failed rotation can be rewound")
    assert_no_value_leaked(stack, seeded)


def test_rerun_restart_runs_a_finished_rotation_again_and_changes_nothing_more(stack: LocalStack) -> None:
    seeded = seed(stack, prefix="cli")
    old = current_password(stack, seeded)
    first = cli(stack, "rotate", seeded.vault, seeded.name, "--wait", "--json").json()
    assert_rotated(stack, seeded, old, first)

    run = cli(stack, "rerun", first["id"], "--restart")

    assert run.code == OK, run
    assert run.out.strip() == f"restart {first['id']}"
    deadline = time.monotonic() + 60
    while (again := rotation(stack, first["id"])) == first or again["runtimeStatus"] not in (
        "Completed",
        "Failed",
    ):
        assert time.monotonic() < deadline, again
        time.sleep(0.3)
    # The restart found its own version promoted: no new version, the same one still logs in.
    assert again["runtimeStatus"] == "Completed"
    assert again["output"]["new_version"] == first["output"]["new_version"]
    assert_rotated(stack, seeded, old, again)


def test_status_shows_when_the_previous_issued_credential_is_retired(stack: LocalStack) -> None:
    """An Entra application's secret: after promotion the rotation waits out the overlap
    (``retireAt``), then retires the credential the previous version held."""
    seeded = stack.seed_app_secret("spoke1-kv", unique("cli-app"), overlap_hours=1, record_credential=True)
    started = cli(stack, "rotate", seeded.vault, seeded.name, "--json").json()
    waiting = wait_for(stack, started["id"], step="retire", until=(), timeout=60)

    shown = cli(stack, "status", started["id"])

    assert shown.code == OK, shown
    retire_at = waiting["status"]["retireAt"]
    assert f"retires the previous credential at {retire_at[:19].replace('T', ' ')}Z" in shown.flat
    assert "current step retire (10/10)" in shown.flat
    # The overlap passes (the host's clock jumps an hour): the rotation retires and ends.
    status, _, body = hub_request(stack, "POST", "/admin/host/clock", {"advanceSeconds": 3600 + 60})
    assert status == 200, body
    done = wait_for(stack, started["id"], timeout=60)
    assert done["runtimeStatus"] == "Completed"
    view = cli(stack, "status", started["id"], "--json").json()
    assert view["status"]["retired"]
    assert list(view["status"]["stepTimes"])[-1] == "retire"
    shown = cli(stack, "status", started["id"])
    assert "retires the previous credential" not in shown.flat
    assert f"retired {view['status']['retired']}" in shown.flat
    assert stack.current_value_logs_in(seeded.vault, seeded.name)


# -- list -----------------------------------------------------------------------------------------


def test_list_filters_by_status_and_vault(stack: LocalStack) -> None:
    # Rotations of this module's earlier tests are there too: the filters must tell them apart.
    one = seed(stack, "spoke1-kv", prefix="cli-list")
    two = seed(stack, "spoke2-kv", prefix="cli-list")
    waiting, waiting_id = waiting_for_approval(stack, "spoke2-kv")
    for seeded in (one, two):
        assert cli(stack, "rotate", seeded.vault, seeded.name, "--wait").code == OK

    everything = cli(stack, "list", "--json").json()["rotations"]
    spoke2 = cli(stack, "list", "--vault", "spoke2-kv", "--json").json()["rotations"]
    running = cli(stack, "list", "--status", "Running", "--json").json()["rotations"]
    both = cli(stack, "list", "--status", "Running,Completed", "--vault", "spoke2-kv", "--json").json()
    table = cli(stack, "list", "--vault", "spoke2-kv")

    ids = {r["id"] for r in everything}
    assert {stack.rotation_id(one), stack.rotation_id(two), waiting_id} <= ids
    assert {r["status"]["vault"] for r in spoke2} == {"spoke2-kv"}
    assert {stack.rotation_id(two), waiting_id} <= {r["id"] for r in spoke2}
    assert stack.rotation_id(one) not in {r["id"] for r in spoke2}
    assert {r["runtimeStatus"] for r in running} == {"Running"}
    assert waiting_id in {r["id"] for r in running}
    assert {r["id"] for r in both["rotations"]} == {
        r["id"] for r in spoke2 if r["runtimeStatus"] in ("Running", "Completed")
    }
    # The table: one row per rotation of the vault, with its state and where it is.
    assert table.code == OK, table
    assert f"{len(spoke2)} rotation(s)" in table.flat
    for view in spoke2:
        assert view["id"] in table.flat
    assert "approval (4/10)" in table.flat
    assert (
        cli(stack, "list", "--status", "Failed", "--vault", "nosuch-kv").out.strip() == "no rotations match"
    )
    cli(stack, "list", "--status", "Sleeping").assert_error(USAGE, "'status' must be", "(HTTP 400)")
    assert cli(stack, "reject", waiting_id, "--reason", "cleanup", "--approver", "t").code == OK
    assert waiting.vault == "spoke2-kv"


# -- errors ----------------------------------------------------------------------------------------


def test_an_unknown_rotation_is_not_found(stack: LocalStack) -> None:
    cli(stack, "status", "rotate_spoke1-kv_nosuch_0123").assert_error(
        NOT_FOUND, "no rotation 'rotate_spoke1-kv_nosuch_0123'", "(HTTP 404)"
    )
    cli(stack, "approve", "nothing-like-an-id", "--approver", "a").assert_error(NOT_FOUND, "(HTTP 404)")
    # A slash in an id stays in its path segment: no other route is reached.
    cli(stack, "rerun", "rotate_x/../../rotations").assert_error(NOT_FOUND, "(HTTP 404)")


def test_bad_input_is_refused_by_the_hub_with_its_reason(stack: LocalStack) -> None:
    cli(stack, "rotate", "spoke1-kv", "no_underscores_allowed").assert_error(USAGE, "(HTTP 400)")
    cli(stack, "rotate", "unknown-kv", "x").assert_error(USAGE, "not configured", "(HTTP 400)")
    cli(stack, "rotate", "spoke1-kv", "no-such-secret").assert_error(NOT_FOUND, "(HTTP 404)")


def test_a_second_rotation_of_a_waiting_secret_is_a_conflict(stack: LocalStack) -> None:
    seeded, rotation_id = waiting_for_approval(stack)

    line = cli(stack, "rotate", seeded.vault, seeded.name).assert_error(
        CONFLICT, f"(rotation {rotation_id}, HTTP 409)"
    )

    assert "still running" in line
    assert cli(stack, "reject", rotation_id, "--reason", "cleanup", "--approver", "t").code == OK


@pytest.mark.parametrize(
    "args",
    [
        ["status"],  # no ID
        ["rotate", "spoke1-kv"],  # no SECRET
        ["rotate", "spoke1-kv", "s", "--timeout", "-1"],
        ["frobnicate"],
        ["list", "--sorted"],
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(stack: LocalStack, args: list[str]) -> None:
    cli(stack, *args).assert_error(USAGE, "(see kvrotate")


def test_no_hub_and_a_bad_hub_url_are_usage_errors() -> None:
    kvrotate(None, "list").assert_error(USAGE, "Missing option '--hub'")
    kvrotate("ftp://example.org", "list").assert_error(USAGE, "--hub must be an http(s) URL")


def test_an_unreachable_hub_is_one_line_and_its_own_exit_code(stack: LocalStack) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["status", "rotate_x"], ["rotate", "spoke1-kv", "s", "--wait"]):
        kvrotate(nobody, *args).assert_error(UNREACHABLE, "cannot reach the hub", nobody)
    # --hub wins over KVROTATE_HUB_URL.
    assert kvrotate(nobody, "list", "--hub", stack.hub_url).code == OK


# -- preflight ------------------------------------------------------------------------------------


def test_preflight_errors_are_one_line(stack: LocalStack) -> None:
    cli(stack, "preflight").assert_error(USAGE, "Missing argument 'VAULT'")
    nobody = f"http://127.0.0.1:{free_port()}"
    kvrotate(nobody, "preflight", "spoke1-kv").assert_error(UNREACHABLE, "cannot reach the hub")
    # A vault that is not configured is bad input, as for POST /api/rotations; a secret it does
    # not hold is not found.
    cli(stack, "preflight", "unknown-kv").assert_error(USAGE, "(HTTP 400)")
    cli(stack, "preflight", "spoke1-kv", "no-such-secret", "--json").assert_error(NOT_FOUND, "(HTTP 404)")


def test_preflight_shows_a_table_per_secret_and_fails_when_a_check_fails(stack: LocalStack) -> None:
    good = seed(stack, prefix="cli-pre")
    locked = seed(stack, prefix="cli-pre")
    stack.database(locked.kind).set_login_allowed(locked.login, allowed=False)
    try:
        answer = cli(stack, "preflight", good.vault, good.name, "--json").json()
        table = cli(stack, "preflight", good.vault, good.name)
        refused = cli(stack, "preflight", locked.vault, locked.name, "--json")
        whole_vault = cli(stack, "preflight", good.vault)
    finally:
        stack.database(locked.kind).set_login_allowed(locked.login, allowed=True)

    assert answer["vault"] == good.vault
    assert answer["ok"] is True
    [secret] = answer["secrets"]
    assert (secret["secret"], secret["target"], secret["ok"]) == (good.name, good.kind, True)
    assert secret["checks"]
    assert all(check["ok"] for check in secret["checks"])
    assert table.code == OK, table
    assert f"✓ {good.name} ({good.kind})" in table.flat
    for check in secret["checks"]:
        assert check["name"] in table.flat
    # The locked login: the check that logs in fails, and so does the command.
    assert refused.code == FAILED, refused
    failing = [c for s in json.loads(refused.out)["secrets"] for c in s["checks"] if not c["ok"]]
    assert failing, refused.out
    # The whole vault: a table per tagged secret; the locked one makes it fail.
    assert whole_vault.code == FAILED, whole_vault
    assert f"✓ {good.name}" in whole_vault.out
    assert f"✗ {locked.name}" in whole_vault.out
