"""The whole stack, started as a user starts it: PostgreSQL, the local cloud, the local host
running this app (the real Durable Functions SDK, the real Azure SDK clients through the HTTPS
proxy). One stack per test module; each test seeds secrets of its own, so tests in a module do
not see each other's rotations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import QUIET_SWEEP

from local.cloud.process import AdminClient
from local.stack import MYSQL, POSTGRESQL, LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(Path(tmp_path_factory.mktemp("stack")), app_settings=QUIET_SWEEP) as running:
        yield running


@pytest.fixture(params=[POSTGRESQL, MYSQL], ids=["postgresql", "mysql"])
def kind(request: pytest.FixtureRequest) -> str:
    """The database target a scenario runs against: every scenario that takes ``kind`` runs
    once against PostgreSQL and once against MariaDB (``mysql-login``)."""
    return str(request.param)


@pytest.fixture
def cloud(stack: LocalStack) -> Iterator[AdminClient]:
    """The local cloud's fault injection; afterwards no fault is left and the host runs again
    (a test may have killed it), pass or fail."""
    assert stack.cloud is not None
    assert stack.host is not None
    admin = stack.cloud.admin
    admin.clear_faults()
    try:
        yield admin
    finally:
        admin.clear_faults()
        if not stack.host.running:
            stack.host.start()
