"""Fixtures shared by the integration tests: real servers, started by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.databases.postgresql import PostgresCluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster per test process (each xdist worker gets its own, on
    its own free port), started on first use and removed at the end, even after failures."""
    with PostgresCluster() as cluster:
        yield cluster
