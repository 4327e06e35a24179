"""Function keys, as the real host checks them (only with ``--auth keys``; ``func start`` checks none).

Keys are generated at the first start and kept in ``<data>/host-keys.json`` (readable by the owner
only), so a restarted host accepts the same keys. A key is presented as the ``code`` query
parameter or the ``x-functions-key`` header.

- ANONYMOUS routes need nothing; FUNCTION routes need a function key or the master key;
  ADMIN routes and ``/admin/*`` need the master key.
- ``/runtime/webhooks/durabletask`` needs the ``durabletask_extension`` system key (or master) and
  ``/runtime/webhooks/eventgrid`` the ``eventgrid_extension`` one, like the real extensions.
- The SDK's RPC routes (``/durabletask/``) stay open: in Azure they listen on loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

KEYS_FILE = "host-keys.json"
KEY_HEADER = "x-functions-key"


@dataclass(frozen=True)
class HostKeys:
    master: str
    function_default: str
    durabletask_extension: str
    eventgrid_extension: str

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        return {
            "masterKey": data["master"],
            "functionKeys": {"default": data["function_default"]},
            "systemKeys": {
                "durabletask_extension": data["durabletask_extension"],
                "eventgrid_extension": data["eventgrid_extension"],
            },
        }


def _new_key() -> str:
    return secrets.token_urlsafe(40)


def load_or_create_keys(data_dir: Path) -> HostKeys:
    """Read host-keys.json, or write a new one; raises ValueError if the file is unreadable."""
    path = data_dir / KEYS_FILE
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return HostKeys(
                master=data["masterKey"],
                function_default=data["functionKeys"]["default"],
                durabletask_extension=data["systemKeys"]["durabletask_extension"],
                eventgrid_extension=data["systemKeys"]["eventgrid_extension"],
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a host keys file: {exc}") from exc
    keys = HostKeys(_new_key(), _new_key(), _new_key(), _new_key())
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(keys.as_json(), handle, indent=2)
    return keys


class Authorizer:
    """Decides whether a request carries the key its route needs; ``keys=None`` means nothing is enforced."""

    def __init__(self, keys: HostKeys | None) -> None:
        self.keys = keys

    @property
    def enforced(self) -> bool:
        return self.keys is not None

    @staticmethod
    def presented_key(request: web.Request) -> str | None:
        return request.query.get("code") or request.headers.get(KEY_HEADER)

    def allows(self, request: web.Request, level: str) -> bool:
        """``level``: anonymous, function, admin, or system:<extension>."""
        keys = self.keys
        if keys is None or level == "anonymous":
            return True
        presented = self.presented_key(request)
        if not presented:
            return False
        if secrets.compare_digest(presented, keys.master):
            return True
        if level == "function":
            return secrets.compare_digest(presented, keys.function_default)
        if level == "system:durabletask_extension":
            return secrets.compare_digest(presented, keys.durabletask_extension)
        if level == "system:eventgrid_extension":
            return secrets.compare_digest(presented, keys.eventgrid_extension)
        return False


def unauthorized() -> web.Response:
    return web.json_response({"Message": "Unauthorized: a valid function key is required."}, status=401)
