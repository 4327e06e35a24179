"""Helpers of the end-to-end tests: seeding, and the invariants every scenario ends with."""

from __future__ import annotations

import ast
import itertools
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from local.cloud.process import AdminClient
from local.principals import APPROVER
from local.scenario import ENDED, hub_call, rotation
from local.stack import POSTGRESQL, STORAGE, LocalStack, Seeded
from rotation import metadata
from rotation.login_values import LoginShape
from rotation.targets import storage
from rotation.targets.base import SecretValue

_names = itertools.count()


def unique(prefix: str) -> str:
    """A secret (and login) name no other test of this process uses."""
    return f"{prefix}-{next(_names)}"


def seed(
    stack: LocalStack, vault: str = "spoke1-kv", *, prefix: str = "db", kind: str = POSTGRESQL, **kwargs: Any
) -> Seeded:
    """A database login (PostgreSQL unless ``kind`` says otherwise) and its tagged secret near
    expiry, with names of its own."""
    name = unique(prefix)
    return stack.seed_login_secret(vault, name, login=name.replace("-", "_"), kind=kind, **kwargs)


def seed_admin(stack: LocalStack, vault: str = "spoke2-kv", *, kind: str = POSTGRESQL) -> Seeded:
    """An admin login of ``kind`` and the secret holding its password (``secret:<name>``)."""
    return stack.seed_admin_secret(
        vault, unique("db-admin"), login=unique("adm").replace("-", "_"), kind=kind
    )


def enabled_pending(stack: LocalStack, seeded: Seeded) -> list[str]:
    """Versions of the secret's pending companion that are still enabled (must end up empty)."""
    client = stack.secret_client(seeded.vault)
    names = {p.name for p in client.list_properties_of_secrets()}
    if seeded.name + "-pending" not in names:
        return []
    versions = client.list_properties_of_secret_versions(seeded.name + "-pending")
    return [str(p.version) for p in versions if p.enabled]


def versions_of(stack: LocalStack, seeded: Seeded) -> list[str]:
    return [
        str(p.version)
        for p in stack.secret_client(seeded.vault).list_properties_of_secret_versions(seeded.name)
    ]


def assert_consistent(stack: LocalStack, seeded: Seeded) -> None:
    """The invariants after any rotation: the vault's latest version logs in to the database,
    and no pending value is left enabled."""
    assert stack.current_value_logs_in(seeded.vault, seeded.name), (
        f"{seeded.name}: the latest version does not log in"
    )
    assert enabled_pending(stack, seeded) == [], f"{seeded.name}: a pending value is left enabled"


def durable_store_text(stack: LocalStack) -> str:
    """Everything the host's task hub holds (every table, every column), as one text."""
    assert stack.host is not None
    texts: list[str] = []
    with sqlite3.connect(f"file:{stack.host.data_dir / 'durable.sqlite'}?mode=ro", uri=True) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 (names from sqlite_master)
                texts.append(" ".join(str(cell) for cell in row))
    return "\n".join(texts)


def secret_values(stack: LocalStack, seeded: Seeded) -> list[str]:
    """Every value the secret and its companion ever held (enabled or not)."""
    client = stack.secret_client(seeded.vault)
    values = []
    for name in (seeded.name, seeded.name + "-pending"):
        try:
            versions = list(client.list_properties_of_secret_versions(name))
        except ResourceNotFoundError:  # the companion may not exist
            continue
        for props in versions:
            if props.enabled:
                values.append(client.get_secret(name, props.version).value or "")
            else:
                # A disabled version cannot be read; enable it for a moment to learn its value.
                client.update_secret_properties(name, props.version, enabled=True)
                values.append(client.get_secret(name, props.version).value or "")
                client.update_secret_properties(name, props.version, enabled=False)
    return [v for v in values if v]


