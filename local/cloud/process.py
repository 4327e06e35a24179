"""Start a local cloud as a subprocess and talk to its admin endpoints: for tests, the demo, benchmarks.

    from local.cloud.process import LocalCloud

    with LocalCloud(data_dir=tmp_path / "cloud", env={"HUB_URL": hub_url}) as cloud:
        subprocess.run([...], env={**os.environ, **cloud.client_env})   # a client process
        cloud.admin.inject_fault(target="spoke1-kv", operation="get_secret", kind="throttle", count=2)
        cloud.admin.emit_event(vault="spoke1-kv", secret="db-password", event_type="SecretNearExpiry")

``client_env`` holds what ``<data>/env`` exports (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
SSL_CERT_FILE, IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_CLIENT_ID, LOCAL_CLOUD_ADMIN_URL). Set
it in a client process's environment before that process imports aiohttp: aiohttp reads
SSL_CERT_FILE once, at import. The cloud subprocess dies with the process that started it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from local.cloud.sites import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOPOLOGY = Path(__file__).parent / "topologies" / "default.json"


class LocalCloudError(RuntimeError):
    """The local cloud did not start, or an admin call was refused (the message has its answer)."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the ``export NAME=value`` lines the local cloud writes."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


class AdminClient:
    """Typed helpers for the admin endpoints (plain HTTP on 127.0.0.1, never through a proxy)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None, timeout: float = 30) -> Any:
        """Raises LocalCloudError with the cloud's answer for any status >= 400."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise LocalCloudError(
                f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from exc
        return json.loads(raw) if raw else None

    def inject_fault(
        self,
        *,
        kind: str,
        target: str = "*",
        operation: str = "*",
        count: int = 1,
        retry_after_seconds: int = 1,
        latency_ms: int = 0,
    ) -> dict[str, Any]:
        """kind: throttle (429 + Retry-After), unavailable (503), latency, drop (connection reset).

        target: a vault, site, storage account or application name, "identity" (the managed
        identity endpoint), "graph", "entra" (the Entra ID token endpoint) or "*"; operation: e.g.
        get_secret, set_secret, update_secret, restart, get_site, get_storage_account, list_keys,
        regenerate_key, get_token, get_application, add_password, remove_password, or "*".
        """
        result: dict[str, Any] = self.call(
            "POST",
            "/admin/faults",
            {
                "kind": kind,
                "target": target,
                "operation": operation,
                "count": count,
                "retry_after_seconds": retry_after_seconds,
                "latency_ms": latency_ms,
            },
        )
        return result

    def faults(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/admin/faults")["faults"])

    def clear_faults(self) -> None:
        self.call("DELETE", "/admin/faults")

    def emit_event(
        self, *, vault: str, secret: str, event_type: str, version: str | None = None
    ) -> dict[str, Any]:
        """Emit SecretNewVersionCreated / SecretNearExpiry / SecretExpired now; returns the event."""
        body = {"vault": vault, "secret": secret, "event_type": event_type, "version": version}
        return dict(self.call("POST", "/admin/eventgrid/emit", body)["event"])

    def add_event_subscription(
        self,
        *,
        name: str,
        vault: str,
        endpoint: str,
        included_event_types: list[str] | None = None,
        max_delivery_attempts: int = 30,
        event_time_to_live_minutes: int = 1440,
        event_delivery_schema: str = "EventGridSchema",
    ) -> None:
        """Add or replace; the webhook must answer the validation handshake now, as in Azure.

        ``event_delivery_schema="CloudEventSchemaV1_0"`` delivers CloudEvents 1.0 and validates
        with the OPTIONS handshake instead.
        """
        body: dict[str, Any] = {
            "name": name,
            "vault": vault,
            "endpoint": endpoint,
            "max_delivery_attempts": max_delivery_attempts,
            "event_time_to_live_minutes": event_time_to_live_minutes,
            "event_delivery_schema": event_delivery_schema,
        }
        if included_event_types is not None:
            body["included_event_types"] = included_event_types
        self.call("POST", "/admin/eventgrid/subscriptions", body)

    def remove_event_subscription(self, name: str) -> None:
        self.call("DELETE", f"/admin/eventgrid/subscriptions/{name}")

    def set_eventgrid(
        self,
        *,
        scan_interval_seconds: float | None = None,
        near_expiry_window_seconds: float | None = None,
        retry_schedule_scale: float | None = None,
        delivery_timeout_seconds: float | None = None,
        duplicates: bool | None = None,
    ) -> dict[str, Any]:
        changes = {
            k: v
            for k, v in {
                "scan_interval_seconds": scan_interval_seconds,
                "near_expiry_window_seconds": near_expiry_window_seconds,
                "retry_schedule_scale": retry_schedule_scale,
                "delivery_timeout_seconds": delivery_timeout_seconds,
                "duplicates": duplicates,
            }.items()
            if v is not None
        }
        return dict(self.call("PUT", "/admin/eventgrid/settings", changes))

    def scan_now(self) -> list[dict[str, Any]]:
        """Run the near-expiry / expired scan now; returns the events it emitted."""
        return list(self.call("POST", "/admin/eventgrid/scan")["events"])

    def deliveries(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/admin/eventgrid/deliveries")["attempts"])

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/admin/eventgrid/deadletters")["dead_letters"])

    def sites(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.call("GET", "/admin/sites")["sites"]}

    def applications(self) -> dict[str, dict[str, Any]]:
        """Per application: ids, owners and password credentials (key ids, names, dates, hint; no secret)."""
        return {a["name"]: a for a in self.call("GET", "/admin/applications")["applications"]}

    def application(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/admin/applications/{name}"))

    def add_application_password(
        self,
        name: str,
        *,
        display_name: str | None = None,
        end: str | float | None = None,
        start: str | float | None = None,
        propagated: bool = True,
    ) -> dict[str, Any]:
        """Seed a password credential (no Graph rules apply); the answer's ``secret_text`` is the only copy.

        ``start``/``end``: ISO date-times or days (``start`` from now, ``end`` from the start);
        default now and two years. ``propagated``: usable at once despite the propagation delay.
        """
        body: dict[str, Any] = {"display_name": display_name, "propagated": propagated}
        if end is not None:
            body["end"] = end
        if start is not None:
            body["start"] = start
        return dict(self.call("POST", f"/admin/applications/{name}/passwords", body))

    def remove_application_password(self, name: str, key_id: str) -> None:
        self.call("DELETE", f"/admin/applications/{name}/passwords/{key_id}")

    def initial_secret(self, name: str) -> dict[str, Any]:
        """``{key_id, display_name, end, secret_text}`` of the credential the topology seeded (while it exists)."""
        return dict(self.call("GET", f"/admin/applications/{name}/initial-secret"))

    def reset_application(self, name: str) -> dict[str, Any]:
        """Back to the topology's owners and credentials (seeded secrets that were generated are new)."""
        return dict(self.call("POST", f"/admin/applications/{name}/reset"))

    def set_entra(self, *, propagation_delay_seconds: float | None = None) -> dict[str, Any]:
        """Entra ID settings: a credential younger than ``propagation_delay_seconds`` is refused."""
        changes = (
            {}
            if propagation_delay_seconds is None
            else {"propagation_delay_seconds": propagation_delay_seconds}
        )
        return dict(self.call("POST", "/admin/entra", changes))

    def entra(self) -> dict[str, Any]:
        return dict(self.call("GET", "/admin/entra"))

    def storage_accounts(self) -> dict[str, dict[str, Any]]:
        """Per storage account: ARM id, blob endpoint, allow_shared_key_access, key names and creation
        times (no key values)."""
        return {a["name"]: a for a in self.call("GET", "/admin/storage/accounts")["storage_accounts"]}

    def azurite(self) -> dict[str, Any] | None:
        """The blob service: running, pid, port, starts, last start and restart times (s), log path."""
        answer: dict[str, Any] | None = self.call("GET", "/admin/storage/accounts")["azurite"]
        return answer

    def storage_keys(self, name: str) -> dict[str, str]:
        """``{"key1": …, "key2": …}``: the account's current keys, to seed a vault (never log them)."""
        return dict(self.call("GET", f"/admin/storage/accounts/{name}/keys"))

    def role_assignments(self) -> list[dict[str, str]]:
        """Every role assignment now: principal (id and name), role (name and id), scope."""
        return list(self.call("GET", "/admin/role-assignments")["role_assignments"])

    def assign_role(self, *, identity: str, role: str, scope: str) -> dict[str, str]:
        """Assign ``role`` (name or id) to ``identity`` on ``scope`` (an ARM id, ``vault:NAME``,
        ``site:NAME`` or ``storage:NAME``); assigning it twice changes nothing."""
        return dict(
            self.call("POST", "/admin/role-assignments", {"identity": identity, "role": role, "scope": scope})
        )

    def remove_role(self, *, identity: str, role: str, scope: str) -> dict[str, str]:
        """Remove that assignment (LocalCloudError when there is none)."""
        return dict(
            self.call(
                "DELETE", "/admin/role-assignments", {"identity": identity, "role": role, "scope": scope}
            )
        )

    def topics(self) -> dict[str, dict[str, Any]]:
        """The Event Grid custom topics by name: ids, endpoint, how many events each holds."""
        return {t["name"]: t for t in self.call("GET", "/admin/eventgrid/topics")["topics"]}

    def topic_events(self, name: str) -> list[dict[str, Any]]:
        """What a custom topic received, oldest first: ``{"received_at", "identity", "event"}``."""
        return list(self.call("GET", f"/admin/eventgrid/topics/{name}/events")["events"])

    def clear_topic_events(self, name: str) -> None:
        self.call("DELETE", f"/admin/eventgrid/topics/{name}/events")


class LocalCloud:
    """``python -m local.cloud`` as a subprocess; ready once its env file exists and it answers."""

    def __init__(
        self,
        *,
        data_dir: Path,
        topology: Path = DEFAULT_TOPOLOGY,
        env: Mapping[str, str] | None = None,
        log_file: Path | None = None,
        ports: Mapping[str, int] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        """``env`` is added to this process's environment for the cloud (e.g. HUB_URL); ``ports``
        may fix "proxy", "tls", "identity", "admin" (default: free ports chosen by the cloud)."""
        self.data_dir = Path(data_dir).resolve()
        self.topology = Path(topology).resolve()
        self.extra_env = dict(env or {})
        self.log_file = Path(log_file) if log_file else self.data_dir.parent / f"{self.data_dir.name}.log"
        self.ports = dict(ports or {})
        self.startup_timeout = startup_timeout
        self.client_env: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return self.client_env["LOCAL_CLOUD_ADMIN_URL"]

    @property
    def admin(self) -> AdminClient:
        return AdminClient(self.admin_url)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> LocalCloud:
        """Raises LocalCloudError (with the log's tail) if it exits or is not ready in time."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env_file = self.data_dir / "env"
        env_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "local.cloud",
            "--topology",
            str(self.topology),
            "--data",
            str(self.data_dir),
        ]
        for name in ("proxy", "tls", "identity", "admin"):
            if self.ports.get(name):
                command += [f"--{name}-port", str(self.ports[name])]
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_VARIABLES}
        env.update(self.extra_env)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,  # the cloud must not outlive a crashed test
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalCloudError(
                    f"local cloud exited with {self._process.returncode}:\n{self._log_tail()}"
                )
            if env_file.exists():
                self.client_env = read_env_file(env_file)
                self.info = json.loads((self.data_dir / "cloud.json").read_text(encoding="utf-8"))
                self.admin.call("GET", "/admin/health", timeout=5)
                return self
            time.sleep(0.05)
        self.stop()
        raise LocalCloudError(f"local cloud not ready after {self.startup_timeout}s:\n{self._log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL at once (a crash); its sites get SIGTERM from the kernel."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, *, same_ports: bool = True) -> LocalCloud:
        """Stop and start again on the same data dir (and, by default, the same ports)."""
        if same_ports and self.info:
            self.ports = {k: int(v) for k, v in self.info["ports"].items()}
        self.stop()
        return self.start()

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# A cloud started from a shell that sourced another cloud's env must not inherit that cloud's settings.
_CLIENT_VARIABLES = frozenset(
    {
        "HTTPS_PROXY",
        "https_proxy",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "AZURE_CLIENT_ID",
        "LOCAL_CLOUD_ADMIN_URL",
    }
)
