"""``make demo``: the rotation hub end to end on this machine, then a verdict.

Throwaway PostgreSQL and MariaDB servers, the local cloud (two spoke vaults in two subscriptions, the hub
identity, a consumer app that reads its password once at start) and the local Functions host
running this app. Three secrets near expiry are seeded (one requires approval); Event Grid
delivers SecretNearExpiry; the demo approves through the HTTP API, prints progress and a final
table, and exits 0 only if every rotation ended as expected and the consumer app is healthy on
its new password. Nothing is left running.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from local.scenario import (
    ENDED,
    consumer_health,
    hub_call,
    rotations,
    seed_demo_secrets,
    start_consumer,
)
from local.stack import REPO_ROOT, LocalStack, Seeded

TIMEOUT_SECONDS = 180


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def follow(
    stack: LocalStack, expected: dict[str, Seeded], approve: str, since: float
) -> dict[str, dict[str, Any]]:
    """Print every step change until all expected rotations end; approve the one that asks.

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
            if rid == approve and status.get("step") == "approval" and not approved:
                code, _body = hub_call(
                    stack,
                    "POST",
                    f"/api/rotations/{rid}/approve",
                    {"approver": "demo-operator", "reason": "scheduled rotation"},
                )
                say(f"approved {expected[rid].name} through POST /api/rotations/{{id}}/approve -> {code}")
                approved = code == 202
            if item["runtimeStatus"] in ENDED:
                item["duration"] = time.monotonic() - since
                ended[rid] = item
        time.sleep(0.3)
    return ended


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
        health = start_consumer(stack)
        say(f"consumer-app running, healthy={health.get('ok')} on version {str(health.get('version'))[:8]}")

        since = time.monotonic()
        emitted = stack.cloud.admin.scan_now()
        say(f"Event Grid: the vaults' expiry scan emitted {len(emitted)} event(s); delivering to the hub")
        expected = {stack.rotation_id(s): s for s in seeded.all()}
        ended = follow(stack, expected, approve=stack.rotation_id(seeded.approved), since=since)

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
            check(
                f"{s.name}: the previous password no longer does",
                not stack.logs_in(s, old),
                failures,
            )
            pending = [
                p
                for p in stack.secret_client(s.vault).list_properties_of_secret_versions(s.name + "-pending")
                if p.enabled
            ]
            check(f"{s.name}: no pending value left enabled", not pending, failures)
            server = stack.database(s.kind)
            new = stack.secret_client(s.vault).get_secret(s.name).value or ""
            server_log = server.server_log()
            check(
                f"{s.name}: neither password is in {server.name}'s statement log",
                bool(old and new) and old not in server_log and new not in server_log,
                failures,
            )
        approved_output = ended[stack.rotation_id(seeded.approved)].get("output") or {}
        decision = approved_output.get("decision") if isinstance(approved_output, dict) else None
        approver = decision.get("approver") if isinstance(decision, dict) else None
        check("approval recorded the approver", approver == "demo-operator", failures)
        health = consumer_health(stack)
        new_version = (
            stack.secret_client(seeded.consumer.vault).get_secret(seeded.consumer.name).properties.version
        )
        check(
            f"consumer-app healthy on the new version {str(new_version)[:8]} after its restart",
            bool(health.get("ok")) and health.get("version") == new_version,
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
