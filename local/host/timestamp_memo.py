"""A memo of the Durable Functions SDK's history timestamp parsing, for replay worker processes only.

Every episode hands the SDK the whole history again (as the real host does), and the SDK's
``HistoryEvent.__init__`` parses each event's ``Timestamp`` with ``dateutil.parser.parse``: episode
k re-parses the k-1 earlier episodes' timestamps, O(n^2) parses per instance, which was about 70%
of a worker's CPU. The same strings come back episode after episode, and a parse result is an
immutable aware ``datetime``, so handing out the one parsed before is indistinguishable from
parsing again.

What is wrapped: only the name ``dt_parse`` that the SDK's module
``azure.durable_functions.models.history.HistoryEvent`` imported from dateutil, and only in the
worker processes of ``replay_workers.py`` (the host process and the app under Azure never see it).
The SDK's replay logic is untouched: it still builds every ``HistoryEvent`` of every episode and
replays the orchestrator from the start. Anything but a single string argument goes straight to
dateutil, and a string dateutil rejects raises as before (exceptions are not memoised).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

HISTORY_EVENT_MODULE = "azure.durable_functions.models.history.HistoryEvent"
# Distinct timestamps kept: an instance has about two per episode; a few MB at most.
MEMO_SIZE = 16384


def memoize_history_timestamps() -> None:
    """Replace the SDK's ``dt_parse`` in its HistoryEvent module with a memoised one (idempotent)."""
    module = importlib.import_module(HISTORY_EVENT_MODULE)
    original: Callable[..., Any] = getattr(module, "dt_parse")  # noqa: B009 - not typed by the SDK
    if getattr(original, "memoised_from", None) is not None:
        return
    cached = functools.lru_cache(maxsize=MEMO_SIZE)(original)

    def parse(timestr: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or type(timestr) is not str:
            return original(timestr, *args, **kwargs)
        return cached(timestr)

    parse.memoised_from = original  # type: ignore[attr-defined]
    setattr(module, "dt_parse", parse)  # noqa: B010 - not typed by the SDK
