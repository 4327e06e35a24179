"""What rotating a storage account key costs, on the local stack.

1. One rotation, the steps called in sequence in this process, and through the local host (HTTP
   request to Completed); medians of ``--rotations`` each way, each rotation regenerating the
   other key (key2, key1, key2 ...).
2. Requests per rotation by the hub's identity, from the local cloud's request log: ARM (the
   account's settings, listKeys, regenerateKey) and Key Vault. The verify step's blob call is not
   in that log (the proxy tunnels it to Azurite).
3. How long the local cloud's regenerateKey takes, most of it Azurite restarting with the new
   keys (Azure's own takes its own time; only the share here is measured).

Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.rotation import HUB, request_lines, rotate_through_host
from benchmarks.table import print_table
from local.stack import STORAGE, LocalStack, Seeded
from rotation import steps
from rotation.clients import vault_named
from rotation.model import PromoteInput, SecretRef, StageInput, StepInput
from rotation.settings import Settings

VAULT = "spoke1-kv"


def rotate_in_process(stack: LocalStack, seeded: Seeded, settings: Settings) -> float:
    """Every step of one rotation of the secret's current version, in sequence as the activities
    call them (each with a vault of its own that reads a version once); returns seconds."""
    vault = vault_named(VAULT, settings)
    version = vault.current(seeded.name).version
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    step = StepInput(secret.rotation_id(version), secret, version)
    started = time.perf_counter()
    plan = steps.plan(step, vault.memoizing(), settings)
    staged = steps.stage_pending(
        StageInput(step, STORAGE, 24, plan.validity_days, 0),
        vault.memoizing(),
        settings,
        now=datetime.now(UTC),
    )
    step = replace(step, pending_version=staged.pending_version)
    steps.verify_target(step, vault.memoizing(), settings)
    steps.promote_and_clean_up(
        PromoteInput(step, plan.validity_days), vault.memoizing(), now=datetime.now(UTC)
    )
    steps.retire_previous(step, vault.memoizing(), settings)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rotations", type=int, default=10, help="rotations timed each way")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp,
        LocalStack(Path(tmp), databases=()) as stack,
    ):
        assert stack.cloud is not None
        stack.cloud.admin.set_eventgrid(scan_interval_seconds=86400)
        settings = Settings.from_environ({**os.environ, **stack.app_settings()})
        seeded = stack.seed_storage_secret(VAULT, "bench-storage-key")
        in_process = [rotate_in_process(stack, seeded, settings) for _ in range(args.rotations)]

        start = stack.cloud.log_file.stat().st_size
        first = rotate_through_host(stack, seeded)
        lines = request_lines(stack, start)
        through_host = [first] + [rotate_through_host(stack, seeded) for _ in range(args.rotations - 1)]
        regenerate = stack.cloud.admin.azurite()

    arm = sum(1 for line in lines if "management.azure.com" in line and HUB in line)
    vault = sum(1 for line in lines if ".vault.azure.net" in line and HUB in line)
    rows = [
        (
            f"one rotation, steps in sequence in one process (median of {args.rotations})",
            f"{statistics.median(in_process) * 1000:.0f} ms",
        ),
        (
            f"one rotation through the local host (median of {args.rotations})",
            f"{statistics.median(through_host) * 1000:.0f} ms",
        ),
        ("ARM requests per rotation (hub identity)", str(arm)),
        ("Key Vault requests per rotation (hub identity)", str(vault)),
        (
            "local regenerateKey, Azurite restarting with the new keys (last)",
            f"{(regenerate or {}).get('last_restart_seconds', float('nan')) * 1000:.0f} ms",
        ),
    ]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
