"""What one rotation costs, as a user can count it: the Key Vault requests the hub's identity
makes (the local cloud's request log, one line per request) and the history the task hub keeps
(the Durable HTTP API's ``showHistory`` and the stored events). Counts, not timings: for a given
rotation they are the same on every run. The rotation: a PostgreSQL login near expiry, without
approval or consumers, started by its SecretNearExpiry event. Twice: with the hub's default
``ROTATION_KEYVAULT_CACHE_SECONDS``, where the steps, running in one worker process as on the
local host with one worker, share the versions they read or wrote by id; and with 0, which is
what a rotation costs when each step runs in another process (another instance in Azure).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from e2e_helpers import module_stack, seed, seed_admin

from benchmarks.rotation import history_events, history_summary, request_lines
from local.scenario import wait_for
from local.stack import POSTGRESQL, LocalStack, Seeded

HUB = "identity=hub-rotation-identity"
# One activity call per step; the cleanup rides on promote's call.
ACTIVITIES = ["plan_rotation", "stage_pending", "apply_target", "verify_target", "promote_secret"]
# ExecutionStarted and its OrchestratorStarted; per activity TaskScheduled, OrchestratorCompleted,
# OrchestratorStarted, TaskCompleted; ExecutionCompleted and its OrchestratorCompleted.
STORED_EVENTS = 2 + 4 * len(ACTIVITIES) + 2


# ARM requests the rotations of this module made (the allowlist's check of the vault: once per
# vault per hub process, then remembered).
ARM_SEEN: list[str] = []


# Versions by id served from memory to the steps after the one that read or wrote them.
SHARED, UNSHARED = "versions-shared", "each-step-reads"


@pytest.fixture(scope="module", params=[SHARED, UNSHARED])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The module's stack (no periodic near-expiry scan: its event's starter read would count)."""
    cache = {} if request.param == SHARED else {"ROTATION_KEYVAULT_CACHE_SECONDS": "0"}
    ARM_SEEN.clear()  # a new hub process: it confirms each vault once again
    yield from module_stack(tmp_path_factory, cache, databases=(POSTGRESQL,))


@pytest.fixture
def shared(stack: LocalStack) -> bool:
    return "ROTATION_KEYVAULT_CACHE_SECONDS" not in stack.extra_app_settings


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
# and for ``secret:<name>`` the admin secret (it must belong to the target's server); stage: the
# companion's versions, the write; apply: the pending value, the version rotated (the current
# password), and for ``secret:<name>`` the admin's latest; verify: the pending value; promote: the
# latest version, the pending value, the write, and the cleanup's disable of the pending version.
# Plan passes the tags on (StepInput.tags) and names the login (StageInput.login), so stage and
# verify do not read the secret again. With versions shared, the reads by id (the pending value
# stage wrote, the version plan read) come from memory; the latest is always read.
REQUESTS = {(SHARED, "self"): 7, (SHARED, "secret"): 9, (UNSHARED, "self"): 11, (UNSHARED, "secret"): 13}


@pytest.mark.parametrize("admin", ["secret", "self"])
def test_a_rotation_costs_its_key_vault_requests_and_24_history_events(
    stack: LocalStack, shared: bool, admin: str
) -> None:
    others: tuple[str, ...] = ()
    if admin == "secret":
        admin_secret = seed_admin(stack, "spoke1-kv")
        seeded = seed(stack, admin=f"secret:{admin_secret.name}")
        others = (admin_secret.name,)
    else:
        seeded = seed(stack)

    requests, done = rotate_and_count(stack, seeded, *others)

    assert done["status"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert len(requests) == REQUESTS[(SHARED if shared else UNSHARED, admin)], "\n".join(requests)
    # Three writes: the pending value, the new version, the pending version disabled by its id
    # (the version stage wrote: no listing before the cleanup).
    pending_version = requests[-1].rsplit("/", 1)[1]
    assert [r for r in requests if not r.startswith("GET ")] == [
        f"PUT /secrets/{seeded.name}-pending",
        f"PUT /secrets/{seeded.name}",
        f"PATCH /secrets/{seeded.name}-pending/{pending_version}",
    ]
    secret, pending = f"/secrets/{seeded.name}", f"/secrets/{seeded.name}-pending/{pending_version}"
    admin_read = [f"GET /secrets/{others[0]}/"] if others else []
    by_id = (lambda *reads: []) if shared else (lambda *reads: list(reads))
    assert requests == [
        f"GET {secret}/",  # the starter
        f"GET {secret}/",  # plan
        *admin_read,
        f"GET /secrets/{seeded.name}-pending/versions",  # stage
        f"PUT /secrets/{seeded.name}-pending",
        *by_id(f"GET {pending}", f"GET {secret}/{seeded.version}"),  # apply
        *admin_read,
        *by_id(f"GET {pending}"),  # verify
        f"GET {secret}/",  # promote
        *by_id(f"GET {pending}"),
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