def assert_no_value_leaked(stack: LocalStack, seeded: Seeded) -> None:
    """No value the secret ever held appears in the task hub's store, in the host's log or in
    the database server's log (which records every statement that changed a login)."""
    assert stack.host is not None
    store = durable_store_text(stack)
    log = stack.host.log_path.read_text(errors="replace")
    # The target's own log: the database server's statement log, or (for an application) the
    # local cloud's, where Graph and Entra requests are logged.
    if seeded.kind in stack.databases:
        server_log = stack.database(seeded.kind).server_log()
    else:
        assert stack.cloud is not None
        server_log = stack.cloud.log_file.read_text(errors="replace")
        if seeded.kind == STORAGE:  # and the blob endpoint's (Azurite's) own log
            azurite_log = Path(stack.info["azurite"]["log"])
            server_log += azurite_log.read_text(errors="replace") if azurite_log.exists() else ""
    values = secret_values(stack, seeded)
    assert values, "the secret should have values to look for"
    # A value that carries the login (JSON, a connection string): its password alone must not
    # leak either.
    tags = stack.secret_client(seeded.vault).get_secret(seeded.name).properties.tags or {}
    meta = metadata.parse_tags(seeded.name, tags)
    if seeded.kind == STORAGE:
        values += [storage.key_in(SecretValue(v), meta.value_format, seeded.login) for v in values]
    elif meta.value_format != "password":
        shape = LoginShape.of(meta)
        values += [shape.read(SecretValue(value)).password.reveal() for value in values]
    for value in values:
        assert value not in store, f"a value of {seeded.name} is in the durable store"
        assert value not in log, f"a value of {seeded.name} is in the host log"
        assert value not in server_log, f"a value of {seeded.name} is in the target's log"


# -- talking to the hub as Event Grid and as an operator ---------------------------------------

NEAR_EXPIRY = "Microsoft.KeyVault.SecretNearExpiry"
EVENTGRID_WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_secret_event"
DURABLE_API = "/runtime/webhooks/durabletask"

# Talks to 127.0.0.1 only: never through the cloud's proxy.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def hub_request(
    stack: LocalStack,
    method: str,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request to the hub: (status, headers, body parsed as JSON, or its text if it is not)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        stack.hub_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with _direct.open(request, timeout=60) as response:
            status, answer_headers, text = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, text = exc.code, dict(exc.headers), exc.read()
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text.decode(errors="replace")
    return status, answer_headers, parsed


