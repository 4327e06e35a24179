"""The state of every vault, in one SQLite file in the data dir, so it survives a restart.

Each write is one SQLite transaction, hence atomic. The store knows nothing of HTTP; the
Key Vault routes translate its exceptions into Key Vault's status codes and bodies.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    vault TEXT NOT NULL,
    key TEXT NOT NULL,             -- lower-case name: Key Vault names are case-insensitive
    name TEXT NOT NULL,            -- the spelling of the first set
    deleted_date INTEGER,          -- set while soft-deleted
    scheduled_purge_date INTEGER,
    PRIMARY KEY (vault, key)
);
CREATE TABLE IF NOT EXISTS versions (
    vault TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    seq INTEGER NOT NULL,          -- creation order; the highest is the current version
    value TEXT NOT NULL,
    content_type TEXT,
    tags TEXT,                     -- JSON object or NULL
    enabled INTEGER NOT NULL,
    nbf INTEGER,
    exp INTEGER,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    near_expiry_sent INTEGER NOT NULL DEFAULT 0,
    expired_sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (vault, key, version)
);
CREATE INDEX IF NOT EXISTS versions_by_seq ON versions (vault, key, seq);
"""


@dataclass(frozen=True)
class SecretVersion:
    name: str
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int
    seq: int = 0


@dataclass(frozen=True)
class Deletion:
    deleted_date: int
    scheduled_purge_date: int


@dataclass(frozen=True)
class SecretBackup:
    """Everything a backup blob carries: the name and every version."""

    name: str
    versions: list[SecretVersion] = field(default_factory=list)


class SecretIsDeleted(Exception):
    """The name is soft-deleted and not purged: it can only be recovered or purged."""


class SecretExists(Exception):
    """A restore found the name already in use."""


class NoSuchSecret(Exception):
    """No live (or, for deleted-secret operations, no deleted) secret of that name or version."""


_VERSIONS_SELECT = (
    "SELECT s.name AS name, v.version, v.value, v.content_type, v.tags, v.enabled, v.nbf, v.exp,"
    " v.created, v.updated, v.seq FROM versions v JOIN secrets s ON s.vault = v.vault AND s.key = v.key WHERE "
)


def _row_to_version(row: sqlite3.Row) -> SecretVersion:
    return SecretVersion(
        name=row["name"],
        version=row["version"],
        value=row["value"],
        content_type=row["content_type"],
        tags=json.loads(row["tags"]) if row["tags"] is not None else None,
        enabled=bool(row["enabled"]),
        nbf=row["nbf"],
        exp=row["exp"],
        created=row["created"],
        updated=row["updated"],
        seq=row["seq"],
    )


class KeyVaultStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _secret_row(self, vault: str, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM secrets WHERE vault = ? AND key = ?", (vault, key)
        ).fetchone()
        return row

    def _versions_query(self, where: str) -> str:
        # ``where`` is always a constant clause of this module; every value is a bound parameter.
        return _VERSIONS_SELECT + where

    def _current(self, vault: str, key: str) -> SecretVersion | None:
        row = self._db.execute(
            self._versions_query("v.vault = ? AND v.key = ?") + " ORDER BY v.seq DESC LIMIT 1", (vault, key)
        ).fetchone()
        return _row_to_version(row) if row else None

    # -- live secrets -------------------------------------------------------------------------

    def set(
        self,
        vault: str,
        name: str,
        *,
        value: str,
        content_type: str | None,
        tags: dict[str, str] | None,
        enabled: bool,
        nbf: int | None,
        exp: int | None,
    ) -> SecretVersion:
        """Add a new version, which becomes the current one.

        Raises:
            SecretIsDeleted: the name is soft-deleted.
        """
        key = name.lower()
        now = int(time.time())
        with self._transaction() as db:
            row = self._secret_row(vault, key)
            if row is not None and row["deleted_date"] is not None:
                raise SecretIsDeleted(name)
            if row is None:
                db.execute("INSERT INTO secrets (vault, key, name) VALUES (?, ?, ?)", (vault, key, name))
                stored_name = name
            else:
                stored_name = row["name"]
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE vault = ? AND key = ?", (vault, key)
            ).fetchone()[0]
            version = SecretVersion(
                name=stored_name,
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=tags,
                enabled=enabled,
                nbf=nbf,
                exp=exp,
                created=now,
                updated=now,
                seq=seq,
            )
            self._insert_version(db, vault, key, version)
        return version

    @staticmethod
    def _insert_version(db: sqlite3.Connection, vault: str, key: str, v: SecretVersion) -> None:
        db.execute(
            "INSERT INTO versions (vault, key, version, seq, value, content_type, tags, enabled, nbf, exp,"
            " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                vault,
                key,
                v.version,
                v.seq,
                v.value,
                v.content_type,
                json.dumps(v.tags) if v.tags is not None else None,
                int(v.enabled),
                v.nbf,
                v.exp,
                v.created,
                v.updated,
            ),
        )

    def get(self, vault: str, name: str, version: str | None = None) -> SecretVersion:
        """The named version, or the current one when ``version`` is None.

        Raises:
            NoSuchSecret: unknown name or version, or the secret is soft-deleted.
        """
        key = name.lower()
        row = self._secret_row(vault, key)
        if row is None or row["deleted_date"] is not None:
            raise NoSuchSecret(name)
        if version is None:
            current = self._current(vault, key)
            if current is None:
                raise NoSuchSecret(name)
            return current
        found = self._db.execute(
            self._versions_query("v.vault = ? AND v.key = ? AND v.version = ?"), (vault, key, version.lower())
        ).fetchone()
        if found is None:
            raise NoSuchSecret(f"{name}/{version}")
        return _row_to_version(found)

    def list_current(self, vault: str, after_key: str, limit: int) -> list[SecretVersion]:
        """Current versions of live secrets, by name, starting after ``after_key``."""
        rows = self._db.execute(
            self._versions_query(
                "v.vault = ? AND s.key > ? AND s.deleted_date IS NULL"
                " AND v.seq = (SELECT MAX(seq) FROM versions w WHERE w.vault = v.vault AND w.key = v.key)"
                " ORDER BY s.key LIMIT ?"
            ),
            (vault, after_key, limit),
        ).fetchall()
        return [_row_to_version(r) for r in rows]

    def list_versions(self, vault: str, name: str, after_seq: int, limit: int) -> list[SecretVersion]:
        """Every version of a live secret in creation order, starting after ``after_seq``.

        Raises:
            NoSuchSecret: unknown or soft-deleted name.
        """
        key = name.lower()
        row = self._secret_row(vault, key)
        if row is None or row["deleted_date"] is not None:
            raise NoSuchSecret(name)
        rows = self._db.execute(
            self._versions_query("v.vault = ? AND v.key = ? AND v.seq > ?") + " ORDER BY v.seq LIMIT ?",
            (vault, key, after_seq, limit),
        ).fetchall()
        return [_row_to_version(r) for r in rows]

    def update(self, vault: str, name: str, version: str | None, changes: dict[str, Any]) -> SecretVersion:
        """Change content type, tags, enabled, nbf or exp of one version (the current one if None).

        Raises:
            NoSuchSecret: unknown name or version, or the secret is soft-deleted.
        """
        existing = self.get(vault, name, version)
        updated = replace(existing, **changes, updated=int(time.time()))
        with self._transaction() as db:
            db.execute(
                "UPDATE versions SET content_type = ?, tags = ?, enabled = ?, nbf = ?, exp = ?, updated = ?,"
                " near_expiry_sent = CASE WHEN ? IS NOT exp THEN 0 ELSE near_expiry_sent END,"
                " expired_sent = CASE WHEN ? IS NOT exp THEN 0 ELSE expired_sent END"
                " WHERE vault = ? AND key = ? AND version = ?",
                (
                    updated.content_type,
                    json.dumps(updated.tags) if updated.tags is not None else None,
                    int(updated.enabled),
                    updated.nbf,
                    updated.exp,
                    updated.updated,
                    updated.exp,
                    updated.exp,
                    vault,
                    name.lower(),
                    existing.version,
                ),
            )
        return updated

    # -- soft delete --------------------------------------------------------------------------

    def delete(self, vault: str, name: str, retention_days: int) -> tuple[SecretVersion, Deletion]:
        """Soft-delete a secret with all its versions.

        Raises:
            NoSuchSecret: unknown or already deleted.
        """
        current = self.get(vault, name)
        now = int(time.time())
        deletion = Deletion(deleted_date=now, scheduled_purge_date=now + retention_days * 86400)
        with self._transaction() as db:
            db.execute(
                "UPDATE secrets SET deleted_date = ?, scheduled_purge_date = ? WHERE vault = ? AND key = ?",
                (deletion.deleted_date, deletion.scheduled_purge_date, vault, name.lower()),
            )
        return current, deletion

    def get_deleted(self, vault: str, name: str) -> tuple[SecretVersion, Deletion]:
        """Raises NoSuchSecret unless the name is soft-deleted."""
        row = self._secret_row(vault, name.lower())
        if row is None or row["deleted_date"] is None:
            raise NoSuchSecret(name)
        current = self._current(vault, name.lower())
        if current is None:
            raise NoSuchSecret(name)
        return current, Deletion(row["deleted_date"], row["scheduled_purge_date"])

    def list_deleted(self, vault: str, after_key: str, limit: int) -> list[tuple[SecretVersion, Deletion]]:
        rows = self._db.execute(
            "SELECT key FROM secrets WHERE vault = ? AND key > ? AND deleted_date IS NOT NULL"
            " ORDER BY key LIMIT ?",
            (vault, after_key, limit),
        ).fetchall()
        return [self.get_deleted(vault, r["key"]) for r in rows]

    def recover(self, vault: str, name: str) -> SecretVersion:
        """Raises NoSuchSecret unless the name is soft-deleted."""
        current, _ = self.get_deleted(vault, name)
        with self._transaction() as db:
            db.execute(
                "UPDATE secrets SET deleted_date = NULL, scheduled_purge_date = NULL WHERE vault = ? AND key = ?",
                (vault, name.lower()),
            )
        return current

    def purge(self, vault: str, name: str) -> None:
        """Raises NoSuchSecret unless the name is soft-deleted."""
        self.get_deleted(vault, name)
        self._remove(vault, name.lower())

    def _remove(self, vault: str, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM versions WHERE vault = ? AND key = ?", (vault, key))
            db.execute("DELETE FROM secrets WHERE vault = ? AND key = ?", (vault, key))

    def purge_due(self, now: int) -> list[tuple[str, str]]:
        """Purge every deleted secret whose retention has run out; returns (vault, name) pairs."""
        rows = self._db.execute(
            "SELECT vault, key, name FROM secrets WHERE scheduled_purge_date IS NOT NULL"
            " AND scheduled_purge_date <= ?",
            (now,),
        ).fetchall()
        for row in rows:
            self._remove(row["vault"], row["key"])
        return [(r["vault"], r["name"]) for r in rows]

    # -- backup and restore -------------------------------------------------------------------

    def backup(self, vault: str, name: str) -> SecretBackup:
        """Raises NoSuchSecret for an unknown or soft-deleted name."""
        self.get(vault, name)
        rows = self._db.execute(
            self._versions_query("v.vault = ? AND v.key = ?") + " ORDER BY v.seq", (vault, name.lower())
        ).fetchall()
        versions = [_row_to_version(r) for r in rows]
        return SecretBackup(name=versions[-1].name, versions=versions)

    def restore(self, vault: str, backup: SecretBackup) -> SecretVersion:
        """Recreate a secret with every version of the backup.

        Raises:
            SecretExists: the name is in use, live or soft-deleted.
        """
        key = backup.name.lower()
        with self._transaction() as db:
            if self._secret_row(vault, key) is not None:
                raise SecretExists(backup.name)
            db.execute("INSERT INTO secrets (vault, key, name) VALUES (?, ?, ?)", (vault, key, backup.name))
            for v in backup.versions:
                self._insert_version(db, vault, key, v)
        current = self._current(vault, key)
        assert current is not None  # a backup always holds at least one version
        return current

    # -- expiry events ------------------------------------------------------------------------

    def expiry_candidates(self, now: int, window: int) -> list[tuple[str, SecretVersion, bool, bool]]:
        """Current versions (of live secrets) due a NearExpiry or Expired event not yet sent.

        Returns (vault, version, near_expiry_due, expired_due) tuples.
        """
        rows = self._db.execute(
            self._versions_query(
                "s.deleted_date IS NULL AND v.exp IS NOT NULL"
                " AND v.seq = (SELECT MAX(seq) FROM versions w WHERE w.vault = v.vault AND w.key = v.key)"
                " AND ((v.near_expiry_sent = 0 AND v.exp <= ? AND v.exp > ?)"
                "   OR (v.expired_sent = 0 AND v.exp <= ?))"
            ).replace("SELECT s.name", "SELECT v.vault AS vault, v.near_expiry_sent, v.expired_sent, s.name"),
            (now + window, now, now),
        ).fetchall()
        due = []
        for row in rows:
            version = _row_to_version(row)
            expired = version.exp is not None and version.exp <= now
            due.append((row["vault"], version, not expired and not row["near_expiry_sent"], expired))
        return due

    def mark_expiry_sent(self, vault: str, name: str, version: str, *, expired: bool) -> None:
        column = "expired_sent" if expired else "near_expiry_sent"
        with self._transaction() as db:
            db.execute(
                f"UPDATE versions SET {column} = 1 WHERE vault = ? AND key = ? AND version = ?",  # noqa: S608
                (vault, name.lower(), version),
            )

    def counts(self) -> dict[str, int]:
        """Live secrets per vault (for the admin view)."""
        rows = self._db.execute(
            "SELECT vault, COUNT(*) AS n FROM secrets WHERE deleted_date IS NULL GROUP BY vault"
        ).fetchall()
        return {r["vault"]: r["n"] for r in rows}
