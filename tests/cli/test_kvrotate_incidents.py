"""``kvrotate incident``: start (and follow) an incident, its status, pause/resume/cancel, and bad
input, against the whole local stack. Each test seeds secrets tagged with a group of its own, so
an incident over a shared vault touches only them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from e2e_helpers import assert_consistent, hold_back, seed, unique, versions_of, wait_until
from kvrotate_runner import Run, in_terminal, kvrotate

from local.cloud.process import AdminClient
from local.stack import LocalStack, Seeded

OK, FAILED, USAGE, NOT_FOUND, CONFLICT = 0, 1, 2, 3, 4
GROUP_TAG = "incident-cli"


def cli(stack: LocalStack, *args: str) -> Run:
    return kvrotate(stack.hub_url, *args)


def seed_group(stack: LocalStack, vault: str, count: int) -> tuple[str, list[Seeded]]:
    """Secrets far from expiry (no event rotates them) tagged with a group of their own."""
    group = unique("grp")
    return group, [
        seed(stack, vault, prefix="inc", tags={GROUP_TAG: group}, expires_in=timedelta(days=300))
        for _ in range(count)
    ]


def summary(stack: LocalStack, incident_id: str) -> dict[str, Any]:
    return dict(cli(stack, "incident", "status", incident_id, "--json").json()["status"])


def wait_summary(stack: LocalStack, incident_id: str, **wanted: Any) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        last = summary(stack, incident_id)
        return all(last.get(k) == v for k, v in wanted.items())

    wait_until(reached, f"incident {incident_id} reaching {wanted}", timeout=120, every=0.5)
    return last


def assert_rotated_once(stack: LocalStack, seeded: Seeded) -> None:
    versions = versions_of(stack, seeded)
    assert len(versions) == 2, (seeded.name, versions)
    assert seeded.version in versions
    assert_consistent(stack, seeded)  # the vault's current version logs in


@pytest.fixture
def cloud(stack: LocalStack) -> Iterator[AdminClient]:
    assert stack.cloud is not None
    yield stack.cloud.admin
    stack.cloud.admin.clear_faults()


def test_start_wait_json_rotates_each_secret_once_and_status_shows_the_summary(stack: LocalStack) -> None:
    group, seeded = seed_group(stack, "spoke1-kv", 2)

    run = cli(
        stack, "incident", "start", "--vault", "spoke1-kv", "--tag", f"{GROUP_TAG}={group}",
        "--reason", "leaked", "--wait", "--json",
    )  # fmt: skip

    ended = run.json()  # exit 0, and stdout is only the final JSON
    incident_id = ended["id"]
    assert ended["runtimeStatus"] == "Completed", ended
    shown = ended["status"]
    assert (shown["state"], shown["total"], shown["done"], shown["failed"]) == ("completed", 2, 2, 0)
    for secret in seeded:
        assert_rotated_once(stack, secret)

    status = cli(stack, "incident", "status", incident_id)
    assert status.code == OK, status
    assert f"incident {incident_id} completed: total 2, done 2, failed 0" in status.flat
    header = next(line for line in status.out.splitlines() if "vault" in line)
    assert [cell.strip() for cell in header.strip().strip("┃").split("┃")] == [
        "vault", "done", "failed", "running", "waiting",
    ]  # fmt: skip
    assert status.table_rows == [["spoke1-kv", "2", "0", "0", "0"]]  # done, failed, running, waiting
    assert summary(stack, incident_id) == shown


def test_pause_resume_cancel_answer_and_change_the_status(stack: LocalStack, cloud: AdminClient) -> None:
    group, seeded = seed_group(stack, "spoke2-kv", 3)
    hold_back(cloud, "spoke2-kv", "set_secret", seconds=3)  # the first rotation's stage
    started = cli(
        stack, "incident", "start", "--vault", "spoke2-kv", "--tag", f"{GROUP_TAG}={group}",
        "--max-per-vault", "1", "--reason", "drill", "--json",
    ).json()  # fmt: skip
    incident_id = started["id"]
    wait_summary(stack, incident_id, running=1)

    paused = cli(stack, "incident", "pause", incident_id)
    assert paused.code == OK, paused
    assert paused.out.strip() == f"pause requested for incident {incident_id} by http api"
    shown = wait_summary(stack, incident_id, state="paused", done=1)
    assert (shown["running"], shown["waiting"]) == (0, 2)
    cli(stack, "incident", "pause", incident_id).assert_error(CONFLICT, "paused", "pause does not apply")

    # The next rotation's stage is held back too, so the incident is still running (not yet
    # completed) when the test looks, and the cancel arrives while a rotation is in flight.
    hold_back(cloud, "spoke2-kv", "set_secret", seconds=3)
    resumed = cli(stack, "incident", "resume", incident_id, "--json").json()
    assert (resumed["id"], resumed["action"]) == (incident_id, "resume")
    wait_summary(stack, incident_id, state="running")

    cancelled = cli(stack, "incident", "cancel", incident_id, "--json").json()
    assert cancelled["action"] == "cancel"
    # watch follows it to its end; a cancelled incident is not a success.
    watched = cli(stack, "incident", "watch", incident_id)
    assert watched.code == FAILED, watched
    assert f"incident {incident_id} cancelled" in watched.out
    assert "\x1b[" not in watched.out  # plain lines in a pipe
    shown = summary(stack, incident_id)
    assert shown["state"] == "cancelled"
    rotated = [s for s in seeded if len(versions_of(stack, s)) == 2]
    assert shown["done"] == len(rotated)
    assert 1 <= len(rotated) < 3
    for secret in rotated:
        assert_rotated_once(stack, secret)


def test_watch_on_a_terminal_draws_a_progress_bar(stack: LocalStack) -> None:
    group, _ = seed_group(stack, "spoke1-kv", 1)
    incident_id = cli(
        stack, "incident", "start", "--vault", "spoke1-kv", "--tag", f"{GROUP_TAG}={group}",
        "--reason", "drill", "--json",
    ).json()["id"]  # fmt: skip

    run = in_terminal(stack.hub_url, "incident", "watch", incident_id)

    assert run.code == OK, run
    assert "━" in run.out  # Rich's bar
    assert "completed: total 1, done 1" in run.out


def test_bad_input_is_one_line_with_its_exit_code(stack: LocalStack) -> None:
    cli(stack, "incident", "start", "--reason", "x").assert_error(USAGE, "exactly one of")
    cli(stack, "incident", "start", "--all", "--vault", "spoke1-kv", "--reason", "x").assert_error(
        USAGE, "exactly one of"
    )
    cli(stack, "incident", "start", "--vault", "spoke1-kv").assert_error(USAGE, "--reason")
    cli(stack, "incident", "start", "--vault", "spoke1-kv", "--tag", "novalue", "--reason", "x").assert_error(
        USAGE, "NAME=VALUE"
    )
    unknown = "incident_" + "0" * 32
    cli(stack, "incident", "status", unknown).assert_error(NOT_FOUND, "no incident")
    cli(stack, "incident", "cancel", unknown).assert_error(NOT_FOUND, "no incident")
