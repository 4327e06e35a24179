"""The state of the topology's Entra applications: owners and password credentials, kept in the data dir.

Secrets are kept the way Entra ID keeps them: only a salted hash and the first three characters
(Graph's ``hint``) are stored, so ``applications.json`` holds nothing a client could log in with.
The one exception is ``application-secrets.json`` (mode 0600): the secrets the local cloud itself
made up, or took from the topology, when it first seeded an application, which the admin API hands
to tests and the demo so they can store the initial secret in a vault. Each change is written at
once (atomically), so the state survives a restart or a kill of the local cloud.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local.cloud.topology import Application, PasswordSeed, Topology

# Entra ID's client secrets: 40 characters, the hint (3) then a digit and "Q~", then 34 more of
# letters, digits and "~._-" (the shape the portal and Graph hand out).
_HEAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TAIL = _HEAD + "~._-"
SECRET_LENGTH = 40
DEFAULT_LIFETIME_SECONDS = 2 * 365 * 86400  # Graph's default endDateTime: start + 2 years


def generate_secret() -> str:
    head = "".join(secrets.choice(_HEAD) for _ in range(3)) + secrets.choice("0123456789") + "Q~"
    return head + "".join(secrets.choice(_TAIL) for _ in range(SECRET_LENGTH - len(head)))


def graph_time(ts: float) -> str:
    """Graph's date-times: UTC, seven fractional digits, "Z"."""
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}0Z"


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode("utf-8")).hexdigest()


@dataclass
class StoredPassword:
    key_id: str
    display_name: str | None
    start: float  # unix seconds
    end: float
    hint: str
    salt: str
    digest: str
    added_at: float  # when it was added (0: before the local cloud's time, fully replicated)
    origin: str  # "topology", "admin" or "graph"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, _digest(self.salt, secret))

    def public(self) -> dict[str, Any]:
        """What the admin API shows: no secret, no hash."""
        return {
            "key_id": self.key_id,
            "display_name": self.display_name,
            "start": graph_time(self.start),
            "end": graph_time(self.end),
            "hint": self.hint,
            "added_at": graph_time(self.added_at) if self.added_at else None,
            "origin": self.origin,
        }


@dataclass
class ApplicationState:
    owners: list[str] = field(default_factory=list)  # principal ids
    passwords: list[StoredPassword] = field(default_factory=list)


class NoSuchPassword(Exception):
    """The application has no password credential with this key id."""


class ApplicationStore:
    """Owners and password credentials of every application of the topology, by application name."""

    def __init__(self, data_dir: Path, topology: Topology) -> None:
        self._path = data_dir / "applications.json"
        self._secrets_path = data_dir / "application-secrets.json"
        self._topology = topology
        self._state: dict[str, ApplicationState] = {}
        self._initial: dict[str, dict[str, str]] = {}  # app name -> key id -> secret seeded
        self._load()
        changed = False
        for app in topology.applications.values():
            if app.object_id not in self._state:
                self._seed(app)
                changed = True
        if changed:
            self._save()

    # -- persistence --------------------------------------------------------------------------

    def _load(self) -> None:
        if self._path.exists():
            doc = json.loads(self._path.read_text(encoding="utf-8"))
            for object_id, raw in doc.get("applications", {}).items():
                self._state[object_id] = ApplicationState(
                    owners=list(raw.get("owners", [])),
                    passwords=[StoredPassword(**p) for p in raw.get("passwords", [])],
                )
        if self._secrets_path.exists():
            self._initial = json.loads(self._secrets_path.read_text(encoding="utf-8"))

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)

    def _save(self) -> None:
        doc = {
            "applications": {
                object_id: {"owners": st.owners, "passwords": [asdict(p) for p in st.passwords]}
                for object_id, st in self._state.items()
            }
        }
        self._write_private(self._path, json.dumps(doc, indent=1))
        self._write_private(self._secrets_path, json.dumps(self._initial, indent=1))

    def _seed(self, app: Application) -> None:
        state = ApplicationState(owners=list(app.owners))
        self._initial[app.name] = {}
        for seed in app.password_credentials:
            secret = seed.secret or generate_secret()
            state.passwords.append(self._password(seed, secret, added_at=0.0, origin="topology"))
            self._initial[app.name][seed.key_id] = secret
        self._state[app.object_id] = state

    @staticmethod
    def _password(seed: PasswordSeed, secret: str, *, added_at: float, origin: str) -> StoredPassword:
        salt = secrets.token_hex(16)
        return StoredPassword(
            key_id=seed.key_id,
            display_name=seed.display_name,
            start=seed.start,
            end=seed.end,
            hint=secret[:3],
            salt=salt,
            digest=_digest(salt, secret),
            added_at=added_at,
            origin=origin,
        )

    # -- reads --------------------------------------------------------------------------------

    def state(self, app: Application) -> ApplicationState:
        return self._state[app.object_id]

    def passwords(self, app: Application) -> list[StoredPassword]:
        return list(self._state[app.object_id].passwords)

    def owners(self, app: Application) -> list[str]:
        return list(self._state[app.object_id].owners)

    def initial_secret(self, app: Application) -> tuple[StoredPassword, str] | None:
        """The first credential seeded from the topology that the application still has, and its secret."""
        seeded = self._initial.get(app.name, {})
        for password in self._state[app.object_id].passwords:
            if password.key_id in seeded:
                return password, seeded[password.key_id]
        return None

    # -- writes -------------------------------------------------------------------------------

    def add_password(
        self,
        app: Application,
        *,
        display_name: str | None,
        start: float,
        end: float,
        origin: str,
        propagated: bool = False,
    ) -> tuple[StoredPassword, str]:
        """Add a new credential with a new secret; returns it and the secret (shown this once)."""
        secret = generate_secret()
        seed = PasswordSeed(
            key_id=str(uuid.uuid4()), display_name=display_name, secret=None, start=start, end=end
        )
        password = self._password(seed, secret, added_at=0.0 if propagated else time.time(), origin=origin)
        self._state[app.object_id].passwords.append(password)
        self._save()
        return password, secret

    def remove_password(self, app: Application, key_id: str) -> None:
        """Raises NoSuchPassword."""
        state = self._state[app.object_id]
        kept = [p for p in state.passwords if p.key_id != key_id.lower()]
        if len(kept) == len(state.passwords):
            raise NoSuchPassword(key_id)
        state.passwords = kept
        self._save()

    def add_owner(self, app: Application, principal_id: str) -> bool:
        """False when it is an owner already."""
        owners = self._state[app.object_id].owners
        if principal_id in owners:
            return False
        owners.append(principal_id)
        self._save()
        return True

    def remove_owner(self, app: Application, principal_id: str) -> bool:
        owners = self._state[app.object_id].owners
        if principal_id not in owners:
            return False
        owners.remove(principal_id)
        self._save()
        return True

    def reset(self, app: Application) -> None:
        """Back to the topology's owners and credentials (generated secrets are made anew)."""
        self._seed(app)
        self._save()
