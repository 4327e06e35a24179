"""What rotating an Entra application's client secret costs, on the local stack.

1. Requests per rotation, through the local host (one rotation, no overlap, the previous secret
   retired): Microsoft Graph and Key Vault calls by the hub's identity, and the token requests of
   the verify step (the application's own client-credentials logins), from the local cloud's
   request log.
2. The verify step's time while Entra refuses a new secret for 5 s and for 60 s (the local cloud's
   propagation delay), in this process: it waits with growing pauses and wants 3 consecutive
   successes (``ROTATION_ENTRA_VERIFY_SUCCESSES``).

Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.rotation import HUB, request_lines, rotate_through_host
from benchmarks.table import print_table
from local.stack import LocalStack
from rotation import steps
from rotation.clients import vault_named
from rotation.model import SecretRef, StageInput, StepInput
from rotation.settings import Settings

VAULT = "spoke1-kv"


def requests_since(stack: LocalStack, start: int) -> dict[str, int]:
    """Requests the local cloud logged after byte ``start`` of its log, by service and caller."""
    lines = request_lines(stack, start)
    return {
        "graph": sum(1 for line in lines if "graph.microsoft.com" in line and HUB in line),
        "vault": sum(1 for line in lines if ".vault.azure.net" in line and HUB in line),
        "token": sum(
            1
            for line in lines
            if re.search(r"login\.microsoftonline\.com\S* /[^ ]+/oauth2/v2\.0/token", line)
        ),
    }


def verify_seconds(stack: LocalStack, delay: float, settings: Settings) -> float:
    """Stage a new secret in this process, then time verify while Entra refuses it for ``delay`` s."""
    assert stack.cloud is not None
    seeded = stack.seed_app_secret(VAULT, f"bench-verify-{int(delay)}", overlap_hours=0)
    secret = SecretRef(stack.subscription_of(VAULT), VAULT, seeded.name)
    step = StepInput(secret.rotation_id(seeded.version), secret, seeded.version)
    vault = vault_named(VAULT, settings)
    stack.cloud.admin.set_entra(propagation_delay_seconds=delay)
    try:
        staged = steps.stage_pending(
            StageInput(step, "entra-app-secret", 24, 30, 0), vault, settings, now=datetime.now(UTC)
        )
        started = time.perf_counter()
        steps.verify_target(replace(step, pending_version=staged.pending_version), vault, settings)
        return time.perf_counter() - started
    finally:
        stack.cloud.admin.set_entra(propagation_delay_seconds=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delays", type=float, nargs="*", default=[5.0, 60.0], help="propagation delays (s)")
    args = parser.parse_args(argv)
    # Every refusal while the new secret propagates is a warning of azure-identity's: expected here.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)

    with (
        tempfile.TemporaryDirectory(prefix="bench-entra-") as tmp,
        LocalStack(Path(tmp), databases=()) as stack,
    ):
        assert stack.cloud is not None
        stack.cloud.admin.set_eventgrid(scan_interval_seconds=86400)
        seeded = stack.seed_app_secret(VAULT, "bench-requests", overlap_hours=0, record_credential=True)
        start = stack.cloud.log_file.stat().st_size
        seconds = rotate_through_host(stack, seeded)
        counts = requests_since(stack, start)
        settings = Settings.from_environ({**os.environ, **stack.app_settings()})
        verify = {delay: verify_seconds(stack, delay, settings) for delay in args.delays}

    rows = [
        ("one rotation through the local host (no overlap, previous retired)", f"{seconds * 1000:.0f} ms"),
        ("Microsoft Graph requests per rotation (hub identity)", str(counts["graph"])),
        ("Key Vault requests per rotation (hub identity)", str(counts["vault"])),
        ("Entra token requests per rotation (verify, as the application)", str(counts["token"])),
        *(
            (f"verify with a {delay:g} s propagation delay", f"{value:.1f} s")
            for delay, value in verify.items()
        ),
    ]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
