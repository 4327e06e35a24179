"""Fixtures of the local host's tests: hosts as real subprocesses on free ports with temporary data.

Every host a test starts is stopped at teardown, even when the test failed (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from host_helpers import DURABLE_APP, NEVER, Api, HostFactory, RunningHost

from local.host.process import HostProcess


def _factory(make_dir: Callable[[], Path], started: list[HostProcess]) -> HostFactory:
    def make(
        *,
        app: Path = DURABLE_APP,
        env: dict[str, str | None] | None = None,
        start: bool = True,
        **options: Any,
    ) -> RunningHost:
        """Start a host on ``app``; an ``env`` value of None leaves that variable unset."""
        data = make_dir()
        state = data / "state"
        defaults: dict[str, str | None] = {"SAMPLE_STATE_DIR": str(state), "SAMPLE_SWEEP_SCHEDULE": NEVER}
        full_env = {name: value for name, value in {**defaults, **(env or {})}.items() if value is not None}
        process = HostProcess(app, data / "host", env=full_env, **options)
        started.append(process)
        if start:
            process.start()
        return RunningHost(process, Api(process.base_url), state)

    return make


def _stop_all(started: list[HostProcess]) -> None:
    for process in started:
        try:
            process.stop(timeout=10)
        finally:
            process.kill()


@pytest.fixture(scope="module")
def module_host_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFactory]:
    """Hosts shared by the tests of one module (they use distinct instance ids)."""
    started: list[HostProcess] = []
    yield _factory(lambda: tmp_path_factory.mktemp("host"), started)
    _stop_all(started)


@pytest.fixture
def host_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFactory]:
    """Hosts owned by one test (restarts, kills, special options)."""
    started: list[HostProcess] = []
    yield _factory(lambda: tmp_path_factory.mktemp("host"), started)
    _stop_all(started)