def post_events(stack: LocalStack, payload: object = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    """Deliver ``payload`` (an event, or an array of them) to the hub as Event Grid does."""
    status, _, body = hub_request(
        stack, "POST", EVENTGRID_WEBHOOK, payload, raw=raw, headers={"aeg-event-type": "Notification"}
    )
    return status, body


def event_grid_event(
    stack: LocalStack, seeded: Seeded, *, version: str | None = None, event_type: str = NEAR_EXPIRY
) -> dict[str, Any]:
    """A Key Vault event about ``seeded`` in the Event Grid schema, as Key Vault sends it."""
    version = version or seeded.version
    vault_url = str(stack.info["vaults"][seeded.vault]["url"]).rstrip("/")
    now = int(time.time())
    return {
        "id": str(uuid.uuid4()),
        "topic": stack.vault_arm_id(seeded.vault),
        "subject": seeded.name,
        "eventType": event_type,
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "data": {
            "Id": f"{vault_url}/secrets/{seeded.name}/{version}",
            "VaultName": seeded.vault,
            "ObjectType": "Secret",
            "ObjectName": seeded.name,
            "Version": version,
            "NBF": now - 60,
            "EXP": now + 10 * 86400,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def cloud_event(stack: LocalStack, seeded: Seeded, *, event_type: str = NEAR_EXPIRY) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema (source/type/time/specversion)."""
    grid = event_grid_event(stack, seeded, event_type=event_type)
    return {
        "specversion": "1.0",
        "id": grid["id"],
        "source": grid["topic"],
        "subject": grid["subject"],
        "type": grid["eventType"],
        "time": grid["eventTime"],
        "datacontenttype": "application/json",
        "data": grid["data"],
    }


def input_of_rotation(stack: LocalStack, rotation_id: str) -> dict[str, Any]:
    """The orchestration's input (the RotationRequest) as the Durable HTTP API shows it (the
    Python durable client sends it JSON-encoded, so it may come back as that JSON text)."""
    status, _, body = hub_request(stack, "GET", f"{DURABLE_API}/instances/{rotation_id}?showInput=true")
    assert status in (200, 202), body
    value = body["input"]
    parsed = json.loads(value) if isinstance(value, str) else value
    assert isinstance(parsed, dict)
    return parsed


def instance_ids(stack: LocalStack, prefix: str = "rotate_") -> set[str]:
    """Every orchestration instance the task hub knows whose id starts with ``prefix``."""
    path = f"{DURABLE_API}/instances?showInput=false&instanceIdPrefix={urllib.parse.quote(prefix)}"
    status, _, body = hub_request(stack, "GET", path)
    assert status == 200, f"listing instances answered {status}: {body}"
    return {item["instanceId"] for item in body}


# The sweep's timer never fires during a test run (1 January, midnight): a test that moves the
# host's clock days ahead (an approval timeout, a window, an overlap) would otherwise have it
# start again the rotations other tests of the module left rejected, timed out or failed. Tests
# run the sweep when they mean to (run_sweep).
QUIET_SWEEP = {"ROTATION_SWEEP_SCHEDULE": "0 0 0 1 1 *"}


def module_stack(
    tmp_path_factory: pytest.TempPathFactory,
    app_settings: Mapping[str, str],
    *,
    databases: tuple[str, ...] = (),
) -> Iterator[LocalStack]:
    """A module's stack with its own settings (a module's ``stack`` fixture yields from it);
    without database servers unless ``databases`` names some (targets the local cloud itself
    serves need none)."""
    with LocalStack(
        Path(tmp_path_factory.mktemp("stack")),
        app_settings={**QUIET_SWEEP, **app_settings},
        databases=databases,
    ) as running:
        # Only the tests start rotations: a NearExpiry event racing them would rotate first.
        quiet_expiry_scan(running)
        yield running


def quiet_expiry_scan(stack: LocalStack) -> None:
    """Stop the local cloud's periodic NearExpiry scan, so only the test decides what is sent."""
    assert stack.cloud is not None
    stack.cloud.admin.set_eventgrid(scan_interval_seconds=86400)


def write_version(stack: LocalStack, seeded: Seeded) -> Seeded:
    """An operator writes a new version of ``seeded`` (same value and tags): it is current now."""
    client = stack.secret_client(seeded.vault)
    current = client.get_secret(seeded.name)
    written = client.set_secret(
        seeded.name,
        current.value or "",
        tags=current.properties.tags,
        expires_on=current.properties.expires_on,
    )
    return replace(seeded, version=str(written.properties.version))


def current_password(stack: LocalStack, seeded: Seeded) -> str:
    return stack.secret_client(seeded.vault).get_secret(seeded.name).value or ""


def assert_untouched(stack: LocalStack, seeded: Seeded, password: str) -> None:
    """Nothing changed: the seeded version is the only one and current, the database still
    takes its password, and no pending value exists."""
    current = stack.secret_client(seeded.vault).get_secret(seeded.name)
    assert current.properties.version == seeded.version, f"{seeded.name}: the current version changed"
    assert versions_of(stack, seeded) == [seeded.version], f"{seeded.name}: a version was added"
    assert stack.logs_in(seeded, password), f"{seeded.name}: the old password no longer logs in"
    assert enabled_pending(stack, seeded) == [], f"{seeded.name}: a pending value is enabled"


class HostLog:
    """The host's log from a mark on: what the hub said about what a test just did."""

    def __init__(self, stack: LocalStack) -> None:
        assert stack.host is not None
        self.path = stack.host.log_path
        self.start = self.path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.start)
            return log.read().decode(errors="replace")

    def wait_for(self, needle: str, *, count: int = 1, timeout: float = 30) -> str:
        """The log since the mark, once ``needle`` appears ``count`` times in it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{needle!r} not {count} time(s) in the host log within {timeout:g}s:\n{text}"
                )
            time.sleep(0.1)


def run_sweep(
    stack: LocalStack, vaults: tuple[str, ...] = ("spoke1-kv", "spoke2-kv")
) -> dict[str, dict[str, int]]:
    """Run the sweep's timer function now (the host's admin API); wait for its summary line per
    vault and return how many secrets ended in each launch outcome, per vault."""
    log = HostLog(stack)
    status, _, body = hub_request(stack, "POST", "/admin/functions/sweep", {})
    assert status == 202, body
    text = log.wait_for("sweep: vault ", count=len(vaults))
    counts: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if "starters.sweep: sweep: vault " not in line:
            continue
        vault, summary = line.split("sweep: vault ", 1)[1].split(": ", 1)
        counts[vault] = {} if summary == "nothing due" else ast.literal_eval(summary)
    assert sorted(counts) == sorted(vaults), text
    return counts


# -- driving rotations through the hub's HTTP API (failure and crash scenarios) ----------------


def start_rotation(stack: LocalStack, seeded: Seeded) -> str:
    """``POST /api/rotations`` for ``seeded`` (as an operator would); returns the rotation id."""
    code, body = hub_call(stack, "POST", "/api/rotations", {"vault": seeded.vault, "secret": seeded.name})
    assert code == 202, body
    assert body["id"] == stack.rotation_id(seeded)
    return str(body["id"])


def approve(stack: LocalStack, rotation_id: str, principal: str = APPROVER) -> None:
    """Approve as ``principal`` (local/principals.py), signed in through App Service
    authentication; returns once the rotation recorded the decision."""
    code, body = hub_call(
        stack, "POST", f"/api/rotations/{rotation_id}/approve", {}, headers=stack.signed_in(principal)
    )
    assert code == 200, body


def reject(stack: LocalStack, rotation_id: str, reason: str, principal: str = APPROVER) -> None:
    code, body = hub_call(
        stack,
        "POST",
        f"/api/rotations/{rotation_id}/reject",
        {"reason": reason},
        headers=stack.signed_in(principal),
    )
    assert code == 200, body


def rerun(
    stack: LocalStack,
    rotation_id: str,
    body: dict[str, str] | None = None,
    *,
    approve_again: bool = False,
    timeout: float = 120,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``POST /api/rotations/{id}/rerun`` and wait until that new run has ended, approving it
    when it waits for a decision again (``approve_again``: a restart of a rotation that needs
    approval asks again).

    Returns (the rerun's answer, the rotation's status once it ended again).
    """
    # Times in the status have whole seconds: a quick rerun can end within the second the last
    # run ended in, so the whole view tells the runs apart (the custom status has microseconds).
    before = rotation(stack, rotation_id)
    code, answer = hub_call(stack, "POST", f"/api/rotations/{rotation_id}/rerun", body or {})
    assert code == 202, answer
    deadline = time.monotonic() + timeout
    approved = False
    while True:
        now = rotation(stack, rotation_id)
        if now != before:
            if now["runtimeStatus"] in ENDED:
                return dict(answer), now
            waiting = now["runtimeStatus"] == "Running" and (now["status"] or {}).get("step") == "approval"
            if approve_again and waiting and not approved:
                approve(stack, rotation_id)
                approved = True
        if time.monotonic() > deadline:
            raise TimeoutError(f"the rerun of {rotation_id} did not end within {timeout:g}s: {now}")
        time.sleep(0.3)


