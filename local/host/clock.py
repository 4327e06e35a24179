"""The host clock: the time orchestrations and durable timers see.

host time = host epoch + (wall time elapsed since start) x time scale + jumps

Orchestrations read it through the OrchestratorStarted timestamps the engine writes, and durable
timers fire when it passes their fireAt, so a test can make a 72-hour approval timeout pass in
seconds (a jump, or a large scale) without touching the app's code. Activities and triggers keep
seeing the real wall clock, as they would in Azure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime


class HostClock:
    """A monotonic clock that can run faster than the wall clock and jump forward, never back."""

    def __init__(self, *, time_scale: float = 1.0, start: datetime | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time scale must be positive")
        self._scale = time_scale
        self._lock = threading.Lock()
        self._anchor_wall = time.time()
        self._anchor_host = (start or datetime.now(UTC)).timestamp()
        self._listeners: list[Callable[[], None]] = []

    @property
    def time_scale(self) -> float:
        return self._scale

    def now_epoch(self) -> float:
        with self._lock:
            return self._anchor_host + (time.time() - self._anchor_wall) * self._scale

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_epoch(), UTC)

    def offset_seconds(self) -> float:
        """How far the host clock is ahead of the wall clock right now."""
        return self.now_epoch() - time.time()

    def wall_seconds_until(self, host_epoch: float) -> float:
        """Real seconds to sleep until the host clock reaches ``host_epoch`` (0 if it already has)."""
        return max(0.0, (host_epoch - self.now_epoch()) / self._scale)

    def advance(self, seconds: float) -> datetime:
        """Jump forward; raises ValueError for a negative jump (orchestration time never goes back)."""
        if seconds < 0:
            raise ValueError("the host clock only moves forward")
        with self._lock:
            self._anchor_host += seconds
        for listener in list(self._listeners):
            listener()
        return self.now()

    def not_before(self, host_epoch: float) -> None:
        """Catch up to a time already seen (a restart must not make orchestration time go back)."""
        gap = host_epoch - self.now_epoch()
        if gap > 0:
            self.advance(gap)

    def on_jump(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every jump (timer loops re-compute their sleep)."""
        self._listeners.append(listener)


def to_iso(moment: datetime) -> str:
    """The timestamp format of history events (the SDK parses it with dateutil; 'Z' makes it aware).

    isoformat rather than strftime: the same text (four-digit years included, which glibc's
    strftime does not pad) in about half the time, and the engine writes several per episode."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def to_status_iso(moment: datetime) -> str:
    """The status API's format: .NET ``ToString("s") + "Z"`` (seconds, no fraction)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def from_epoch(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def parse_iso(text: str) -> datetime:
    """Parse the ISO timestamps clients send (with 'Z', offsets, or naive meaning UTC).

    Raises ValueError when the text is not a timestamp.
    """
    cleaned = text.strip()
    if cleaned.endswith("Z") or cleaned.endswith("z"):
        cleaned = cleaned[:-1] + "+00:00"
    # Python 3.11 accepts up to 6 fractional digits; .NET writes 7.
    if "." in cleaned:
        head, _, tail = cleaned.partition(".")
        digits = ""
        rest = ""
        for index, char in enumerate(tail):
            if not char.isdigit():
                rest = tail[index:]
                break
            digits += char
        cleaned = f"{head}.{digits[:6]}{rest}" if digits else head + rest
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


async def wait_for_event(event: asyncio.Event, timeout: float) -> None:
    """Sleep until ``event`` is set or ``timeout`` seconds pass.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives while the
    event is being set, which left shutdown waiting forever.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
