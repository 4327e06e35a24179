"""The task hub's state in one SQLite database (WAL mode): instances, history, inbox, work items, timers.

Every change the engine makes for one step (an episode, an activity result, a fired timer, a
client operation) happens inside one ``transaction()``, so a SIGKILL leaves either all of it or
none of it. WAL with synchronous=NORMAL loses nothing when the *process* dies (only an OS crash
could lose the last commits), which is the failure the host is tested against.

All methods run on the event loop's thread; nothing else touches the connection. That makes the
store the one writer of every history, so it keeps the histories it last read or wrote in memory
(write-through, bounded): an episode reads its instance's history from memory instead of the
table. A rolled-back transaction forgets the copies it changed, so the next read goes to the table.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    instance_id   TEXT PRIMARY KEY,
    execution_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    input         TEXT,
    output        TEXT,
    custom_status TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    parent        TEXT,
    engine        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances (created_at, instance_id);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS episodes (
    instance_id TEXT NOT NULL,
    history_len INTEGER NOT NULL,
    engine      TEXT NOT NULL,
    PRIMARY KEY (instance_id, history_len)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    execution_id TEXT,
    event        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox (instance_id, id);
CREATE TABLE IF NOT EXISTS activities (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    input        TEXT
);
CREATE INDEX IF NOT EXISTS activities_by_instance ON activities (instance_id);
CREATE TABLE IF NOT EXISTS timers (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    timer_id     INTEGER NOT NULL,
    fire_at      REAL NOT NULL,
    fire_at_text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_by_fire_at ON timers (fire_at);
CREATE INDEX IF NOT EXISTS timers_by_instance ON timers (instance_id);
"""

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
# Histories kept in memory (least recently used dropped first); a miss only costs a table read.
HISTORY_CACHE_INSTANCES = 1024


@dataclass
class Instance:
    """One orchestration instance's row (its current execution)."""

    instance_id: str
    execution_id: str
    name: str
    version: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_at: float
    updated_at: float
    parent: dict[str, Any] | None
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class InboxItem:
    id: int
    instance_id: str
    execution_id: str | None
    event: dict[str, Any]


@dataclass(frozen=True)
class ActivityItem:
    id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None


@dataclass(frozen=True)
class TimerItem:
    id: int
    instance_id: str
    execution_id: str
    timer_id: int
    fire_at: float
    fire_at_text: str


@dataclass(frozen=True)
class InstanceQuery:
    """Filters of the list and purge APIs (all optional)."""

    created_from: float | None = None
    created_to: float | None = None
    statuses: frozenset[str] | None = None
    id_prefix: str | None = None


_INSTANCE_COLUMNS = (
    "instance_id, execution_id, name, version, status, input, output, custom_status, "
    "created_at, updated_at, parent, engine"
)


# json.dumps with separators builds a new encoder per call; this one is built once (same output).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_event(event: dict[str, Any]) -> str:
    """A history or inbox event as stored: compact JSON."""
    return _COMPACT_JSON.encode(event)


def encode_engine(engine: dict[str, Any]) -> str:
    """The engine state as stored with the instance and in each episode snapshot."""
    return _COMPACT_JSON.encode(engine)


def _instance_from_row(row: tuple[Any, ...]) -> Instance:
    return Instance(
        instance_id=row[0],
        execution_id=row[1],
        name=row[2],
        version=row[3],
        status=row[4],
        input=row[5],
        output=row[6],
        custom_status=row[7],
        created_at=row[8],
        updated_at=row[9],
        parent=json.loads(row[10]) if row[10] else None,
        engine=json.loads(row[11]),
    )


