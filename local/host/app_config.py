"""What the host reads from the script root besides the code: host.json and local.settings.json.

The real host takes the task hub name, the activity concurrency, the orchestration versioning
settings (``local/host/versioning.py``) and the HTTP route prefix from host.json, and app
settings from the environment (``func start`` loads local.settings.json's
``Values`` into it first). Trigger arguments such as ``schedule="%ROTATION_SWEEP_SCHEDULE%"`` are
resolved from those settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.host.versioning import VersioningConfigError, VersioningSettings

# The real host's default when host.json names no hub (Functions v2+ with Azure Storage).
DEFAULT_HUB_NAME = "TestHubName"
DEFAULT_ROUTE_PREFIX = "api"
# host.json's default for maxConcurrentActivityFunctions is 10 x the processor count.
DEFAULT_ACTIVITY_CONCURRENCY_PER_CORE = 10

_PLACEHOLDER = re.compile(r"%([^%]+)%")


class ConfigError(Exception):
    """host.json, local.settings.json or a trigger argument cannot be used; the message says why."""


@dataclass(frozen=True)
class HostJson:
    hub_name: str
    max_concurrent_activities: int
    route_prefix: str
    versioning: VersioningSettings = field(default_factory=VersioningSettings)


def read_host_json(script_root: Path) -> HostJson:
    """Read the settings the local host honours; raises ConfigError for malformed JSON."""
    path = script_root / "host.json"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        data = loaded
    extensions = data.get("extensions") or {}
    durable = extensions.get("durableTask") or {}
    http = extensions.get("http") or {}
    hub = durable.get("hubName") or DEFAULT_HUB_NAME
    if isinstance(hub, str):
        hub = resolve_placeholders(hub, os.environ, what="extensions.durableTask.hubName")
    default_activities = DEFAULT_ACTIVITY_CONCURRENCY_PER_CORE * (os.cpu_count() or 1)
    activities = durable.get("maxConcurrentActivityFunctions", default_activities)
    if not isinstance(activities, int) or activities < 1:
        raise ConfigError("extensions.durableTask.maxConcurrentActivityFunctions must be a positive integer")
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise ConfigError("extensions.http.routePrefix must be a string")
    try:
        versioning = VersioningSettings.from_durable_task(durable)
    except VersioningConfigError as exc:
        raise ConfigError(str(exc)) from exc
    return HostJson(
        hub_name=str(hub),
        max_concurrent_activities=activities,
        route_prefix=prefix.strip("/"),
        versioning=versioning,
    )


def load_local_settings(script_root: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Load local.settings.json ``Values`` into ``environ`` without overriding what is already set.

    Returns the names it set (never their values, which may be secrets). Raises ConfigError for a
    malformed file.
    """
    path = script_root / "local.settings.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    values = data.get("Values") if isinstance(data, dict) else None
    if values is None:
        return []
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'Values' must be an object")
    added = []
    for name, value in values.items():
        if name in environ:
            continue
        environ[name] = "" if value is None else str(value)
        added.append(name)
    return added


def resolve_placeholders(
    text: str, environ: MutableMapping[str, str] | os._Environ[str], *, what: str
) -> str:
    """Replace each ``%NAME%`` with the app setting NAME; raises ConfigError naming a missing one."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ConfigError(f"{what}: app setting '{name}' is not set (referenced as %{name}%)")
        return environ[name]

    return _PLACEHOLDER.sub(substitute, text)
