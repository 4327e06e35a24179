"""Timer triggers on the host clock, local.settings.json, %SETTING% placeholders and host.json."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from host_helpers import DURABLE_APP, HostFactory, read_lines, wait_until

from local.host.process import HostStartError


def _app_copy(
    tmp_path: Path, *, settings: dict[str, str] | None = None, host_json: dict | None = None
) -> Path:
    """The sample app in a fresh script root (local.settings.json is never committed, so tests write it)."""
    root = tmp_path / "app"
    shutil.copytree(DURABLE_APP, root, ignore=shutil.ignore_patterns("__pycache__", "local.settings.json"))
    if settings is not None:
        (root / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": settings}))
    if host_json is not None:
        (root / "host.json").write_text(json.dumps(host_json))
    return root


def _runs(state_dir: Path) -> list[str]:
    return read_lines(state_dir / "sweep.log")


def test_local_settings_provide_the_schedule(host_factory: HostFactory, tmp_path: Path) -> None:
    app = _app_copy(tmp_path, settings={"SAMPLE_SWEEP_SCHEDULE": "*/1 * * * * *"})
    host = host_factory(app=app, env={"SAMPLE_SWEEP_SCHEDULE": None})
    wait_until(lambda: _runs(host.state_dir).count("run") >= 2, 10, "the sweep did not run every second")
    # The timer used its durable client: each run started an orchestration.
    assert host.api.wait("sweep-1")["output"] == 1


def test_the_environment_wins_over_local_settings(host_factory: HostFactory, tmp_path: Path) -> None:
    app = _app_copy(tmp_path, settings={"SAMPLE_SWEEP_SCHEDULE": "*/1 * * * * *"})
    host = host_factory(app=app)  # the fixture sets SAMPLE_SWEEP_SCHEDULE to a yearly schedule
    time.sleep(2.5)
    assert _runs(host.state_dir) == []
    assert host.api.call("POST", "/admin/functions/sweep", json_body={"input": ""}).status == 202
    wait_until(lambda: _runs(host.state_dir) == ["run"], 10)
    assert host.api.wait("sweep-1")["runtimeStatus"] == "Completed"


def test_a_clock_jump_runs_a_missed_schedule_once_past_due(host_factory: HostFactory) -> None:
    host = host_factory(env={"SAMPLE_SWEEP_SCHEDULE": "0 0 * * * *"})
    host.api.advance_clock(3 * 3600)
    wait_until(lambda: "run" in _runs(host.state_dir), 10)
    time.sleep(1)
    assert _runs(host.state_dir) == ["run", "past_due"]


def test_time_scale_speeds_up_the_schedule(host_factory: HostFactory) -> None:
    host = host_factory(env={"SAMPLE_SWEEP_SCHEDULE": "0 */10 * * * *"}, time_scale=1200)
    wait_until(
        lambda: _runs(host.state_dir).count("run") >= 2, 10, "ten host minutes should pass every 0.5 s"
    )
    clock = host.api.call("GET", "/admin/host/clock").json()
    assert clock["timeScale"] == 1200


def test_a_missing_setting_stops_the_host_with_a_clear_error(host_factory: HostFactory) -> None:
    host = host_factory(env={"SAMPLE_SWEEP_SCHEDULE": None}, start=False)
    with pytest.raises(HostStartError, match="app setting 'SAMPLE_SWEEP_SCHEDULE' is not set"):
        host.process.start()
    assert not host.process.running


def test_host_json_defaults_and_route_prefix(host_factory: HostFactory, tmp_path: Path) -> None:
    app = _app_copy(tmp_path, host_json={"version": "2.0", "extensions": {"http": {"routePrefix": "fn"}}})
    host = host_factory(app=app)
    assert host.api.call("GET", "/fn/echo/x").status == 201
    assert host.api.call("GET", "/api/echo/x").status == 404
    binding = json.loads(host.api.call("GET", "/fn/binding").text)
    assert binding["taskHubName"] == "TestHubName"  # the real host's default hub name
