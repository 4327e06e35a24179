"""What makes episodes cheaper must not change what the SDK or a user sees.

In-process tests: the worker processes' memo of the SDK's timestamp parsing returns exactly what
dateutil returns; the store's in-memory copy of each history always equals the table; writes that
share a commit keep their own outcome; episodes of an instance stay with one worker process
without leaving another idle.
"""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dateutil.parser import ParserError
from dateutil.parser import parse as dateutil_parse

from local.host.orchestrator_call import OrchestratorAnswer
from local.host.replay_workers import STEAL_AFTER_SECONDS, ReplayWorkers, _Worker
from local.host.shared_commits import SharedCommitRolledBack, SharedCommits
from local.host.store import HISTORY_CACHE_INSTANCES, Store, encode_event
from local.host.timestamp_memo import HISTORY_EVENT_MODULE, memoize_history_timestamps


def test_the_timestamp_memo_returns_what_dateutil_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(HISTORY_EVENT_MODULE)
    # Restored after the test: the memo belongs in worker processes only.
    monkeypatch.setattr(module, "dt_parse", module.dt_parse)
    memoize_history_timestamps()
    memoize_history_timestamps()  # twice: still one layer
    parse = module.dt_parse
    assert parse.memoised_from is dateutil_parse
    samples = [
        "2026-12-03T11:38:43.123456Z",
        "2026-12-03T11:38:43Z",
        "2026-12-03T11:38:43.1234567Z",
        "2026-12-03T12:38:43+01:00",
        "2026-12-03T11:38:43",
    ]
    for text in samples:
        first = parse(text)
        assert first == dateutil_parse(text)
        assert first.tzinfo == dateutil_parse(text).tzinfo
        assert first.utcoffset() == dateutil_parse(text).utcoffset()
        # The second call is served from the memo (datetimes are immutable: sharing one is safe).
        assert parse(text) is first
    assert parse("2026-12-03T11:38:43Z").astimezone(UTC) == datetime(2026, 12, 3, 11, 38, 43, tzinfo=UTC)
    # Other arguments go straight to dateutil; bad text raises every time, as dateutil does.
    assert parse("03/12/2026", dayfirst=True) == dateutil_parse("03/12/2026", dayfirst=True)
    for _ in range(2):
        with pytest.raises(ParserError):
            parse("not a timestamp")
    with pytest.raises(TypeError):
        parse(None)


def test_the_sdk_replays_through_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(HISTORY_EVENT_MODULE)
    monkeypatch.setattr(module, "dt_parse", module.dt_parse)
    memoize_history_timestamps()
    event = module.HistoryEvent(EventType=12, EventId=-1, IsPlayed=True, Timestamp="2026-12-03T11:38:43.5Z")
    again = module.HistoryEvent(EventType=12, EventId=-1, IsPlayed=False, Timestamp="2026-12-03T11:38:43.5Z")
    assert event.timestamp == dateutil_parse("2026-12-03T11:38:43.5Z")
    assert again.timestamp is event.timestamp


def _table_history(store: Store, instance_id: str) -> list[str]:
    return [
        row[0]
        for row in store._db.execute(
            "SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,)
        )
    ]


def _assert_cache_matches_table(store: Store, *instance_ids: str) -> None:
    for instance_id in instance_ids:
        assert store.history_texts(instance_id) == _table_history(store, instance_id)
        assert store.history_length(instance_id) == len(_table_history(store, instance_id))


def test_the_history_kept_in_memory_always_equals_the_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "durable.sqlite")
    first = {"EventType": 12, "EventId": -1, "Timestamp": "2026-12-03T11:38:43.5Z"}
    second = {"EventType": 13, "EventId": -1, "Timestamp": "2026-12-03T11:38:44.5Z"}
    with store.transaction():
        assert store.append_history("a", 0, [first, second]) == 2
    assert store.history_texts("a") == [encode_event(first), encode_event(second)]
    _assert_cache_matches_table(store, "a")
    # The copy handed out is the caller's: changing it changes nothing stored.
    store.history_texts("a").append("junk")
    _assert_cache_matches_table(store, "a")

    # A transaction that fails leaves neither the rows nor the in-memory copy changed.
    def fail_halfway() -> None:
        with store.transaction():
            store.append_history("a", 2, [first])
            store.truncate_history("a", 1)
            store.clear_history("b")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_halfway()
    _assert_cache_matches_table(store, "a", "b")
    assert store.history_length("a") == 2

    with store.transaction():
        store.append_history_texts("a", 2, [encode_event(first)])
        store.truncate_history("a", 1)
    _assert_cache_matches_table(store, "a")
    assert store.history_length("a") == 1

    # An append that does not continue the copy (a caller's wrong start) drops it; reads see the table.
    with store.transaction():
        store.append_history("a", 5, [second])
    _assert_cache_matches_table(store, "a")

    with store.transaction():
        store.delete_instance("a")
    _assert_cache_matches_table(store, "a")
    assert store.history_length("a") == 0
    store.close()


