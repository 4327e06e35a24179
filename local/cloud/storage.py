"""Storage account keys: two per account (key1, key2), made the first time a data dir sees the account.

A key is what Azure hands out: 64 random bytes, base64 (88 characters). The keys, their creation
times and each account's creation time live in ``<data>/storage-keys.json`` (mode 0600), so they
survive restarts; ``regenerate`` replaces one key with a new value and creation time. Key values
are never logged; only the admin API hands them out (to seed a vault in tests and the demo).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.certificates import write_private
from local.cloud.topology import StorageAccount

KEY_NAMES = ("key1", "key2")
KEY_BYTES = 64


class UnknownKeyName(ValueError):
    """A key name other than key1 or key2."""


@dataclass(frozen=True)
class StorageKey:
    name: str  # "key1" or "key2"
    value: str = ""
    created: float = 0.0  # unix seconds

    def __repr__(self) -> str:  # a key that ends up in a log or a traceback shows no value
        return f"StorageKey(name={self.name!r}, created={self.created})"


def new_key_value() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


class StorageKeyStore:
    """The keys of every storage account of the topology, kept in the data dir."""

    def __init__(self, path: Path, accounts: Mapping[str, StorageAccount]) -> None:
        self._path = path
        self._accounts = dict(accounts)
        self._doc: dict[str, Any] = self._load()
        changed = False
        now = time.time()
        for name in self._accounts:
            entry = self._doc.setdefault(name, {})
            if "created" not in entry:
                entry["created"] = now
                changed = True
            for key_name in KEY_NAMES:
                if key_name not in entry:
                    entry[key_name] = {"value": new_key_value(), "created": now}
                    changed = True
        if changed:
            self._save()

    def _load(self) -> dict[str, Any]:
        if not self._path.exists():
            return {}
        doc = json.loads(self._path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}

    def _save(self) -> None:
        write_private(self._path, json.dumps(self._doc, indent=2).encode("utf-8"))

    def keys(self, account: str) -> tuple[StorageKey, ...]:
        """key1 and key2 of an account of the topology (KeyError for any other name)."""
        entry = self._doc[self._accounts[account].name]
        return tuple(
            StorageKey(name=k, value=entry[k]["value"], created=float(entry[k]["created"])) for k in KEY_NAMES
        )

    def account_created(self, account: str) -> float:
        return float(self._doc[self._accounts[account].name]["created"])

    def regenerate(self, account: str, key_name: str) -> tuple[StorageKey, ...]:
        """Give ``key_name`` (key1 or key2, any case) a new value; returns both keys.

        Raises:
            UnknownKeyName: any other key name.
        """
        wanted = key_name.lower()
        if wanted not in KEY_NAMES:
            raise UnknownKeyName(key_name)
        entry = self._doc[self._accounts[account].name]
        entry[wanted] = {"value": new_key_value(), "created": time.time()}
        self._save()
        return self.keys(account)

    def azurite_accounts(self) -> str:
        """``AZURITE_ACCOUNTS`` for Azurite: ``name:key1:key2`` for every account that allows Shared Key.

        An account with ``allow_shared_key_access: false`` is left out, so Azurite knows no key of it.
        """
        return ";".join(
            f"{a.name}:{self.keys(a.name)[0].value}:{self.keys(a.name)[1].value}"
            for a in self._accounts.values()
            if a.allow_shared_key_access
        )
