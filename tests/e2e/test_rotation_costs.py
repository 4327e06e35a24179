"""What one rotation costs, as a user can count it: the Key Vault requests the hub's identity
makes (the local cloud's request log, one line per request) and the history the task hub keeps
(the Durable HTTP API's ``showHistory`` and the stored events). Counts, not timings: for a given
rotation they are the same on every run. The rotation: a PostgreSQL login near expiry, without
approval or consumers, started by its SecretNearExpiry event.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from e2e_helpers import seed, seed_admin

from benchmarks.rotation import history_events, history_summary, request_lines
from local.scenario import wait_for
from local.stack import LocalStack, Seeded

HUB = "identity=hub-rotation-identity"
# One activity call per step; the cleanup rides on promote's call.
ACTIVITIES = ["plan_rotation", "stage_pending", "apply_target", "verify_target", "promote_secret"]
# ExecutionStarted and its OrchestratorStarted; per activity TaskScheduled, OrchestratorCompleted,
# OrchestratorStarted, TaskCompleted; ExecutionCompleted and its OrchestratorCompleted.
STORED_EVENTS = 2 + 4 * len(ACTIVITIES) + 2


@pytest.fixture(autouse=True)
def no_expiry_scans(stack: LocalStack) -> Iterator[None]:
    """The local cloud's periodic near-expiry scan would send a second event for the seeded
    secret (10 days to expiry), and its starter's read would count: only the test's event here."""
    assert stack.cloud is not None
    before = stack.cloud.admin.set_eventgrid(scan_interval_seconds=86400)["scan_interval_seconds"]
    yield
    stack.cloud.admin.set_eventgrid(scan_interval_seconds=before)


def vault_requests(lines: list[str], secrets: set[str]) -> list[str]:
    """``METHOD /secrets/<name>[/...]`` of the hub's requests about ``secrets``, in order."""
    found = []
    for line in lines:
        match = re.search(
            r" (GET|PUT|PATCH|POST|DELETE) \S+\.vault\.azure\.net (/secrets/([^/ ]+)\S*) ", line
        )
        if match and HUB in line and match[3] in secrets:
            found.append(f"{match[1]} {match[2]}")
    return found


def arm_requests(lines: list[str]) -> list[str]:
    """``METHOD <path>`` of the hub's Azure Resource Manager requests, in order."""
    found = []
    for line in lines:
        match = re.search(r" (GET|PUT|PATCH|POST|DELETE) management\.azure\.com (\S+) ", line)
        if match and HUB in line:
            found.append(f"{match[1]} {match[2]}")
    return found


# ARM requests the rotations of this module made (the allowlist's check of the vault: once per
# vault per hub process, then remembered).
ARM_SEEN: list[str] = []


def rotate_and_count(stack: LocalStack, seeded: Seeded, *others: str) -> tuple[list[str], dict[str, object]]:
    """Rotate ``seeded`` from its event; the hub's Key Vault requests about it (and ``others``)."""
    assert stack.cloud is not None
    start = stack.cloud.log_file.stat().st_size
    stack.cloud.admin.emit_event(vault=seeded.vault, secret=seeded.name, event_type="SecretNearExpiry")
    done = wait_for(stack, stack.rotation_id(seeded))
    assert done["runtimeStatus"] == "Completed", done["status"]
    assert done["output"]["result"] == "rotated"
    names = {seeded.name, seeded.name + "-pending", *others}
    lines = request_lines(stack, start)
    ARM_SEEN.extend(arm_requests(lines))
    return vault_requests(lines, names), done


# The starter's check; plan: the secret (its tags, and its value for the login that changes),
# and for ``secret:<name>`` the admin secret (it must belong to the target's server); stage: the companion's versions, the write; apply: the pending value, the version rotated (the
# current password), and for ``secret:<name>`` the admin's; verify: the pending value; promote:
# the latest version, the pending value, the write, and the cleanup's disable of the pending
# version. Plan passes the tags on (StepInput.tags) and names the login (StageInput.login), so
# stage and verify do not read the secret again.
REQUESTS = {"self": 11, "secret": 13}


@pytest.mark.parametrize("admin", sorted(REQUESTS))
def test_a_rotation_costs_its_key_vault_requests_and_24_history_events(stack: LocalStack, admin: str) -> None:
    others: tuple[str, ...] = ()
    if admin == "secret":
        admin_secret = seed_admin(stack, "spoke1-kv")
        seeded = seed(stack, admin=f"secret:{admin_secret.name}")
        others = (admin_secret.name,)
    else:
        seeded = seed(stack)

    requests, done = rotate_and_count(stack, seeded, *others)

    assert done["status"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert len(requests) == REQUESTS[admin], "\n".join(requests)
    # Three writes: the pending value, the new version, the pending version disabled by its id
    # (the version stage wrote: no listing before the cleanup).
    pending_version = next(
        r.rsplit("/", 1)[1]
        for r in requests
        if r.startswith(f"GET /secrets/{seeded.name}-pending/") and not r.endswith("/versions")
    )
    assert [r for r in requests if not r.startswith("GET ")] == [
        f"PUT /secrets/{seeded.name}-pending",
        f"PUT /secrets/{seeded.name}",
        f"PATCH /secrets/{seeded.name}-pending/{pending_version}",
    ]
    secret, pending = f"/secrets/{seeded.name}", f"/secrets/{seeded.name}-pending/{pending_version}"
    admin_read = [f"GET /secrets/{others[0]}/"] if others else []
    assert requests == [
        f"GET {secret}/",  # the starter
        f"GET {secret}/",  # plan
        *admin_read,
        f"GET /secrets/{seeded.name}-pending/versions",  # stage
        f"PUT /secrets/{seeded.name}-pending",
        f"GET {pending}",  # apply
        f"GET {secret}/{seeded.version}",
        *admin_read,
        f"GET {pending}",  # verify
        f"GET {secret}/",  # promote
        f"GET {pending}",
        f"PUT {secret}",
        f"PATCH {pending}",
    ]

    events = history_summary(stack, stack.rotation_id(seeded))
    assert [e["EventType"] for e in events] == [
        "ExecutionStarted",
        *["TaskCompleted"] * len(ACTIVITIES),
        "ExecutionCompleted",
    ]
    assert [e["FunctionName"] for e in events[1:-1]] == ACTIVITIES
    assert history_events(stack, stack.rotation_id(seeded)) == (STORED_EVENTS, len(events)) == (24, 7)
    # Apart from Key Vault: ARM, for the allowlist's check of the vault, once per vault and process
    # (this module's rotations share the hub process, and their secrets' vaults).
    vault_ids = {stack.vault_arm_id(v) for v in ("spoke1-kv", "spoke2-kv")}
    assert all(r.startswith("GET ") and r.split("?")[0][4:] in vault_ids for r in ARM_SEEN), ARM_SEEN
    assert len(ARM_SEEN) == len(set(ARM_SEEN)) <= 2, ARM_SEEN