def test_histories_beyond_the_memory_bound_are_read_from_the_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "durable.sqlite")
    count = HISTORY_CACHE_INSTANCES + 5
    with store.transaction():
        for number in range(count):
            event = {"EventType": 12, "EventId": number, "Timestamp": "t"}
            store.append_history(f"i{number}", 0, [event])
    for number in range(count):
        store.history_texts(f"i{number}")  # a read keeps the history in memory
    assert len(store._histories) == HISTORY_CACHE_INSTANCES
    _assert_cache_matches_table(store, "i0", f"i{count - 1}")
    reopened = Store(tmp_path / "durable.sqlite")
    _assert_cache_matches_table(reopened, "i0", "i3")
    store.close()
    reopened.close()


class _FailingWrite(Exception):
    pass


def test_writes_of_one_loop_iteration_share_a_commit_and_a_failure_spares_the_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "durable.sqlite")
    event = {"EventType": 12, "EventId": -1, "Timestamp": "2026-12-03T11:38:43.5Z"}

    def append(instance_id: str) -> int:
        return store.append_history(instance_id, store.history_length(instance_id), [event])

    def fail() -> None:
        store.append_history("c", 0, [event])
        raise _FailingWrite

    async def scenario() -> None:
        commits = SharedCommits(store)
        # Together, committed once the loop turns: each write gets its own result.
        assert await asyncio.gather(
            commits.write(lambda: append("a")), commits.write(lambda: append("b"))
        ) == [
            1,
            1,
        ]
        # One write fails: it gets its error, a re-runnable write is committed alone, the others
        # are told nothing of theirs was written.
        results = await asyncio.gather(
            commits.write(lambda: append("a"), retry_alone=True),
            commits.write(fail),
            commits.write(lambda: append("b")),
            return_exceptions=True,
        )
        assert results[0] == 2
        assert isinstance(results[1], _FailingWrite)
        assert isinstance(results[2], SharedCommitRolledBack)
        # Stopping drops what is queued.
        queued = commits.write(lambda: append("a"))
        commits.close()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert commits.write(lambda: append("a")).cancelled()

    asyncio.run(scenario())
    _assert_cache_matches_table(store, "a", "b", "c")
    assert (store.history_length("a"), store.history_length("b"), store.history_length("c")) == (2, 1, 0)
    store.close()


class _FakeConnection:
    def __init__(self, sent: list[tuple[str, str]], name: str) -> None:
        self.sent, self.name = sent, name

    def send(self, message: tuple[str, str, str]) -> None:
        kind, _, context_json = message  # an orchestrator call: (kind, name, context JSON)
        assert kind == "orchestrator"
        self.sent.append((self.name, context_json))


def test_episodes_of_an_instance_go_to_the_same_worker_unless_another_idles(tmp_path: Path) -> None:
    sent: list[tuple[str, str]] = []
    pool = ReplayWorkers(tmp_path, 2)
    first, second = (_Worker(None, _FakeConnection(sent, name)) for name in ("first", "second"))  # type: ignore[arg-type]
    pool._workers = [first, second]
    pool._idle = [first, second]
    # Two instance ids, one mapped to each worker.
    ids = [f"instance-{n}" for n in range(50)]
    to_first = next(i for i in ids if pool._preferred(i) is first)
    to_second = next(i for i in ids if pool._preferred(i) is second)

    def answer(worker: _Worker) -> None:
        call, worker.call = worker.call, None
        assert call is not None
        call.answer.set_result(OrchestratorAnswer(state={}, error=None))
        pool._release(worker)

    async def scenario() -> None:
        calls = [
            asyncio.ensure_future(pool.replay("f", f"{to_first}#{n}", affinity=to_first)) for n in range(3)
        ]
        await asyncio.sleep(0)
        # The first call took its worker; the others wait for it although the second worker idles...
        assert sent == [("first", f"{to_first}#0")]
        answer(first)
        assert sent[-1] == ("first", f"{to_first}#1")
        # ...until the idle one takes the oldest waiting call after STEAL_AFTER_SECONDS.
        await asyncio.sleep(STEAL_AFTER_SECONDS * 5)
        assert sent[-1] == ("second", f"{to_first}#2")
        answer(first)
        answer(second)
        other = asyncio.ensure_future(pool.replay("f", f"{to_second}#0", affinity=to_second))
        await asyncio.sleep(0)
        assert sent[-1] == ("second", f"{to_second}#0")
        answer(second)
        assert all(result.error is None for result in await asyncio.gather(*calls, other))

    asyncio.run(scenario())
