"""Fixtures of the local cloud tests: one local cloud and one webhook per test module.

Each module gets its own cloud (its own data dir, CA, ports and processes), so modules can run in
parallel under ``pytest -n 2 --dist loadfile``. The client environment (proxy, CA bundle,
identity endpoint) is set in this process for the module, as a sourced ``<data>/env`` would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from local.cloud.process import LocalCloud
from tests.cloud.support import TOPOLOGY
from tests.cloud.webhook import Webhook


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[LocalCloud]:
    data = tmp_path_factory.mktemp("cloud") / "data"
    env = {
        "WEBHOOK_URL": webhook.url,
        "PYTHON": sys.executable,
        "PROBE_MARKER": "marker-from-topology",
        "PROBE_UNHEALTHY_FILE": str(data.parent / "probe-app-unhealthy"),
    }
    with LocalCloud(data_dir=data, topology=TOPOLOGY, env=env) as started:
        yield started


@pytest.fixture(scope="module")
def cloud_env(cloud: LocalCloud) -> Iterator[dict[str, str]]:
    """The client environment in os.environ for the module (requests reads it per request)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cloud.client_env.items():
            patch.setenv(name, value)
        yield cloud.client_env


@pytest.fixture(autouse=True)
def _no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cloud" in request.fixturenames:
        request.getfixturevalue("cloud").admin.clear_faults()
