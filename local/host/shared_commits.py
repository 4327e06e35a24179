"""Writes that become ready in the same event-loop iteration share one SQLite transaction.

A commit costs far more than the statements of an episode or an activity result (the WAL frames
and their checksums), and with many instances in flight several episodes and activity results are
ready at once. Each write still commits before anything acts on it: its future resolves only after
the shared COMMIT, and nothing a write does is visible to the engine before that. A write is one
synchronous function of the store; it runs inside the shared transaction (its own
``store.transaction()`` joins it).

If a write raises, the shared transaction rolls back: the write that raised gets its exception;
the others get ``SharedCommitRolledBack`` (nothing of theirs was written, they must be redone from
the store) unless they were queued as ``retry_alone``, in which case each runs again in its own
transaction (for writes whose inputs are not consumed by running them, such as an activity result).
If the COMMIT itself fails, every write gets that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.host.store import Store


class SharedCommitRolledBack(Exception):
    """Another write of the same shared transaction failed; nothing of this one was written."""


@dataclass
class _Write:
    apply: Callable[[], Any]
    done: asyncio.Future[Any]
    retry_alone: bool


class SharedCommits:
    """Queue store writes; they are applied and committed together at the next loop iteration."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queued: list[_Write] = []
        self._closed = False

    def write(self, apply: Callable[[], Any], *, retry_alone: bool = False) -> asyncio.Future[Any]:
        """Run ``apply`` in the next shared transaction; the future holds its result once committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            done.cancel()
            return done
        if not self._queued:
            loop.call_soon(self._commit)
        self._queued.append(_Write(apply, done, retry_alone))
        return done

    def close(self) -> None:
        """Write nothing more (the host is stopping): queued writes are dropped, their futures cancelled."""
        self._closed = True
        queued, self._queued = self._queued, []
        for write in queued:
            write.done.cancel()

    def _commit(self) -> None:
        queued, self._queued = self._queued, []
        if self._closed or not queued:
            return
        results: list[Any] = []
        failed_at: int | None = None
        try:
            with self.store.transaction():
                for position, write in enumerate(queued):
                    failed_at = position
                    results.append(write.apply())
                failed_at = None
        except Exception as exc:
            self._after_rollback(queued, failed_at, exc)
            return
        for write, result in zip(queued, results, strict=True):
            if not write.done.done():
                write.done.set_result(result)

    def _after_rollback(self, queued: list[_Write], failed_at: int | None, error: Exception) -> None:
        for position, write in enumerate(queued):
            if write.done.done():
                continue
            if failed_at is None or position == failed_at:
                write.done.set_exception(error)
            elif write.retry_alone:
                try:
                    with self.store.transaction():
                        result = write.apply()
                except Exception as exc:
                    write.done.set_exception(exc)
                else:
                    write.done.set_result(result)
            else:
                write.done.set_exception(SharedCommitRolledBack())
