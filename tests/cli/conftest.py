"""The command line against the whole local stack: PostgreSQL, the local cloud, the local host
running this app. One stack per module; each test seeds secrets of its own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import POSTGRESQL, LocalStack

# The e2e helpers (seeding, invariants) serve these tests too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_helpers import quiet_expiry_scan
from kvrotate_runner import FAST_RETRIES, UNVERIFIED_APPROVER


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")),
        app_settings={**FAST_RETRIES, **UNVERIFIED_APPROVER},
        databases=(POSTGRESQL,),
    ) as running:
        # Only the tests start rotations: a NearExpiry event racing them would rotate first.
        quiet_expiry_scan(running)
        yield running
