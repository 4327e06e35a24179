"""What a rotation costs: the orchestration's overhead, throughput, memory, history and requests.

1. One rotation's wall time through the local host (an HTTP request to rotate now, until the
   orchestration reports Completed) against the same domain-core functions called in sequence
   in this process: the ratio is what the durable orchestration adds.
2. Rotations per second and the host's peak memory for many secrets across the two vaults,
   all started by one run of the sweep.
3. History events and Key Vault requests (by the hub's identity) per rotation.
4. Per target (``postgresql-login`` on PostgreSQL, ``mysql-login`` on MariaDB): one rotation's
   time in process and through the host, and the logins the database server saw per rotation
   (from its own log).

Runs against the whole local stack (PostgreSQL, MariaDB, local cloud, local host); prints a table.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.processes import peak_rss_mib
from benchmarks.table import print_table
from local.scenario import ENDED, hub_call, rotations
from local.stack import DATABASE_SERVERS, POSTGRESQL, LocalStack, Seeded
from rotation import steps
from rotation.clients import vault_named
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput

POLL_SECONDS = 0.005


def rotate_in_process(stack: LocalStack, seeded: Seeded) -> float:
    """The domain-core steps of one rotation, called in sequence as the activities call them
    (each with a vault of its own that reads a version once); returns seconds."""
    settings = stack.settings()
    vault = vault_named(seeded.vault, settings)
    secret = SecretRef(stack.subscription_of(seeded.vault), seeded.vault, seeded.name)
    step = StepInput(secret.rotation_id(seeded.version), secret, seeded.version)
    started = time.perf_counter()
    plan = steps.plan(step, vault.memoizing(), settings)
    step = replace(step, tags=plan.tags)  # as the orchestrator hands plan's tags on
    staged = steps.stage_pending(
        StageInput(step, plan.target_kind, 24, login=plan.login),
        vault.memoizing(),
        settings,
        now=datetime.now(UTC),
    )
    step = replace(step, pending_version=staged.pending_version)
    steps.apply_target(step, vault.memoizing(), settings)
    steps.verify_target(step, vault.memoizing(), settings)
    steps.promote_and_clean_up(
        PromoteInput(step, plan.validity_days), vault.memoizing(), now=datetime.now(UTC)
    )
    return time.perf_counter() - started


def rotate_through_host(stack: LocalStack, seeded: Seeded) -> float:
    """POST /api/rotations, then poll until the orchestration ends; returns seconds."""
    started = time.perf_counter()
    code, body = hub_call(stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name})
    if code != 202:
        raise RuntimeError(f"rotate now answered {code}: {body}")
    while True:
        code, status = hub_call(stack, "GET", f"/api/rotations/{body['id']}")
        if code == 200 and status["runtimeStatus"] in ENDED:
            if status["runtimeStatus"] != "Completed":
                raise RuntimeError(
                    f"rotation {body['id']} ended {status['runtimeStatus']}: {status['status']}"
                )
            return time.perf_counter() - started
        time.sleep(POLL_SECONDS)


def history_summary(stack: LocalStack, rotation_id: str) -> list[dict[str, Any]]:
    """The history the Durable HTTP API shows for ``rotation_id`` (``showHistory=true``)."""
    url = f"{stack.hub_url}/runtime/webhooks/durabletask/instances/{rotation_id}?showHistory=true"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return list(json.load(response).get("historyEvents") or [])


def history_events(stack: LocalStack, rotation_id: str) -> tuple[int, int]:
    """(events the task hub stores, entries the Durable HTTP API's showHistory summary lists)."""
    assert stack.host is not None
    with sqlite3.connect(f"file:{stack.host.data_dir / 'durable.sqlite'}?mode=ro", uri=True) as db:
        (stored,) = db.execute(
            "SELECT count(*) FROM history WHERE instance_id = ?", (rotation_id,)
        ).fetchone()
    return int(stored), len(history_summary(stack, rotation_id))


HUB = "identity=hub-rotation-identity"


def request_lines(stack: LocalStack, start: int = 0) -> list[str]:
    """The local cloud's request log lines after byte ``start`` of its log."""
    assert stack.cloud is not None
    with stack.cloud.log_file.open("rb") as log:
        log.seek(start)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if "local.cloud.requests" in line]