def undo_results(ended: dict[str, Any]) -> dict[str, str]:
    """What the status says about each undo: {undo activity: "done" | "failed"}."""
    return {u["undo"]: u["result"] for u in ended["status"]["compensation"]}


def undo_detail(ended: dict[str, Any], undo: str) -> str:
    return next(str(u["detail"]) for u in ended["status"]["compensation"] if u["undo"] == undo)


def value_of(stack: LocalStack, vault: str, name: str, version: str | None = None) -> str:
    return stack.secret_client(vault).get_secret(name, version).value or ""


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 30, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


# -- crashes: the host SIGKILLed while a call it made is in flight ---------------------------------


def hold_back(cloud: AdminClient, target: str, operation: str, *, seconds: float, count: int = 1) -> int:
    """Delay the next ``count`` calls of ``operation``; returns the fault's id."""
    fault = cloud.inject_fault(
        kind="latency", target=target, operation=operation, count=count, latency_ms=int(seconds * 1000)
    )
    return int(fault["id"])


def kill_in_flight(
    stack: LocalStack,
    cloud: AdminClient,
    fault_id: int,
    *,
    seconds: float,
    while_down: Callable[[], None] = lambda: None,
) -> None:
    """SIGKILL the host while the last call held back by ``fault_id`` is in flight; start it
    again (same data dir) once that call has landed in the cloud, after ``while_down``."""
    assert stack.host is not None
    wait_until(lambda: all(f["id"] != fault_id for f in cloud.faults()), "the held-back call", timeout=60)
    taken = time.monotonic()
    time.sleep(min(0.3, seconds / 4))
    stack.host.kill()
    time.sleep(max(0.0, taken + seconds + 0.5 - time.monotonic()))
    assert not stack.host.running
    while_down()
    stack.host.start()
