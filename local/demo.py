"""``make demo``: the rotation hub end to end on this machine, then a verdict.

Throwaway PostgreSQL and MariaDB servers, the local cloud (two spoke vaults in two subscriptions, the hub
identity, consumer apps that read their secret once at start, a storage account whose blob
endpoint Azurite serves) and the local Functions host running this app. Seven secrets near
expiry are seeded (one requires approval); Event Grid delivers SecretNearExpiry; the demo
approves through the HTTP API, prints progress and a final table, rotates the alternating logins
and the storage key a second time, and exits 0 only if every rotation ended as expected and
every consumer app is healthy on its new credential. Nothing is left running.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from local import principals
from local.principals import APPROVER
from local.scenario import (
    ENDED,
    consumer_health,
    hub_call,
    rotations,
    seed_demo_secrets,
    start_consumer,
    wait_for,
)
from local.stack import (
    BLOB_CONSUMER_SITE,
    CONSUMER_SITE,
    ENTRA,
    NOTIFY_TOPIC,
    REPO_ROOT,
    SP_CONSUMER_SITE,
    STORAGE,
    STORAGE_ACCOUNT,
    LocalStack,
    Seeded,
)
from rotation import metadata
from rotation.login_values import LoginShape
from rotation.targets import storage
from rotation.targets.base import SecretValue

TIMEOUT_SECONDS = 180


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def follow(
    stack: LocalStack,
    expected: dict[str, Seeded],
    approve: str,
    since: float,
    on_step: Callable[[str, dict[str, Any]], None] = lambda rid, status: None,
) -> dict[str, dict[str, Any]]:
    """Print every step change until all expected rotations end; approve the one that asks;
    call ``on_step`` at each step change.

    Durations count from ``since`` (when the events were emitted), approval wait included."""
    seen: dict[str, tuple[str, str]] = {}
    ended: dict[str, dict[str, Any]] = {}
    approved = False
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while len(ended) < len(expected):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"rotations still running after {TIMEOUT_SECONDS}s: {sorted(set(expected) - set(ended))}"
            )
        for item in rotations(stack):
            rid = item["id"]
            if rid not in expected or rid in ended:
                continue
            status = item.get("status") or {}
            now = (item["runtimeStatus"], str(status.get("step", "")))
            if seen.get(rid) != now:
                seen[rid] = now
                say(f"{expected[rid].vault}/{expected[rid].name}: {now[0]}, step {now[1] or '-'}")
                on_step(rid, status)
            if rid == approve and status.get("step") == "approval" and not approved:
                code, _body = hub_call(
                    stack,
                    "POST",
                    f"/api/rotations/{rid}/approve",
                    {"reason": "scheduled rotation"},
                    headers=stack.signed_in(APPROVER),
                )
                say(
                    f"approved {expected[rid].name} as {principals.name(APPROVER)} (signed in through "
                    f"App Service authentication) with POST /api/rotations/{{id}}/approve -> {code}"
                )
                approved = code == 200
            if item["runtimeStatus"] in ENDED:
                item["duration"] = time.monotonic() - since
                ended[rid] = item
        time.sleep(0.3)
    return ended


def secrets_of(stack: LocalStack, seeded: Seeded, *values: str) -> list[str]:
    """The values, and the passwords inside them when they carry a login (JSON, a connection string)."""
    meta = metadata.parse_tags(
        seeded.name, stack.secret_client(seeded.vault).get_secret(seeded.name).properties.tags
    )
    found = list(values)
    if seeded.kind == STORAGE:
        found += [storage.key_in(SecretValue(value), meta.value_format, seeded.login) for value in values]
    elif meta.value_format != "password":
        shape = LoginShape.of(meta)
        found += [shape.read(SecretValue(value)).password.reveal() for value in values]
    return found


def alternate_again(stack: LocalStack, seeded: Seeded, first_value: str, failures: list[str]) -> None:
    """The second rotation of the alternating secret, through the HTTP API, and what a consumer
    that kept the first value meets: it connected through the first rotation, not the second."""
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    conninfo = current.value or ""
    check(
        f"{seeded.name}: a consumer that never restarted still connects with the first value (psycopg)",
        connects(first_value),
        failures,
    )
    code, body = hub_call(stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name})
    say(f"{seeded.name}: rotate now (POST /api/rotations) -> {code}")
    done = wait_for(stack, str(body.get("id")))
    logins = [held_login(stack, seeded, value) for value in (first_value, conninfo, None)]
    say(f"{seeded.name}: its value held {' -> '.join(logins)}")
    check(
        f"{seeded.name}: the second rotation took the logins back",
        done["runtimeStatus"] == "Completed" and logins[0] == logins[2] != logins[1],
        failures,
    )
    check(
        f"{seeded.name}: the first value no longer connects after the second rotation",
        not connects(first_value),
        failures,
    )
    check(f"{seeded.name}: the value of the first rotation still connects", connects(conninfo), failures)


def rotate_key_again(stack: LocalStack, seeded: Seeded, failures: list[str]) -> None:
    """The second rotation of the storage key, through the HTTP API: key1 this time; the consumer,
    restarted again, keeps writing blobs; the key of the first rotation stays valid."""
    client = stack.secret_client(seeded.vault)
    first = client.get_secret(seeded.name)
    code, body = hub_call(stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name})
    say(f"{seeded.name}: rotate now (POST /api/rotations) -> {code}")
    done = wait_for(stack, str(body.get("id")))
    current = client.get_secret(seeded.name)
    held = [
        (version.tags or {}).get(metadata.CREDENTIAL_ID, "key1 (written by hand)")
        for version in (
            client.get_secret(seeded.name, seeded.version).properties,
            first.properties,
            current.properties,
        )
    ]
    say(f"{seeded.name}: its versions held {' -> '.join(held)}")
    check(
        f"{seeded.name}: the second rotation regenerated key1, the key the first rotation's version did not hold",
        done["runtimeStatus"] == "Completed" and held[1:] == ["key2", "key1"],
        failures,
    )
    check(
        f"{seeded.name}: the first rotation's key still works, the original key1 no longer does",
        stack.value_logs_in(seeded.vault, seeded.name, first.properties.version)
        and not stack.value_logs_in(seeded.vault, seeded.name, seeded.version),
        failures,
    )
    health = consumer_health(stack, BLOB_CONSUMER_SITE)
    check(
        f"{BLOB_CONSUMER_SITE} writes blobs on the version {str(current.properties.version)[:8]} after its second restart",
        bool(health.get("ok")) and health.get("version") == current.properties.version,
        failures,
    )


def held_login(stack: LocalStack, seeded: Seeded, value: str | None) -> str:
    client = stack.secret_client(seeded.vault)
    current = client.get_secret(seeded.name)
    shape = LoginShape.of(metadata.parse_tags(seeded.name, current.properties.tags))
    return shape.read(SecretValue(value if value is not None else current.value or "")).credential


def connects(conninfo: str) -> bool:
    """What a consumer does with a libpq connection string: connect with it, as it is."""
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def target_log(stack: LocalStack, seeded: Seeded) -> tuple[str, str]:
    """The log the target itself keeps of changes: a database's statement log, for an
    application the local cloud's (Graph and Entra requests), for a storage account the local
    cloud's (ARM) and Azurite's (the blob endpoint)."""
    if seeded.kind == ENTRA:
        assert stack.cloud is not None
        return "the local cloud's log", stack.cloud.log_file.read_text(errors="replace")
    if seeded.kind == STORAGE:
        assert stack.cloud is not None
        azurite = Path(stack.info["azurite"]["log"])
        text = stack.cloud.log_file.read_text(errors="replace")
        return "the local cloud's and Azurite's logs", text + (
            azurite.read_text(errors="replace") if azurite.exists() else ""
        )
    server = stack.database(seeded.kind)
    return f"{server.name}'s statement log", server.server_log()


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check(name: str, ok: bool, failures: list[str]) -> None:
    say(f"{'ok  ' if ok else 'FAIL'} {name}")
    if not ok:
        failures.append(name)


def main() -> int:
    # The demo checks that a retired client secret is refused: azure-identity logs each refusal
    # as a warning, which would land on the terminal as if something had gone wrong.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    data = REPO_ROOT / ".data" / "demo"
    shutil.rmtree(data, ignore_errors=True)
    failures: list[str] = []
    say("starting PostgreSQL, MariaDB, the local cloud and the local Functions host with the app ...")
    with LocalStack(data) as stack:
        assert stack.cloud is not None
        assert stack.host is not None
        for vault, info in sorted(stack.info["vaults"].items()):
            say(f"vault {vault}: {info['arm_id']}")
        say(f"hub: {stack.hub_url} (log {stack.host.log_path})")
        for database in stack.databases.values():
            say(f"{database.name}: {database.host}:{database.port} (holds {database.kind} targets)")

        seeded = seed_demo_secrets(stack)
        for s in seeded.all():
            say(
                f"seeded {s.vault}/{s.name} ({s.kind} {s.login}, version {s.version[:8]}, expires in 10 days)"
            )
        for site in (CONSUMER_SITE, SP_CONSUMER_SITE, BLOB_CONSUMER_SITE):
            health = start_consumer(stack, site)
            say(f"{site} running, healthy={health.get('ok')} on version {str(health.get('version'))[:8]}")
        application = stack.application()
        say(
            f"application {application['display_name']} ({application['app_id']}) holds client secret(s) "
            + ", ".join(c["key_id"][:8] for c in application["password_credentials"])
        )
        say(
            f"storage account {STORAGE_ACCOUNT}: {stack.storage_account_id()} (blob endpoint served by Azurite)"
        )

        since = time.monotonic()
        emitted = stack.cloud.admin.scan_now()
        say(f"Event Grid: the vaults' expiry scan emitted {len(emitted)} event(s); delivering to the hub")
        expected = {stack.rotation_id(s): s for s in seeded.all()}
        app = seeded.application
        app_old = stack.secret_client(app.vault).get_secret(app.name, app.version).value or ""
        alt = seeded.alternating
        alternating_first = stack.secret_client(alt.vault).get_secret(alt.name, alt.version).value or ""

        def during_the_overlap(rid: str, status: dict[str, Any]) -> None:
            if rid == stack.rotation_id(app) and status.get("step") == "retire":
                new = stack.secret_client(app.vault).get_secret(app.name).value or ""
                say(f"{app.name}: promoted; the previous secret is retired at {status.get('retireAt')}")
                check(
                    f"{app.name}: during the overlap both the new and the previous secret work",
                    stack.app_accepts(app.login, new) and stack.app_accepts(app.login, app_old),
                    failures,
                )

        ended = follow(
            stack,
            expected,
            approve=stack.rotation_id(seeded.approved),
            since=since,
            on_step=during_the_overlap,
        )

        rows = [("secret", "rotation id", "steps done", "result", "duration")]
        for rid, item in ended.items():
            s = expected[rid]
            output = item.get("output") or {}
            result = output.get("result") if isinstance(output, dict) else item["runtimeStatus"]
            steps = (item.get("status") or {}).get("stepsDone", [])
            rows.append(
                (f"{s.vault}/{s.name}", rid, ",".join(steps), str(result), f"{item['duration']:.1f}s")
            )
        print("\n" + table(rows) + "\n", flush=True)

        for rid, item in ended.items():
            s = expected[rid]
            output = item.get("output") or {}
            check(
                f"{s.name}: rotated", isinstance(output, dict) and output.get("result") == "rotated", failures
            )
            check(
                f"{s.name}: the vault's latest version logs in",
                stack.current_value_logs_in(s.vault, s.name),
                failures,
            )
            old = stack.secret_client(s.vault).get_secret(s.name, s.version).value or ""
            if s is seeded.alternating:
                check(
                    f"{s.name}: the previous value still logs in (alternating: its login was not changed)",
                    stack.value_logs_in(s.vault, s.name, s.version),
                    failures,
                )
            elif s is seeded.storage:
                check(
                    f"{s.name}: the previous key still works (key2 was regenerated; key1 stays until the next rotation)",
                    stack.value_logs_in(s.vault, s.name, s.version) and stack.credential_id(s) == "key2",
                    failures,
                )
            else:
                check(
                    f"{s.name}: the previous {'secret' if s.kind == ENTRA else 'password'} no longer works"
                    + (" (retired after the overlap)" if s.kind == ENTRA else ""),
                    not stack.value_logs_in(s.vault, s.name, s.version),
                    failures,
                )
            pending = [
                p
                for p in stack.secret_client(s.vault).list_properties_of_secret_versions(s.name + "-pending")
                if p.enabled
            ]
            check(f"{s.name}: no pending value left enabled", not pending, failures)
            new = stack.secret_client(s.vault).get_secret(s.name).value or ""
            log_name, log = target_log(stack, s)
            check(
                f"{s.name}: neither value (nor a password in it) is in {log_name}",
                bool(old and new) and not any(text in log for text in secrets_of(stack, s, old, new)),
                failures,
            )
        alternate_again(stack, seeded.alternating, alternating_first, failures)
        rotate_key_again(stack, seeded.storage, failures)
        approved_output = ended[stack.rotation_id(seeded.approved)].get("output") or {}
        decision = approved_output.get("decision") if isinstance(approved_output, dict) else None
        approver = decision.get("approver") if isinstance(decision, dict) else None
        verified = decision.get("verified") if isinstance(decision, dict) else None
        check(
            "approval recorded the signed-in approver",
            approver == principals.name(APPROVER) and verified is True,
            failures,
        )
        approved_id = stack.rotation_id(seeded.approved)
        told = [e["type"] for e in stack.topic_events() if e["data"].get("rotationId") == approved_id]
        say(f"notifications on the Event Grid topic {NOTIFY_TOPIC} about {seeded.approved.name}: {told}")
        check(
            "the approval's wait and decision were published to the notification topic",
            told == ["KeyVaultRotationHub.ApprovalWaiting", "KeyVaultRotationHub.RotationDecided"],
            failures,
        )
        for site, s in (
            (CONSUMER_SITE, seeded.consumer),
            (SP_CONSUMER_SITE, seeded.application),
            (BLOB_CONSUMER_SITE, seeded.storage),
        ):
            health = consumer_health(stack, site)
            new_version = stack.secret_client(s.vault).get_secret(s.name).properties.version
            check(
                f"{site} healthy on the new version {str(new_version)[:8]} after its restart",
                bool(health.get("ok")) and health.get("version") == new_version,
                failures,
            )
        application = stack.application()
        check(
            "the application holds exactly one client secret, the new one",
            [c["key_id"] for c in application["password_credentials"]]
            == [stack.credential_id(seeded.application)],
            failures,
        )
    say("stopped everything")
    if failures:
        say(f"demo FAILED: {len(failures)} check(s) did not hold")
        return 1
    say("demo passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
