"""Key Vault events delivered to the hub's Event Grid webhook, as Event Grid and the local cloud
send them: duplicates start one rotation, stale and foreign events start nothing, malformed and
hostile payloads are refused with a log line saying why, and a busy secret is left alone.

The local cloud's own expiry scan is switched off for this module: every event here is sent by
the test (or emitted by the cloud when the test asks), so "nothing started" means something.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from e2e_helpers import (
    HostLog,
    assert_consistent,
    assert_no_value_leaked,
    assert_untouched,
    cloud_event,
    current_password,
    event_grid_event,
    instance_ids,
    post_events,
    quiet_expiry_scan,
    reject,
    seed,
    unique,
    versions_of,
    write_version,
)

from local.scenario import hub_call, wait_for
from local.stack import LocalStack, Seeded
from rotation import metadata
from rotation.model import SecretRef

FOREIGN_SUBSCRIPTION = "0b1f6c2e-7d3a-4e59-9c1b-2a4d5e6f7a8b"


@pytest.fixture(scope="module", autouse=True)
def _only_our_events(stack: LocalStack) -> None:
    quiet_expiry_scan(stack)


def prefix_of(stack: LocalStack, seeded: Seeded) -> str:
    return SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name).rotation_id_prefix()


def assert_rotated_once(stack: LocalStack, seeded: Seeded, old_password: str) -> dict[str, Any]:
    """One instance for the secret, completed, one new version that logs in; the old one does not."""
    rotation_id = stack.rotation_id(seeded)
    assert instance_ids(stack, prefix_of(stack, seeded)) == {rotation_id}
    done = wait_for(stack, rotation_id)
    assert done["runtimeStatus"] == "Completed", done
    assert done["output"]["result"] == "rotated"
    assert len(versions_of(stack, seeded)) == 2
    assert current_password(stack, seeded) != old_password
    assert not stack.logs_in(seeded, old_password)
    assert_consistent(stack, seeded)
    return done


# -- schemas ---------------------------------------------------------------------------------


def test_an_event_grid_array_rotates_the_secret(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    old = current_password(stack, seeded)

    status, _ = post_events(stack, [event_grid_event(stack, seeded)])

    assert status == 202
    done = assert_rotated_once(stack, seeded, old)
    assert done["status"]["stepsDone"] == ["plan", "stage", "apply", "verify", "promote", "cleanup"]
    assert_no_value_leaked(stack, seeded)


def test_a_cloudevents_event_rotates_the_secret(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv")
    old = current_password(stack, seeded)

    status, _ = post_events(stack, cloud_event(stack, seeded))

    assert status == 202
    assert_rotated_once(stack, seeded, old)
    assert_no_value_leaked(stack, seeded)


def test_a_sloppy_but_honest_payload_is_accepted(stack: LocalStack) -> None:
    """The documentation's own sample: NBF/EXP as strings, stray spaces in keys and values."""
    seeded = seed(stack, "spoke1-kv")
    old = current_password(stack, seeded)
    event = event_grid_event(stack, seeded)
    data = event["data"]
    event["data"] = {
        "Id": data["Id"],
        "VaultName": data["VaultName"],
        "ObjectType": "Secret",
        "ObjectName ": data["ObjectName"],
        "Version": " " + data["Version"],
        "NBF": str(data["NBF"]),
        "EXP": None,
    }

    status, _ = post_events(stack, [event])

    assert status == 202
    assert_rotated_once(stack, seeded, old)
    assert_no_value_leaked(stack, seeded)


def test_an_event_emitted_by_the_cloud_and_delivered_twice_rotates_once(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, "spoke2-kv")
    old = current_password(stack, seeded)
    log = HostLog(stack)
    stack.cloud.admin.set_eventgrid(duplicates=True)
    try:
        event = stack.cloud.admin.emit_event(
            vault=seeded.vault, secret=seeded.name, event_type="SecretNearExpiry"
        )
        text = log.wait_for(f"event grid on_secret_event event {event['id']} ", count=2)
    finally:
        stack.cloud.admin.set_eventgrid(duplicates=False)

    assert text.count(f"started: SecretNearExpiry for version {seeded.version}") == 1
    assert_rotated_once(stack, seeded, old)
    assert_no_value_leaked(stack, seeded)


# -- duplicates ------------------------------------------------------------------------------


