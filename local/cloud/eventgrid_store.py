"""Event Grid state kept in ``<data>/eventgrid.sqlite3``, so it survives a restart of the local cloud.

Event subscriptions created or deleted through the admin endpoint: in Azure a subscription is a
resource, so it outlives a restart of the service; here the topology's subscriptions are added at
each start and these changes are applied on top (a deleted topology subscription stays deleted).

Deliveries not yet done: one row per event and subscription: the event (in the Event Grid
schema, as published), the attempts made so far and the wall-clock time of the next one. A row is written before the first
attempt and removed once the event is delivered or dead-lettered; after each failed attempt its
counters are updated. Each change is one autocommitted statement, hence atomic.

Delivery from here is at least once, as Event Grid's: a cloud stopped (or killed) after the
webhook answered but before the row was removed delivers that event again after its restart.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from local.cloud.topology import EventSubscription

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    event TEXT NOT NULL,            -- JSON, Event Grid schema
    attempts INTEGER NOT NULL,      -- attempts made so far
    next_attempt_at REAL NOT NULL,  -- epoch seconds
    published_at REAL NOT NULL,     -- epoch seconds; the time to live counts from here
    publish_time TEXT NOT NULL,     -- the same, as dead letters spell it
    duplicate INTEGER NOT NULL      -- a deliberate second copy (the duplicates switch)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name TEXT PRIMARY KEY,
    spec TEXT,                      -- JSON of the EventSubscription; NULL once deleted
    changed_seq INTEGER NOT NULL    -- order of the admin changes
);
"""


@dataclass
class Pending:
    row_id: int
    subscription: str
    event: dict[str, Any]
    attempts: int
    next_attempt_at: float
    published_at: float
    publish_time: str
    duplicate: bool


class EventGridStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self,
        subscription: str,
        event: dict[str, Any],
        *,
        published_at: float,
        publish_time: str,
        duplicate: bool = False,
    ) -> Pending:
        cursor = self._db.execute(
            "INSERT INTO pending (subscription, event, attempts, next_attempt_at, published_at,"
            " publish_time, duplicate) VALUES (?, ?, 0, ?, ?, ?, ?)",
            (subscription, json.dumps(event), published_at, published_at, publish_time, int(duplicate)),
        )
        assert cursor.lastrowid is not None
        return Pending(
            row_id=cursor.lastrowid,
            subscription=subscription,
            event=event,
            attempts=0,
            next_attempt_at=published_at,
            published_at=published_at,
            publish_time=publish_time,
            duplicate=duplicate,
        )

    def retry_later(self, pending: Pending) -> None:
        """Record the attempts made and the time of the next one (both from ``pending``)."""
        self._db.execute(
            "UPDATE pending SET attempts = ?, next_attempt_at = ? WHERE id = ?",
            (pending.attempts, pending.next_attempt_at, pending.row_id),
        )

    def done(self, pending: Pending) -> None:
        self._db.execute("DELETE FROM pending WHERE id = ?", (pending.row_id,))

    def drop_pending(self, subscription: str) -> int:
        """Forget every pending delivery of a deleted subscription (Azure drops them too)."""
        return self._db.execute("DELETE FROM pending WHERE subscription = ?", (subscription,)).rowcount

    def save_subscription(self, spec: EventSubscription) -> None:
        self._record(spec.name, json.dumps(asdict(spec)))

    def delete_subscription(self, name: str) -> None:
        self._record(name, None)

    def _record(self, name: str, spec: str | None) -> None:
        self._db.execute(
            "INSERT INTO subscriptions (name, spec, changed_seq)"
            " VALUES (?, ?, (SELECT COALESCE(MAX(changed_seq), 0) + 1 FROM subscriptions))"
            " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, changed_seq = excluded.changed_seq",
            (name, spec),
        )

    def subscription_changes(self) -> list[tuple[str, EventSubscription | None]]:
        """The admin changes, oldest first: (name, the subscription, or None once deleted)."""
        changes: list[tuple[str, EventSubscription | None]] = []
        for row in self._db.execute("SELECT name, spec FROM subscriptions ORDER BY changed_seq"):
            if row["spec"] is None:
                changes.append((row["name"], None))
                continue
            doc = json.loads(row["spec"])
            doc["included_event_types"] = tuple(doc["included_event_types"])
            changes.append((row["name"], EventSubscription(**doc)))
        return changes

    def pending(self) -> list[Pending]:
        return [
            Pending(
                row_id=row["id"],
                subscription=row["subscription"],
                event=json.loads(row["event"]),
                attempts=row["attempts"],
                next_attempt_at=row["next_attempt_at"],
                published_at=row["published_at"],
                publish_time=row["publish_time"],
                duplicate=bool(row["duplicate"]),
            )
            for row in self._db.execute("SELECT * FROM pending ORDER BY id")
        ]
