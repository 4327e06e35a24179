"""Orchestration versioning on the local host, driven through the SDK's documented versioning API.

Each "deployment" is a copy of tests/apps/versioned_app with its own host.json; a redeployment
is the host stopped and started on another copy over the same task hub store, as an app's new
code and host.json meet the instances the old ones left in Azure Storage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.durable_functions import DurableOrchestrationClient
from host_helpers import APPS, HostFactory, RunningHost, wait_until, with_client

from local.host.app_config import ConfigError, read_host_json
from local.host.process import HostProcess, HostStartError
from local.host.versioning import (
    MISMATCH_MESSAGE,
    Verdict,
    VersionFailureStrategy,
    VersioningSettings,
    VersionMatchStrategy,
    compare_versions,
)

VERSIONED_APP = APPS / "versioned_app"
Deploy = Callable[..., Path]


@pytest.fixture
def deploy(tmp_path: Path) -> Deploy:
    """A copy of the versioned app whose host.json carries the given durableTask settings."""
    count = 0

    def make(**durable: Any) -> Path:
        nonlocal count
        count += 1
        root = tmp_path / f"deployment-{count}"
        shutil.copytree(VERSIONED_APP, root, ignore=shutil.ignore_patterns("__pycache__"))
        host_json = json.loads((VERSIONED_APP / "host.json").read_text())
        settings = host_json["extensions"]["durableTask"]
        settings.pop("defaultVersion")
        settings.update({key: value for key, value in durable.items() if value is not None})
        (root / "host.json").write_text(json.dumps(host_json))
        return root

    return make


def _restart_on(host: RunningHost, app: Path) -> None:
    """Redeploy: the same data directory (task hub), another app directory."""
    host.process.stop()
    host.process.script_root = app
    host.process.start()
    host.api.base_url = host.process.base_url


def _start(host: RunningHost, name: str, instance_id: str, *, version: str | None = None) -> str:
    async def work(client: DurableOrchestrationClient) -> str:
        return await client.start_new(name, instance_id, None, version=version)

    return with_client(host.api, work)


# -- version comparison and settings ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "other", "sign"),
    [
        # DTFx's own VersionSettingsTests
        ("1.0.0", "1.0.0", 0),
        ("1.1.0", "1.0.0", 1),
        ("1.0.0", "1.1.0", -1),
        ("1", "1", 0),
        ("2", "1", 1),
        ("1", "2", -1),
        ("", "1", -1),
        ("1", "", 1),
        ("", "", 0),
        # System.Version compares numerically and an absent part as less than 0.
        ("1.10", "1.9", 1),
        ("1.0", "1.0.0", -1),
        (None, "", 0),
        # Not System.Version: case-insensitive string comparison.
        ("V2-preview", "v2-PREVIEW", 0),
        ("2025-01-02", "2025-01-01", 1),
    ],
)
def test_versions_compare_as_the_extension_compares_them(version: str | None, other: str, sign: int) -> None:
    result = compare_versions(version, other)
    assert (result > 0) - (result < 0) == sign


def test_match_and_failure_strategies() -> None:
    current_or_older = VersioningSettings("2.0")
    assert current_or_older.verdict("2.0") is Verdict.RUN
    assert current_or_older.verdict("1.0") is Verdict.RUN
    assert current_or_older.verdict(None) is Verdict.RUN  # instances from before versioning
    assert current_or_older.verdict("2.1") is Verdict.REJECT
    strict = VersioningSettings("2.0", VersionMatchStrategy.STRICT, VersionFailureStrategy.FAIL)
    assert strict.verdict("2.0") is Verdict.RUN
    assert strict.verdict("1.0") is Verdict.FAIL
    assert strict.verdict("") is Verdict.FAIL
    assert VersioningSettings("2.0", VersionMatchStrategy.NONE).verdict("9") is Verdict.RUN
    # Without a defaultVersion only unversioned instances are "current or older".
    assert VersioningSettings().verdict("1.0") is Verdict.REJECT
    assert VersioningSettings().version_for(None) is None
    assert current_or_older.version_for(None) == "2.0"
    assert current_or_older.version_for("1.5") == "1.5"
    assert current_or_older.version_for("") is None


def test_host_json_versioning_settings(deploy: Deploy) -> None:
    assert read_host_json(deploy()).versioning == VersioningSettings()
    configured = read_host_json(
        deploy(defaultVersion="2.0", versionMatchStrategy="strict", versionFailureStrategy="FAIL")
    )
    assert configured.versioning == VersioningSettings(
        "2.0", VersionMatchStrategy.STRICT, VersionFailureStrategy.FAIL
    )
    with pytest.raises(ConfigError, match="versionMatchStrategy must be one of None, Strict, CurrentOrOlder"):
        read_host_json(deploy(versionMatchStrategy="Newest"))
    with pytest.raises(ConfigError, match="defaultVersion must be a string"):
        read_host_json(deploy(defaultVersion=2))


def test_a_bad_versioning_setting_stops_the_host_at_start(deploy: Deploy, tmp_path: Path) -> None:
    process = HostProcess(deploy(versionFailureStrategy="Retry"), tmp_path / "data")
    with pytest.raises(HostStartError, match="versionFailureStrategy must be one of Reject, Fail"):
        process.start()


# -- stamping, explicit versions, sub-orchestrations, status -----------------------------------------
def _wait_for_custom_status(host: RunningHost, instance_id: str, text: str) -> None:
    wait_until(
        lambda: (host.api.status(instance_id).json() or {}).get("customStatus") == text,
        30,
        lambda: f"{instance_id} never showed {text!r}: {host.api.status(instance_id).json()}",
    )


def _children(host: RunningHost) -> list[str | None]:
    return sorted(str(item.get("version")) for item in host.api.list() if item["name"] == "report_version")


def test_default_version_explicit_versions_and_sub_orchestrations(
    host_factory: HostFactory, deploy: Deploy
) -> None:
    host = host_factory(app=deploy(defaultVersion="1.0"))
    _start(host, "versioned", "by-default")
    _start(host, "versioned", "explicit", version="0.5")
    for instance_id in ("by-default", "explicit"):
        _wait_for_custom_status(host, instance_id, "waiting")
    running = host.api.status("by-default").json()
    assert running["version"] == "1.0"
    assert list(running)[:3] == ["name", "instanceId", "version"]
    assert host.api.status("explicit").json()["version"] == "0.5"
    listed = {item["instanceId"]: item.get("version") for item in host.api.list()}
    assert listed == {"by-default": "1.0", "explicit": "0.5"}

    for instance_id in ("by-default", "explicit"):
        assert host.api.raise_event(instance_id, "Continue", {}).status == 202
    by_default = host.api.wait("by-default")
    assert by_default["runtimeStatus"] == "Completed", by_default
    assert by_default["output"] == {
        "version": "1.0",
        "greeting": "Hello from A!",
        "subByDefault": "1.0",  # the host's defaultVersion
        "subExplicit": "0.9",
        "subWithRetry": "0.8",
    }
    explicit = host.api.wait("explicit")
    assert explicit["output"]["version"] == "0.5"
    assert explicit["output"]["greeting"] == "Hello from B!"
    assert explicit["output"]["subByDefault"] == "1.0"  # not the parent's 0.5
    assert _children(host) == ["0.8", "0.8", "0.9", "0.9", "1.0", "1.0"]
    # The sub-orchestration's creation event and the child's parent record carry the versions.
    history = host.api.status("explicit", "?showHistory=true").json()["historyEvents"]
    created = [event for event in history if event["EventType"] == "SubOrchestrationInstanceCompleted"]
    assert [event["FunctionName"] for event in created] == ["report_version"] * 3


def test_no_default_version_leaves_instances_unversioned(host_factory: HostFactory, deploy: Deploy) -> None:
    host = host_factory(app=deploy())
    _start(host, "continue_once", "plain")
    done = host.api.wait("plain")
    assert done["runtimeStatus"] == "Completed", done
    # As the SDK sees an instance of a host without defaultVersion: context.version is None.
    assert done["output"] == {"round": 1, "version": None}
    assert "version" not in done


def test_continue_as_new_keeps_the_version(host_factory: HostFactory, deploy: Deploy) -> None:
    host = host_factory(app=deploy(defaultVersion="2.0"))
    _start(host, "continue_once", "looping", version="1.5")
    done = host.api.wait("looping")
    assert done["output"] == {"round": 1, "version": "1.5"}
    assert done["version"] == "1.5"


# -- a redeployment with a newer defaultVersion -----------------------------------------------------------
def test_waiting_instances_keep_their_version_across_a_redeployment(
    host_factory: HostFactory, deploy: Deploy
) -> None:
    host = host_factory(app=deploy(defaultVersion="1.0"))
    _start(host, "versioned", "started-on-1")
    _wait_for_custom_status(host, "started-on-1", "waiting")

    _restart_on(host, deploy(defaultVersion="2.0"))
    _start(host, "versioned", "started-on-2")
    _wait_for_custom_status(host, "started-on-2", "waiting")
    for instance_id in ("started-on-1", "started-on-2"):
        assert host.api.raise_event(instance_id, "Continue", {}).status == 202
    old, new = host.api.wait("started-on-1"), host.api.wait("started-on-2")
    assert old["runtimeStatus"] == new["runtimeStatus"] == "Completed", (old, new)
    # The instance keeps its version and its code path; what it starts now gets the new default.
    assert (old["output"]["version"], old["output"]["greeting"], old["output"]["subByDefault"]) == (
        "1.0",
        "Hello from A!",
        "2.0",
    )
    assert (new["output"]["version"], new["output"]["greeting"], new["output"]["subByDefault"]) == (
        "2.0",
        "Hello from B!",
        "2.0",
    )


def test_an_older_host_leaves_newer_instances_alone(host_factory: HostFactory, deploy: Deploy) -> None:
    """CurrentOrOlder + Reject (the defaults): a rollback to an older deployment does not touch
    instances the newer one started; they wait, with their events, for a host that runs them."""
    newer, older = deploy(defaultVersion="3.0"), deploy(defaultVersion="2.0")
    host = host_factory(app=newer)
    _start(host, "wait_then_report", "newer-instance")
    host.api.wait("newer-instance", ("Running",))

    _restart_on(host, older)
    _start(host, "wait_then_report", "too-new", version="3.1")
    _start(host, "wait_then_report", "current")
    assert host.api.raise_event("newer-instance", "Continue", {}).status == 202
    assert host.api.raise_event("current", "Continue", {}).status == 202
    assert host.api.wait("current")["output"] == "2.0"
    # Everything of the current instance ran; nothing of the newer ones did.
    assert host.api.status("too-new").json()["runtimeStatus"] == "Pending"
    assert host.api.status("too-new").json()["version"] == "3.1"
    assert host.api.status("newer-instance").json()["runtimeStatus"] == "Running"
    assert "rejected" not in host.api.status("newer-instance").text
    assert "left queued: version 3.0 is not run by this host" in host.process.log_tail(200)

    _restart_on(host, newer)
    assert host.api.wait("newer-instance")["output"] == "3.0"  # the event raised meanwhile was kept
    assert host.api.status("too-new").json()["runtimeStatus"] == "Pending"  # 3.1 is newer still


def test_strict_fail_fails_instances_of_another_version(host_factory: HostFactory, deploy: Deploy) -> None:
    host = host_factory(
        app=deploy(defaultVersion="2.0", versionMatchStrategy="Strict", versionFailureStrategy="Fail")
    )
    _start(host, "wait_then_report", "older", version="1.0")
    failed = host.api.wait("older")
    assert failed["runtimeStatus"] == "Failed"
    assert failed["output"] == MISMATCH_MESSAGE
    assert failed["version"] == "1.0"
    history = host.api.status("older", "?showHistory=true").json()["historyEvents"]
    assert history[-1]["EventType"] == "ExecutionCompleted"
    assert history[-1]["FailureDetails"]["ErrorType"] == "VersionMismatch"
    # A sub-orchestration of another version fails the same way, and its parent sees it fail.
    _start_with_input(host, "call_child", "parent", "1.9")
    parent = host.api.wait("parent")
    assert parent["runtimeStatus"] == "Failed", parent
    assert MISMATCH_MESSAGE in parent["output"]
    _start(host, "wait_then_report", "same")
    assert host.api.raise_event("same", "Continue", {}).status == 202
    assert host.api.wait("same")["output"] == "2.0"


def test_match_strategy_none_runs_every_version(host_factory: HostFactory, deploy: Deploy) -> None:
    host = host_factory(app=deploy(defaultVersion="1.0", versionMatchStrategy="None"))
    _start(host, "wait_then_report", "newer", version="9.0")
    assert host.api.raise_event("newer", "Continue", {}).status == 202
    assert host.api.wait("newer")["output"] == "9.0"


def _start_with_input(host: RunningHost, name: str, instance_id: str, payload: Any) -> str:
    async def work(client: DurableOrchestrationClient) -> str:
        return await client.start_new(name, instance_id, payload)

    return with_client(host.api, work)


def test_worker_processes_check_versions_the_same_way(host_factory: HostFactory, deploy: Deploy) -> None:
    """With FUNCTIONS_WORKER_PROCESS_COUNT > 1 the host process still decides before any replay."""
    host = host_factory(app=deploy(defaultVersion="2.0"), workers=2)
    _start(host, "wait_then_report", "too-new", version="2.0.1")
    _start(host, "wait_then_report", "current")
    for instance_id in ("too-new", "current"):
        assert host.api.raise_event(instance_id, "Continue", {}).status == 202
    assert host.api.wait("current")["output"] == "2.0"
    assert host.api.status("too-new").json()["runtimeStatus"] == "Pending"
