"""What makes episodes cheaper must not change what the SDK or a user sees.

In-process tests: the worker processes' memo of the SDK's timestamp parsing returns exactly what
dateutil returns; the store's in-memory copy of each history always equals the table.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import pytest
from dateutil.parser import ParserError
from dateutil.parser import parse as dateutil_parse

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