class Store:
    """Typed access to the task hub tables; callers group calls with ``transaction()``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in transaction()).
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=OFF")
        self._db.executescript(SCHEMA)
        self._depth = 0
        # instance id -> every stored history event text, in order (see the module docstring).
        self._histories: OrderedDict[str, list[str]] = OrderedDict()
        # Instances whose cached history the open transaction changed: forgotten if it rolls back.
        self._histories_changed: set[str] = set()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; nested calls join the outer transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._forget_changed_histories()
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._forget_changed_histories()
            raise
        self._histories_changed.clear()

    def _forget_changed_histories(self) -> None:
        for instance_id in self._histories_changed:
            self._histories.pop(instance_id, None)
        self._histories_changed.clear()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- instances --------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> Instance | None:
        row = self._db.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?",  # noqa: S608 - constant columns
            (instance_id,),
        ).fetchone()
        return None if row is None else _instance_from_row(row)

    def instance_version(self, instance_id: str) -> tuple[str, str, float] | None:
        """(execution id, status, updated_at): what changes whenever any step writes the instance."""
        row = self._db.execute(
            "SELECT execution_id, status, updated_at FROM instances WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def update_instance(self, instance: Instance, *, engine_text: str | None = None) -> None:
        """Write back an existing row's changing columns (cheaper than put_instance's replace, which
        also rewrites the creation-time index); ``engine_text`` is ``instance.engine`` already encoded."""
        self._db.execute(
            "UPDATE instances SET execution_id = ?, status = ?, input = ?, output = ?, custom_status = ?, "
            "updated_at = ?, parent = ?, engine = ? WHERE instance_id = ?",
            (
                instance.execution_id,
                instance.status,
                instance.input,
                instance.output,
                instance.custom_status,
                instance.updated_at,
                json.dumps(instance.parent) if instance.parent else None,
                engine_text if engine_text is not None else encode_engine(instance.engine),
                instance.instance_id,
            ),
        )

    def put_instance(self, instance: Instance) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            (
                instance.instance_id,
                instance.execution_id,
                instance.name,
                instance.version,
                instance.status,
                instance.input,
                instance.output,
                instance.custom_status,
                instance.created_at,
                instance.updated_at,
                json.dumps(instance.parent) if instance.parent else None,
                encode_engine(instance.engine),
            ),
        )

    def delete_instance(self, instance_id: str) -> None:
        """Remove every trace of an instance (purge, or replacing it with a new one of the same id)."""
        for table in ("instances", "history", "episodes", "inbox", "activities", "timers"):
            self._db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))  # noqa: S608
        self._cache_history(instance_id, [])

    def query_instances(
        self, query: InstanceQuery, *, limit: int | None = None, after: tuple[float, str] | None = None
    ) -> list[Instance]:
        """Instances matching ``query`` ordered by creation time; ``after`` is the last (created_at, id) seen."""
        clauses: list[str] = []
        params: list[Any] = []
        if query.created_from is not None:
            clauses.append("created_at >= ?")
            params.append(query.created_from)
        if query.created_to is not None:
            clauses.append("created_at <= ?")
            params.append(query.created_to)
        if query.statuses:
            clauses.append(f"status IN ({','.join('?' * len(query.statuses))})")
            params.extend(sorted(query.statuses))
        if query.id_prefix:
            # substr comparison instead of LIKE: instance ids may contain % and _.
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(query.id_prefix), query.id_prefix])
        if after is not None:
            clauses.append("(created_at > ? OR (created_at = ? AND instance_id > ?))")
            params.extend([after[0], after[0], after[1]])
        # Only constant column names and placeholders are formatted in; every value is a parameter.
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM instances"  # noqa: S608
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at, instance_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_instance_from_row(row) for row in self._db.execute(sql, params)]

    def max_updated_at(self) -> float | None:
        row = self._db.execute("SELECT max(updated_at) FROM instances").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- history ----------------------------------------------------------------------------
    def history_texts(self, instance_id: str) -> list[str]:
        """Every stored event of the instance's history as JSON text, in order (a copy)."""
        cached = self._histories.get(instance_id)
        if cached is not None:
            self._histories.move_to_end(instance_id)
            return list(cached)
        rows = self._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
        )
        texts = [row[0] for row in rows]
        self._cache_history(instance_id, list(texts))
        return texts

    def history_length(self, instance_id: str) -> int:
        cached = self._histories.get(instance_id)
        if cached is not None:
            return len(cached)
        row = self._db.execute(
            "SELECT count(*) FROM history WHERE instance_id = ?", (instance_id,)
        ).fetchone()
        return int(row[0])

    def append_history(self, instance_id: str, start_seq: int, events: Iterable[dict[str, Any]]) -> int:
        """Append events after ``start_seq`` existing ones; returns the new length."""
        return self.append_history_texts(instance_id, start_seq, [encode_event(event) for event in events])

    def append_history_texts(self, instance_id: str, start_seq: int, texts: list[str]) -> int:
        """``append_history`` for events already encoded with ``encode_event``."""
        self._db.executemany(
            "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
            [(instance_id, start_seq + offset, text) for offset, text in enumerate(texts)],
        )
        cached = self._histories.get(instance_id)
        if cached is not None and len(cached) == start_seq:
            cached.extend(texts)
            self._note_history_change(instance_id)
        else:
            self._forget_history(instance_id)
        return start_seq + len(texts)

    def truncate_history(self, instance_id: str, length: int) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ? AND seq >= ?", (instance_id, length))
        self._db.execute(
            "DELETE FROM episodes WHERE instance_id = ? AND history_len > ?", (instance_id, length)
        )
        cached = self._histories.get(instance_id)
        if cached is not None:
            del cached[length:]
            self._note_history_change(instance_id)

    def clear_history(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self._db.execute("DELETE FROM episodes WHERE instance_id = ?", (instance_id,))
        self._cache_history(instance_id, [])

    def _cache_history(self, instance_id: str, texts: list[str]) -> None:
        self._histories[instance_id] = texts
        self._histories.move_to_end(instance_id)
        self._note_history_change(instance_id)
        while len(self._histories) > HISTORY_CACHE_INSTANCES:
            self._histories.popitem(last=False)

    def _forget_history(self, instance_id: str) -> None:
        self._histories.pop(instance_id, None)

    def _note_history_change(self, instance_id: str) -> None:
        if self._depth:
            self._histories_changed.add(instance_id)

    def save_episode(self, instance_id: str, history_len: int, engine_text: str) -> None:
        """Snapshot the engine state (``encode_engine``'s text) after an episode (rewind reads it)."""
        self._db.execute(
            "INSERT OR REPLACE INTO episodes (instance_id, history_len, engine) VALUES (?, ?, ?)",
            (instance_id, history_len, engine_text),
        )

    def episode_before(self, instance_id: str, history_len: int) -> tuple[int, dict[str, Any]] | None:
        """The last episode that ended at or before ``history_len`` events (for rewind)."""
        row = self._db.execute(
            "SELECT history_len, engine FROM episodes WHERE instance_id = ? AND history_len <= ? "
            "ORDER BY history_len DESC LIMIT 1",
            (instance_id, history_len),
        ).fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    # -- inbox ------------------------------------------------------------------------------
    def add_inbox(self, instance_id: str, execution_id: str | None, event: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO inbox (instance_id, execution_id, event) VALUES (?, ?, ?)",
            (instance_id, execution_id, encode_event(event)),
        )

    def inbox_for(self, instance_id: str) -> list[InboxItem]:
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, event FROM inbox WHERE instance_id = ? ORDER BY id",
            (instance_id,),
        )
        return [InboxItem(row[0], row[1], row[2], json.loads(row[3])) for row in rows]

    def delete_inbox(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM inbox WHERE id = ?", [(item,) for item in ids])

    def clear_inbox(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM inbox WHERE instance_id = ?", (instance_id,))

    def instances_with_inbox(self) -> list[str]:
        return [
            row[0] for row in self._db.execute("SELECT DISTINCT instance_id FROM inbox ORDER BY instance_id")
        ]

    # -- activity work items ------------------------------------------------------------------
    def add_activity(
        self, instance_id: str, execution_id: str, task_id: int, name: str, input_text: str | None
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO activities (instance_id, execution_id, task_id, name, input) VALUES (?, ?, ?, ?, ?)",
            (instance_id, execution_id, task_id, name, input_text),
        )
        return int(cursor.lastrowid or 0)

    def get_activity(self, item_id: int) -> ActivityItem | None:
        row = self._db.execute(
            "SELECT id, instance_id, execution_id, task_id, name, input FROM activities WHERE id = ?",
            (item_id,),
        ).fetchone()
        return None if row is None else ActivityItem(*row)

    def delete_activity(self, item_id: int) -> bool:
        return self._db.execute("DELETE FROM activities WHERE id = ?", (item_id,)).rowcount > 0

    def pending_activities(self) -> list[ActivityItem]:
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, task_id, name, input FROM activities ORDER BY id"
        )
        return [ActivityItem(*row) for row in rows]

    def clear_activities(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM activities WHERE instance_id = ?", (instance_id,))

    # -- durable timers ---------------------------------------------------------------------
    def add_timer(
        self, instance_id: str, execution_id: str, timer_id: int, fire_at: float, fire_at_text: str
    ) -> None:
        self._db.execute(
            "INSERT INTO timers (instance_id, execution_id, timer_id, fire_at, fire_at_text) VALUES (?, ?, ?, ?, ?)",
            (instance_id, execution_id, timer_id, fire_at, fire_at_text),
        )

    def next_timer_at(self) -> float | None:
        row = self._db.execute("SELECT min(fire_at) FROM timers").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def due_timers(self, now: float) -> list[TimerItem]:
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, timer_id, fire_at, fire_at_text FROM timers "
            "WHERE fire_at <= ? ORDER BY fire_at, id",
            (now,),
        )
        return [TimerItem(*row) for row in rows]

    def delete_timer(self, item_id: int) -> None:
        self._db.execute("DELETE FROM timers WHERE id = ?", (item_id,))

    def cancel_timer(self, instance_id: str, execution_id: str, timer_id: int) -> None:
        self._db.execute(
            "DELETE FROM timers WHERE instance_id = ? AND execution_id = ? AND timer_id = ?",
            (instance_id, execution_id, timer_id),
        )

    def clear_timers(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM timers WHERE instance_id = ?", (instance_id,))

    def count(self, table: str) -> int:
        if table not in {"instances", "history", "inbox", "activities", "timers", "episodes"}:
            raise ValueError(f"unknown table {table}")
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (used at shutdown and by the size benchmark)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
