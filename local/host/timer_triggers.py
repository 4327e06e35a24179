"""Timer triggers on their NCRONTAB schedule, and running one on demand (``POST /admin/functions/<fn>``).

Schedules follow the host clock, so ``--time-scale`` and clock jumps speed up a sweep as they speed
up durable timers. As in the real host, a schedule missed by a jump (or downtime) runs once with
``past_due`` set, not once per missed occurrence, and runs of one function never overlap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.functions import meta
from azure.functions.timer import TimerRequestConverter
from croniter import croniter

from local.host.app_config import ConfigError, resolve_placeholders
from local.host.clock import HostClock, to_iso, wait_for_event
from local.host.function_index import FunctionEntry
from local.host.invoker import Invoker

logger = logging.getLogger(__name__)

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
# An occurrence run this much later than scheduled is reported as past due.
PAST_DUE_AFTER = timedelta(seconds=5)


@dataclass(frozen=True)
class TimerSchedule:
    """An NCRONTAB expression (6 fields, seconds first; 5 fields accepted) or a TimeSpan interval."""

    expression: str

    def __post_init__(self) -> None:
        if _TIMESPAN.match(self.expression):
            if self._interval() <= timedelta(0):
                raise ConfigError(f"timer schedule '{self.expression}' must be a positive interval")
            return
        fields = self.expression.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(
            self.expression, second_at_beginning=len(fields) == 6
        ):
            raise ConfigError(
                f"timer schedule '{self.expression}' is not a valid NCRONTAB expression "
                "('{second} {minute} {hour} {day} {month} {day-of-week}') or TimeSpan ('hh:mm:ss')"
            )

    def _interval(self) -> timedelta:
        match = _TIMESPAN.match(self.expression)
        assert match is not None
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)

    def next_after(self, moment: datetime) -> datetime:
        if _TIMESPAN.match(self.expression):
            return moment + self._interval()
        six_fields = len(self.expression.split()) == 6
        following: datetime = croniter(self.expression, moment, second_at_beginning=six_fields).get_next(
            datetime
        )
        return following


class TimerTriggers:
    """Schedules every timerTrigger function; ``start()`` after the server listens, ``stop()`` on shutdown."""

    def __init__(
        self,
        entries: dict[str, FunctionEntry],
        *,
        invoker: Invoker,
        clock: HostClock,
        environ: MutableMapping[str, str],
    ) -> None:
        self.entries = entries
        self.invoker = invoker
        self.clock = clock
        self.schedules: dict[str, TimerSchedule] = {}
        for name, entry in entries.items():
            raw = str(entry.trigger.get("schedule") or "")
            expression = resolve_placeholders(raw, environ, what=f"timer function '{name}' schedule")
            self.schedules[name] = TimerSchedule(expression)
        self._locks = {name: asyncio.Lock() for name in entries}
        self._tasks: list[asyncio.Task[None]] = []
        self._jumped = asyncio.Event()
        self._last: dict[str, datetime] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.clock.on_jump(self._on_jump)
        for name, entry in self.entries.items():
            if entry.trigger.get("runOnStartup"):
                await self.run(name, past_due=False)
            self._tasks.append(asyncio.create_task(self._schedule_loop(name), name=f"timer-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_jump(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        # Every loop waits on the event it saw last; replacing it wakes them all exactly once.
        previous, self._jumped = self._jumped, asyncio.Event()
        previous.set()

    async def _schedule_loop(self, name: str) -> None:
        schedule = self.schedules[name]
        due = schedule.next_after(self.clock.now())
        while True:
            wait = self.clock.wall_seconds_until(due.timestamp())
            if wait > 0:
                jumped = self._jumped
                await wait_for_event(jumped, min(wait, 30.0))
                continue
            now = self.clock.now()
            await self.run(name, past_due=now - due > PAST_DUE_AFTER, scheduled=due)
            due = schedule.next_after(self.clock.now())

    async def run(self, name: str, *, past_due: bool, scheduled: datetime | None = None) -> bool:
        """Invoke the timer function once; returns False when it raised (already logged)."""
        entry = self.entries[name]
        async with self._locks[name]:
            now = self.clock.now()
            status = {
                "Last": to_iso(self._last.get(name, now)),
                "Next": to_iso(self.schedules[name].next_after(now)),
                "LastUpdated": to_iso(now),
            }
            info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}
            request = TimerRequestConverter.decode(
                meta.Datum(type="json", value=json.dumps(info)), trigger_metadata={}
            )
            started = time.perf_counter()
            try:
                await self.invoker.call(entry, request)
            except Exception as exc:
                logger.info(
                    "timer %s raised %s (%.1f ms)",
                    name,
                    type(exc).__name__,
                    (time.perf_counter() - started) * 1000,
                )
                return False
            finally:
                self._last[name] = scheduled or now
            logger.info(
                "timer %s ran%s (%.1f ms)",
                name,
                " past due" if past_due else "",
                (time.perf_counter() - started) * 1000,
            )
            return True