def hub_vault_requests(stack: LocalStack, start: int = 0) -> int:
    """Key Vault requests made by the hub's identity after byte ``start`` of the local cloud's
    request log (so far, by default)."""
    return sum(1 for line in request_lines(stack, start) if ".vault.azure.net" in line and HUB in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=10, help="rotations timed one at a time, each way")
    parser.add_argument("--bulk", type=int, default=200, help="secrets rotated at once, across two vaults")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp, LocalStack(Path(tmp)) as stack:
        assert stack.host is not None
        assert stack.host.pid is not None
        vaults = ("spoke1-kv", "spoke2-kv")

        def seed(prefix: str, i: int, kind: str = POSTGRESQL) -> Seeded:
            name = f"{prefix}-{i}"
            return stack.seed_login_secret(vaults[i % 2], name, login=name.replace("-", "_"), kind=kind)

        per_target: list[tuple[str, str]] = []
        for kind in DATABASE_SERVERS:
            server = stack.database(kind)
            in_process_ms = 1000 * statistics.median(
                rotate_in_process(stack, seed(f"inproc-{server.name}", i, kind)) for i in range(args.single)
            )
            counted = seed(f"logins-{server.name}", 0, kind)
            logins_before = server.login_attempts()
            rotate_through_host(stack, counted)
            logins = server.login_attempts() - logins_before
            hosted_ms = 1000 * statistics.median(
                rotate_through_host(stack, seed(f"hosted-{server.name}", i, kind)) for i in range(args.single)
            )
            per_target += [
                (f"{kind} ({server.name}): one rotation in process (median)", f"{in_process_ms:.0f} ms"),
                (f"{kind} ({server.name}): one rotation through the host (median)", f"{hosted_ms:.0f} ms"),
                (f"{kind} ({server.name}): logins the server saw per rotation", str(logins)),
            ]

        in_process = [rotate_in_process(stack, seed("inproc", i)) for i in range(args.single)]
        before = hub_vault_requests(stack)
        first = seed("hosted", 0)
        hosted = [rotate_through_host(stack, first)]
        requests_one = hub_vault_requests(stack) - before
        events_one = history_events(stack, stack.rotation_id(first))
        hosted += [rotate_through_host(stack, seed("hosted", i)) for i in range(1, args.single)]

        bulk = [seed("bulk", i) for i in range(args.bulk)]
        bulk_ids = {stack.rotation_id(s) for s in bulk}
        started = time.perf_counter()
        code, body = hub_call(stack, "POST", "/admin/functions/sweep", {})
        if code not in (200, 202):
            raise RuntimeError(f"running the sweep answered {code}: {body}")
        while True:
            ended = [r for r in rotations(stack) if r["id"] in bulk_ids and r["runtimeStatus"] in ENDED]
            if len(ended) == len(bulk_ids):
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        failed = [r["id"] for r in ended if r["runtimeStatus"] != "Completed"]
        peak = peak_rss_mib(stack.host.pid)

    inproc_ms = statistics.median(in_process) * 1000
    hosted_ms = statistics.median(hosted) * 1000
    rows = [
        ("one rotation, domain core in one process (median)", f"{inproc_ms:.0f} ms"),
        ("one rotation through the local host (median)", f"{hosted_ms:.0f} ms"),
        ("orchestration overhead (host / in-process)", f"{hosted_ms / inproc_ms:.1f}x"),
        (f"{args.bulk} rotations across 2 vaults, started by one sweep", f"{elapsed:.1f} s"),
        ("rotations per second", f"{len(bulk_ids) / elapsed:.1f}"),
        ("failed rotations in the bulk run", str(len(failed))),
        ("host peak memory (VmHWM)", f"{peak:.0f} MiB"),
        ("history events per rotation (stored / showHistory summary)", f"{events_one[0]} / {events_one[1]}"),
        ("Key Vault requests per rotation (hub identity)", str(requests_one)),
        *per_target,
    ]
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