def test_the_same_event_ten_times_at_once_and_in_sequence_rotates_once(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    old = current_password(stack, seeded)
    event = event_grid_event(stack, seeded)
    log = HostLog(stack)
    answers: list[int] = []

    def deliver() -> None:
        answers.append(post_events(stack, [event])[0])

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(stack, stack.rotation_id(seeded))
    for _ in range(10):
        deliver()

    assert answers == [202] * 20
    assert_rotated_once(stack, seeded, old)
    # Every delivery but one was recognised for what it was; none was mistaken for another rotation.
    said = [
        line for line in log.text().splitlines() if f"starters.launcher: rotation of {seeded.vault}/" in line
    ]
    assert len(said) == 20, said
    outcomes = [line.split(f"{seeded.name} ", 1)[1].split(":", 1)[0] for line in said]
    assert outcomes.count("started") == 1, said
    assert set(outcomes) <= {"started", "duplicate", "ignored"}, said
    assert_no_value_leaked(stack, seeded)


def test_ten_copies_in_one_delivery_rotate_once(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv")
    old = current_password(stack, seeded)
    event = event_grid_event(stack, seeded)

    status, _ = post_events(stack, [event] * 10)

    assert status == 202
    assert_rotated_once(stack, seeded, old)
    assert_no_value_leaked(stack, seeded)


# -- events that must start nothing ------------------------------------------------------------


def test_an_event_about_a_version_that_is_no_longer_current_starts_nothing(stack: LocalStack) -> None:
    first = seed(stack, "spoke1-kv")
    password = current_password(stack, first)
    second = write_version(stack, first)  # someone rotated by hand since the event was raised
    event = event_grid_event(stack, first)
    log = HostLog(stack)

    status, _ = post_events(stack, [event])

    assert status == 202
    assert instance_ids(stack, prefix_of(stack, first)) == set()
    assert f"no longer current (the current version is {second.version})" in log.text()
    assert sorted(versions_of(stack, first)) == sorted([first.version, second.version])
    assert current_password(stack, first) == password
    assert stack.logs_in(first, password)


def test_a_secret_without_a_rotation_target_starts_nothing(stack: LocalStack) -> None:
    name = unique("untagged")
    login = name.replace("-", "_")
    password = stack.create_login(login)
    written = stack.secret_client("spoke2-kv").set_secret(name, password, tags={"owner": "team-a"})
    seeded = Seeded(vault="spoke2-kv", name=name, version=str(written.properties.version), login=login)
    event = event_grid_event(stack, seeded)
    log = HostLog(stack)

    status, _ = post_events(stack, [event])

    assert status == 202
    assert instance_ids(stack, prefix_of(stack, seeded)) == set()
    assert f"{name} ignored: secret {name!r} has no {metadata.TARGET} tag" in log.text()
    assert_untouched(stack, seeded, password)


def test_an_event_about_a_pending_companion_starts_nothing(stack: LocalStack) -> None:
    owner = seed(stack, "spoke1-kv")
    password = current_password(stack, owner)
    # A companion as a rotation leaves it: tagged like its secret (so only its name marks it).
    client = stack.secret_client(owner.vault)
    tags = client.get_secret(owner.name).properties.tags
    companion = client.set_secret(owner.name + "-pending", password, tags=tags)
    seeded = Seeded(owner.vault, owner.name + "-pending", str(companion.properties.version), owner.login)
    event = event_grid_event(stack, seeded)
    log = HostLog(stack)

    status, _ = post_events(stack, [event])

    assert status == 202
    assert instance_ids(stack, prefix_of(stack, seeded)) == set()
    assert instance_ids(stack, prefix_of(stack, owner)) == set()
    assert f"event {event['id']} ignored: secret {seeded.name!r} is a pending companion" in log.text()
    assert versions_of(stack, owner) == [owner.version]
    assert stack.logs_in(owner, password)


def test_other_event_types_and_objects_start_nothing(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    cases: list[tuple[dict[str, Any], str]] = []
    for event_type in (
        "Microsoft.KeyVault.SecretNewVersionCreated",
        "Microsoft.KeyVault.CertificateNearExpiry",
    ):
        cases.append(
            (
                event_grid_event(stack, seeded, event_type=event_type),
                f"event type {event_type!r} is not handled",
            )
        )
    no_type = event_grid_event(stack, seeded)
    del no_type["eventType"]
    cases.append((no_type, "event type '(none)' is not handled"))
    numeric_type = event_grid_event(stack, seeded)
    numeric_type["eventType"] = 7
    cases.append((numeric_type, "event type '(none)' is not handled"))
    a_key = event_grid_event(stack, seeded)
    a_key["data"]["ObjectType"] = "Key"
    cases.append((a_key, "object type 'Key' is not a secret"))
    log = HostLog(stack)

    status, _ = post_events(stack, [event for event, _ in cases])

    assert status == 202
    text = log.text()
    for event, reason in cases:
        assert f"event {event['id']} ignored: {reason}" in text, (reason, text)
    assert instance_ids(stack, prefix_of(stack, seeded)) == set()
    assert_untouched(stack, seeded, password)


# -- malformed and hostile events ------------------------------------------------------------

Mutation = Callable[[dict[str, Any], LocalStack, Seeded], None]


def _drop(*path: str) -> Mutation:
    def mutate(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _set(*path: str, value: object) -> Mutation:
    def mutate(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _foreign_subscription(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    # Same resource group and vault name as a real spoke, in a subscription nobody allowed.
    parts = event["topic"].split("/")
    parts[2] = FOREIGN_SUBSCRIPTION
    event["topic"] = "/".join(parts)


def _other_vault_in_id(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    other = "spoke2-kv" if seeded.vault == "spoke1-kv" else "spoke1-kv"
    event["data"]["Id"] = event["data"]["Id"].replace(seeded.vault, other)


def _invalid_vault_name(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    event["topic"] = event["topic"].rsplit("/", 1)[0] + "/spoke1--kv"


def _invalid_secret_name(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    bad = seeded.name.replace("-", "_") + "!"
    event["subject"] = bad
    event["data"]["ObjectName"] = bad
    event["data"]["Id"] = event["data"]["Id"].replace(f"/secrets/{seeded.name}/", f"/secrets/{bad}/")


def _vault_name_disagrees(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    event["data"]["VaultName"] = "spoke2-kv" if seeded.vault == "spoke1-kv" else "spoke1-kv"


def _another_secret_in_id(event: dict[str, Any], stack: LocalStack, seeded: Seeded) -> None:
    event["data"]["Id"] = event["data"]["Id"].replace(f"/secrets/{seeded.name}/", "/secrets/app-db-password/")


# (case, mutation, what the log line says)
HOSTILE: list[tuple[str, Mutation, str]] = [
    ("no data", _drop("data"), "the event has no data object"),
    ("no topic", _drop("topic"), "event topic '' is not a Key Vault ARM id"),
    ("no version", _drop("data", "Version"), "'' is not a Key Vault secret version"),
    ("data is a string", _set("data", value="not an object"), "the event has no data object"),
    ("data is a list", _set("data", value=[1, 2]), "the event has no data object"),
    ("topic is a number", _set("topic", value=42), "is not a Key Vault ARM id"),
    ("version is a number", _set("data", "Version", value=123), "is not a Key Vault secret version"),
    ("version is not hex", _set("data", "Version", value="z" * 32), "is not a Key Vault secret version"),
    ("topic is a storage account", _set("topic", value="/subscriptions/x/resourceGroups/rg"), "ARM id"),
    (
        "foreign subscription",
        _foreign_subscription,
        f"subscription {FOREIGN_SUBSCRIPTION} is not on the allowlist",
    ),
    ("invalid vault name", _invalid_vault_name, "'spoke1--kv' is not a valid Key Vault name"),
    ("invalid secret name", _invalid_secret_name, "is not a valid secret name"),
    (
        "data.Id at another host",
        _set("data", "Id", value="https://attacker.example.net/secrets/x/0123456789abcdef0123456789abcdef"),
        "data.Id points at 'attacker.example.net'",
    ),
    ("data.Id at another vault", _other_vault_in_id, "data.Id points at"),
    (
        "data.Id over plain http",
        lambda e, s, d: e["data"].update(Id=e["data"]["Id"].replace("https:", "http:")),
        "data.Id points at",
    ),
    (
        "data.Id names another secret",
        _another_secret_in_id,
        "data.Id does not name the same secret and version",
    ),
    ("topic and VaultName disagree", _vault_name_disagrees, "is not the vault of the topic"),
    ("subject and ObjectName disagree", _set("subject", value="app-db-password"), "and data.ObjectName"),
]


def test_malformed_and_hostile_events_start_nothing_and_are_logged(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv")
    password = current_password(stack, seeded)
    before = instance_ids(stack)
    log = HostLog(stack)

    refusals: dict[str, tuple[str, str]] = {}
    for case, mutate, reason in HOSTILE:
        event = copy.deepcopy(event_grid_event(stack, seeded))
        mutate(event, stack, seeded)
        status, body = post_events(stack, [event])
        # Acknowledged: delivering the event again would not change the answer.
        assert status == 202, f"{case}: {status} {body}"
        refusals[case] = (event["id"], reason)

    # The same, in the CloudEvents schema.
    foreign = cloud_event(stack, seeded)
    foreign["source"] = foreign["source"].replace(stack.subscription_of(seeded.vault), FOREIGN_SUBSCRIPTION)
    assert post_events(stack, foreign)[0] == 202
    refusals["cloudevent from a foreign subscription"] = (
        foreign["id"],
        f"subscription {FOREIGN_SUBSCRIPTION} is not on the allowlist",
    )

    text = log.text()
    for case, (event_id, reason) in refusals.items():
        lines = [line for line in text.splitlines() if f"event {event_id} refused: " in line]
        assert len(lines) == 1, f"{case}: no refusal logged for event {event_id}:\n{text}"
        assert reason in lines[0], f"{case}: {lines[0]}"
        assert " WARNING " in lines[0], f"{case}: {lines[0]}"
    assert instance_ids(stack) == before
    assert_untouched(stack, seeded, password)


def test_bodies_that_are_not_events_are_refused_by_the_host(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke2-kv")
    password = current_password(stack, seeded)
    before = instance_ids(stack)
    valid = json.dumps([event_grid_event(stack, seeded)]).encode()

    for raw in (b"this is not json", valid[:-7], b"[1, 2, 3]", b'["a string"]', b"\xff\xfe{}"):
        status, body = post_events(stack, raw=raw)
        assert status == 400, f"{raw[:30]!r}: {status} {body}"

    assert instance_ids(stack) == before
    assert_untouched(stack, seeded, password)


# -- a secret with a rotation running --------------------------------------------------------


def test_an_event_while_a_rotation_of_the_secret_waits_starts_nothing(stack: LocalStack) -> None:
    assert stack.cloud is not None
    seeded = seed(stack, "spoke2-kv", tags={metadata.APPROVAL: "required"})
    password = current_password(stack, seeded)
    waiting_id = stack.rotation_id(seeded)
    assert post_events(stack, [event_grid_event(stack, seeded)])[0] == 202
    wait_for(stack, waiting_id, step="approval", until=())

    # The same version again: that rotation exists already.
    log = HostLog(stack)
    again = event_grid_event(stack, seeded)
    assert post_events(stack, [again])[0] == 202
    assert "busy" not in log.text()
    assert f"duplicate: a rotation of this version exists already ({waiting_id})" in log.text()

    # A new version written meanwhile, announced by the vault: its rotation must wait its turn.
    newer = write_version(stack, seeded)
    log = HostLog(stack)
    stack.cloud.admin.emit_event(vault=seeded.vault, secret=seeded.name, event_type="SecretNearExpiry")
    text = log.wait_for(f"{seeded.name} busy: rotation {waiting_id} of this secret is still running")
    assert f"({stack.rotation_id(newer)})" in text
    assert instance_ids(stack, prefix_of(stack, seeded)) == {waiting_id}

    # The rotate-now API says the same.
    status, body = hub_call(
        stack, "POST", "/api/rotations", {"vault": stack.vault_arm_id(seeded.vault), "secret": seeded.name}
    )
    assert status == 409, body
    assert "still running" in body["error"]
    assert instance_ids(stack, prefix_of(stack, seeded)) == {waiting_id}

    reject(stack, waiting_id, "superseded")
    done = wait_for(stack, waiting_id)
    assert done["output"]["result"] == "rejected"
    assert current_password(stack, seeded) == password
    assert stack.logs_in(seeded, password)
    assert_consistent(stack, seeded)
    assert_no_value_leaked(stack, seeded)


def test_expired_events_rotate_too(stack: LocalStack) -> None:
    seeded = seed(stack, "spoke1-kv", expires_in=timedelta(days=-1))
    old = current_password(stack, seeded)

    status, _ = post_events(
        stack, [event_grid_event(stack, seeded, event_type="Microsoft.KeyVault.SecretExpired")]
    )

    assert status == 202
    done = assert_rotated_once(stack, seeded, old)
    assert (
        done["output"]["new_version"]
        == stack.secret_client(seeded.vault).get_secret(seeded.name).properties.version
    )
    assert_no_value_leaked(stack, seeded)
